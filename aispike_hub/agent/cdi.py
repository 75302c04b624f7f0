"""The CDI spec of a prepared claim and the kubelet's answer naming its CDI devices; pure.

One spec file per claim (``aispike.io-gpu_<uid>.json`` in the CDI directory) with one device,
named by the claim's UID, whose ``containerEdits`` carry the isolation environment
(:func:`aispike_hub.isolation_env.isolation_env`) and the kernel hook's read-only mount.  The
container runtime applies the edits to every container that names the device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aispike_hub.agent.allocation import AllocatedGpu, PrepareError
from aispike_hub.contract import CDI_CLAIM_ANNOTATION, CDI_KIND
from aispike_hub.isolation_env import IsolationSettings

CDI_VERSION = "0.6.0"
"""CDI spec version written (env, mounts and spec annotations; containerd >= 1.7, CRI-O)."""


def cdi_device_name(claim_uid: str) -> str:
    """CDI device name of a claim (a UID is already a valid CDI name)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", claim_uid):
        raise PrepareError(f"claim UID {claim_uid!r} cannot name a CDI device")
    return claim_uid


def cdi_spec(
    claim_uid: str, claim_ref: str, env: Mapping[str, str], settings: IsolationSettings
) -> dict[str, Any]:
    """The CDI spec for one claim: one device whose edits carry the env (and the hook mount)."""
    edits: dict[str, Any] = {"env": [f"{k}={v}" for k, v in sorted(env.items())]}
    s = settings
    if s.framework_env and s.kernel_hook_host_path and s.kernel_hook_container_path:
        edits["mounts"] = [
            {
                "hostPath": settings.kernel_hook_host_path,
                "containerPath": settings.kernel_hook_container_path,
                "options": ["ro", "nosuid", "nodev", "bind"],
            }
        ]
    return {
        "cdiVersion": CDI_VERSION,
        "kind": CDI_KIND,
        "annotations": {CDI_CLAIM_ANNOTATION: claim_ref},
        "devices": [{"name": cdi_device_name(claim_uid), "containerEdits": edits}],
    }


def cdi_spec_filename(claim_uid: str) -> str:
    """One file per claim in the CDI directory (``aispike.io-gpu_<uid>.json``)."""
    return f"{CDI_KIND.replace('/', '-')}_{claim_uid}.json"


def response_devices(
    claim_uid: str, gpus: Sequence[AllocatedGpu], settings: IsolationSettings
) -> list[dict[str, Any]]:
    """The kubelet's ``Device`` entries for a claim (plain dicts, as stored on disk).

    The claim's one CDI device (all GPUs' env in one ``NVIDIA_VISIBLE_DEVICES``) is named on the
    first GPU of each request, so a container gets it once; ``extra_cdi_devices`` per GPU.
    """
    ours = f"{CDI_KIND}={cdi_device_name(claim_uid)}"
    seen: set[str] = set()
    out = []
    for g in gpus:
        ids = [] if g.request in seen else [ours]
        seen.add(g.request)
        ids += [t.format(uuid=g.uuid, device=g.device) for t in settings.extra_cdi_devices]
        out.append(
            {
                "request_names": [g.request],
                "pool_name": g.pool,
                "device_name": g.device,
                "cdi_device_ids": ids,
                "share_id": g.share_id,
            }
        )
    return out
