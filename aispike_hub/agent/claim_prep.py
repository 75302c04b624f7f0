"""Preparing claims on this node: CDI specs written, state on disk, safe to repeat.

:class:`ClaimPreparer` joins the pure steps (claim -> GPUs -> environment -> CDI spec) with the
files: the spec in the CDI directory and ``<state_dir>/claims/<uid>.json`` (written after the
spec, removed after it).  A restarted agent answers a repeated prepare from its state without
reading the API and rewrites a CDI spec that went missing; unpreparing an unknown claim succeeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aispike_hub.agent.allocation import PrepareError, allocated_gpus, node_devices, reserved_pods
from aispike_hub.agent.cdi import cdi_spec, cdi_spec_filename, response_devices
from aispike_hub.isolation_env import IsolationSettings, isolation_env

log = logging.getLogger("aispike_hub.agent.dra")
"""The DRA plugin's logger (one name for the whole plugin, as before the split)."""


@dataclass(slots=True)
class PreparedClaim:
    """What a prepare did, kept in ``<state_dir>/claims/<uid>.json`` until unprepare."""

    uid: str
    namespace: str
    name: str
    devices: list[dict[str, Any]]
    """The kubelet's answer (``response_devices``), repeated as-is for a repeated prepare."""
    cdi_spec: dict[str, Any]
    cdi_path: str
    limits_mib: dict[str, int] = field(default_factory=dict)
    """GPU UUID -> MiB of the slice (what enforcement compares use against)."""
    pod_uids: list[str] = field(default_factory=list)


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_prepared(state_dir: str | Path) -> dict[str, PreparedClaim]:
    """All prepared claims recorded under ``state_dir`` (unreadable files are logged, skipped)."""
    out: dict[str, PreparedClaim] = {}
    for p in sorted((Path(state_dir) / "claims").glob("*.json")):
        try:
            pc = PreparedClaim(**json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:
            log.warning("skipping unreadable claim state %s: %s", p, e)
            continue
        out[pc.uid] = pc
    return out


class ClaimSource(Protocol):
    """Where preparation reads claims and this node's slices (the API server in production)."""

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]: ...

    def node_slices(self, node: str) -> list[dict[str, Any]]: ...


class KubernetesClaimSource:
    """:class:`ClaimSource` over an official ``kubernetes`` ``ApiClient`` (raw JSON)."""

    def __init__(self, api_client: Any) -> None:
        from aispike_hub.kube.api import KubeJson

        self.kube = KubeJson(api_client)

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        return self.kube.get("resourceclaims", name, namespace)

    def node_slices(self, node: str) -> list[dict[str, Any]]:
        query = {"fieldSelector": f"spec.nodeName={node}"}
        items, _ = self.kube.list("resourceslices", query=query)
        return items


class ClaimPreparer:
    """Prepares and unprepares claims: CDI specs in ``cdi_dir``, state in ``state_dir``.

    Thread-safe (the gRPC server calls it from several threads); one claim at a time per UID.
    """

    def __init__(
        self,
        node: str,
        source: ClaimSource,
        cdi_dir: str | Path,
        state_dir: str | Path,
        settings: IsolationSettings | None = None,
    ) -> None:
        self.node = node
        self.source = source
        self.cdi_dir = Path(cdi_dir)
        self.state_dir = Path(state_dir)
        self.settings = settings or IsolationSettings()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.prepared = read_prepared(self.state_dir)
        self.restore()

    def _lock(self, uid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(uid, threading.Lock())

    def _state_path(self, uid: str) -> Path:
        return self.state_dir / "claims" / f"{uid}.json"

    def restore(self) -> list[str]:
        """After a restart: rewrite CDI specs that went missing (e.g. a tmpfs /var/run/cdi after a
        reboot) for claims still prepared.  Returns the UIDs whose spec was rewritten."""
        rewritten = []
        for pc in self.prepared.values():
            path = Path(pc.cdi_path)
            try:
                current = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                current = None
            if current != pc.cdi_spec:
                _write_atomic(path, pc.cdi_spec)
                rewritten.append(pc.uid)
        if rewritten:
            log.info("rewrote CDI specs of %d prepared claims", len(rewritten))
        return rewritten

    def prepare(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        """Prepare one claim; the kubelet's ``Device`` entries.  Raises :class:`PrepareError`."""
        with self._lock(uid):
            known = self.prepared.get(uid)
            if known is not None:
                if not Path(known.cdi_path).exists():
                    _write_atomic(Path(known.cdi_path), known.cdi_spec)
                return known.devices
            try:
                claim = self.source.get_claim(namespace, name)
            except Exception as e:
                raise PrepareError(f"cannot read ResourceClaim {namespace}/{name}: {e}") from e
            live_uid = (claim.get("metadata") or {}).get("uid")
            if live_uid != uid:
                raise PrepareError(
                    f"ResourceClaim {namespace}/{name} has UID {live_uid}, not {uid}: it was "
                    f"replaced; the kubelet will retry with the new claim"
                )
            try:
                slices = self.source.node_slices(self.node)
            except Exception as e:
                raise PrepareError(
                    f"cannot read the ResourceSlices of node {self.node}: {e}"
                ) from e
            gpus = allocated_gpus(claim, node_devices(slices, self.node))
            env = isolation_env(gpus, self.settings)
            spec = cdi_spec(uid, f"{namespace}/{name}", env, self.settings)
            path = self.cdi_dir / cdi_spec_filename(uid)
            pc = PreparedClaim(
                uid=uid,
                namespace=namespace,
                name=name,
                devices=response_devices(uid, gpus, self.settings),
                cdi_spec=spec,
                cdi_path=str(path),
                limits_mib={g.uuid: g.limit_mib for g in gpus},
                pod_uids=reserved_pods(claim),
            )
            # The spec first, then the state: a crash in between leaves a spec without state,
            # which the retried prepare simply overwrites.
            _write_atomic(path, spec)
            _write_atomic(self._state_path(uid), asdict(pc))
            self.prepared[uid] = pc
            log.info(
                "prepared claim %s/%s (%s): %s", namespace, name, uid,
                ", ".join(f"{g.device}={g.uuid} {g.limit_mib} MiB" for g in gpus),
            )
            return pc.devices

    def unprepare(self, namespace: str, name: str, uid: str) -> None:
        """Remove a claim's CDI spec and state; an unknown claim is already unprepared."""
        with self._lock(uid):
            pc = self.prepared.pop(uid, None)
            path = Path(pc.cdi_path) if pc else self.cdi_dir / cdi_spec_filename(uid)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self._state_path(uid).unlink()
            if pc is not None:
                log.info("unprepared claim %s/%s (%s)", namespace, name, uid)

    def limits_by_pod(self) -> dict[str, dict[str, int]]:
        """Pod UID -> GPU UUID -> MiB, from the prepared claims (for enforcement)."""
        out: dict[str, dict[str, int]] = {}
        for pc in list(self.prepared.values()):
            for pod in pc.pod_uids:
                out.setdefault(pod, {}).update(pc.limits_mib)
        return out
