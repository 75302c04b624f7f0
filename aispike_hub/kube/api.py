"""A thin JSON layer over the official ``kubernetes`` client: list, watch, create, patch, delete.

Why not the generated API classes: they deserialize every object into model classes, which for
10,000 claims and pods costs seconds of CPU and hundreds of MiB, and a model class of a young API
(``resource.k8s.io/v1``) may drop fields the installed client does not know yet.  The inventory
needs a few fields of each object, so it reads raw JSON and keeps only those.  Authentication,
TLS and the connection pool are the official client's (``ApiClient`` built from a kubeconfig or the
in-cluster config), so nothing about credentials is re-implemented here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSION = "v1"


def path_of(kind: str, namespace: str = "", name: str = "") -> str:
    """REST path of ``kind`` (``pods``, ``nodes``, ``resourceclaims``, ``resourceslices``...)."""
    if kind in ("resourceclaims", "resourceslices", "deviceclasses"):
        base = f"/apis/{RESOURCE_GROUP}/{RESOURCE_VERSION}"
    else:
        base = "/api/v1"
    path = base + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{kind}"
    return path + (f"/{quote(name)}" if name else "")


class KubeJson:
    """Raw JSON requests through an official ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = 30,
        stream: bool = False,
    ) -> Any:
        """One request; JSON answer as ``dict`` (or the raw urllib3 response when ``stream``).

        Raises :class:`kubernetes.client.exceptions.ApiException` for any status >= 400, as the
        generated client does, so callers can test ``e.status``.
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None and v != ""]
        method_, url, headers_, body_, post = self.api_client.param_serialize(
            method,
            path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method_, url, header_params=headers_, body=body_, post_params=post,
            _request_timeout=timeout,
        )
        raw = response.response
        if response.status >= 400:
            data = raw.data
            raw.release_conn()
            raise ApiException(
                status=response.status, reason=response.reason, body=data.decode(errors="replace")
            )
        if stream:
            return raw
        try:
            data = raw.data
        finally:
            raw.release_conn()
        return json.loads(data) if data else {}

    # -- verbs ---------------------------------------------------------------------------------
    def list(
        self, kind: str, *, namespace: str = "", query: Mapping[str, Any] | None = None,
        timeout: float = 120,
    ) -> tuple[list[dict[str, Any]], str]:
        """All objects of ``kind`` (paged by 500), and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            q = {"limit": 500, **(query or {})}
            if cont:
                q["continue"] = cont
            page = self.request("GET", path_of(kind, namespace), query=q, timeout=timeout)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion", ""))

    def watch(
        self,
        kind: str,
        resource_version: str,
        *,
        timeout_seconds: int = 240,
        query: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Watch events ``(type, object)`` from ``resource_version`` until the server ends it.

        ``ERROR`` events are yielded too (a 410 Gone says: list again).  Bookmarks are asked for,
        so a quiet watch still moves its resourceVersion forward.
        """
        q = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            **(query or {}),
        }
        raw = self.request(
            "GET", path_of(kind), query=q, timeout=(10, timeout_seconds + 30), stream=True
        )
        try:
            pending = b""
            for chunk in raw.stream(65536, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        yield str(event.get("type", "")), dict(event.get("object") or {})
            if pending.strip():
                event = json.loads(pending)
                yield str(event.get("type", "")), dict(event.get("object") or {})
        finally:
            raw.release_conn()

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", path_of(kind, namespace, name))
        return result

    def create(self, kind: str, body: Mapping[str, Any], namespace: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", path_of(kind, namespace), body=dict(body))
        return result

    def merge_patch(
        self, kind: str, name: str, patch: Mapping[str, Any], namespace: str = ""
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH", path_of(kind, namespace, name), body=dict(patch),
            content_type="application/merge-patch+json",
        )
        return result

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str = "",
        *,
        uid: str = "",
        resource_version: str = "",
        grace_seconds: int | None = None,
    ) -> None:
        """Delete, optionally only if the object still has ``uid`` / ``resource_version``.

        Preconditions make "delete the stale pin" safe against a racing allocation: if the
        scheduler allocated the claim since we read it, the delete fails with 409 instead.
        """
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if pre:
            body["preconditions"] = pre
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        self.request("DELETE", path_of(kind, namespace, name), body=body)


def error_text(e: ApiException) -> str:
    """The API server's message for ``e`` (its Status ``message``), for logs and reasons."""
    text = e.body or ""
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return str(text or e.reason)


def kube_api_client() -> Any:
    """A ``kubernetes`` client: in-cluster credentials (the pod's service account), else
    ``$KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]
