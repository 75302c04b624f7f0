"""A server's pod (and GPU claim) left behind as a hub that lost track of the server leaves them.

Why: a restart must work when the old pod still exists (a hub crash, a pod the hub stopped
watching); the restart tests of ``test_spawn_leaks_hub.py`` (native backend, per spawner kind)
and ``test_spawner_hub.py`` (every backend) re-create the very pod and claim a real start made.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.rest import ApiException

from .conftest import wait_until


def claim_of(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The ResourceClaim ``name`` (``None`` when it does not exist)."""
    try:
        return dict(cluster.custom.get_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaims", name))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def pod_exists(cluster: Any, namespace: str, name: str) -> bool:
    try:
        cluster.core.read_namespaced_pod(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def leave_behind(cluster: Any, namespace: str, pod: dict[str, Any],
                 claim: dict[str, Any] | None = None) -> str:
    """Re-create ``pod`` (and its ``claim``, owned by the pod and allocated) as a hub would have
    left them, the pod running; the leftover pod's uid."""
    def meta(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: obj["metadata"][k] for k in ("name", "labels", "annotations")
                if obj["metadata"].get(k)}

    if claim is not None:
        cluster.custom.create_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaims",
            {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
             "metadata": meta(claim), "spec": claim["spec"]})
    spec = pod["spec"]
    c0 = spec["containers"][0]
    container = {k: c0[k] for k in ("name", "image", "command", "args", "env", "ports",
                                     "resources") if c0.get(k)}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta(pod),
            "spec": {**{k: spec[k] for k in ("resourceClaims", "affinity", "nodeSelector",
                                             "tolerations", "restartPolicy",
                                             "priorityClassName") if spec.get(k)},
                     "containers": [container]}}
    created = cluster.api.sanitize_for_serialization(
        cluster.core.create_namespaced_pod(namespace, body))
    uid = str(created["metadata"]["uid"])
    if claim is not None:
        cluster.custom.patch_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaims", claim["metadata"]["name"],
            {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                               "name": pod["metadata"]["name"], "uid": uid,
                                               "controller": True,
                                               "blockOwnerDeletion": False}]}})

    def running() -> bool:
        live = cluster.core.read_namespaced_pod(pod["metadata"]["name"], namespace)
        if live.status.phase != "Running":
            return False
        if claim is None:
            return True
        got = claim_of(cluster, namespace, claim["metadata"]["name"])
        return bool(got and (got.get("status") or {}).get("allocation"))

    wait_until(running, 60, "the leftover pod running" + (" with its claim" if claim else ""))
    return uid
