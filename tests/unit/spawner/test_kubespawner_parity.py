"""KubeSpawner's documented config examples give the same pod under AISpikeSpawner (issue 21).

One table: each row is a KubeSpawner configuration (from KubeSpawner's docs: ``profile_list``
with ``kubespawner_override`` and ``profile_options``, CPU/RAM limits and guarantees, storage,
node selectors, tolerations, hooks) and the ``user_options`` of a start.  The pod is built by
``KubeSpawner`` and by ``AISpikeSpawner`` from the same row; the manifests must agree on
everything AISpike does not own.  What AISpike owns is removed from both before comparing (GPU
resources and claims, ``aispike.io/`` annotations and labels, ``AISPIKE_`` env); any other
difference must be named in the row (``differs``) and is checked on its own.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from conftest import A100, Fakes

GPU_RESOURCE_PREFIXES = ("nvidia.com/", "aliyun.com/", "aispike.io/")


def _hook(spawner: Any, pod: Any) -> Any:
    pod.metadata.labels["hooked"] = spawner.user.name
    return pod


# KubeSpawner's profile_list documentation example (kubespawner/spawner.py, profile_list help).
DOC_PROFILES = [
    {
        "display_name": "Demo - profile_list entry 1",
        "description": "Demo description for profile_list entry 1.",
        "slug": "demo-1",
        "default": True,
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "base": {"display_name": "jupyter/base-notebook:latest",
                             "kubespawner_override": {"image": "jupyter/base-notebook:latest"}},
                    "minimal": {"display_name": "jupyter/minimal-notebook:latest",
                                "default": True,
                                "kubespawner_override": {
                                    "image": "jupyter/minimal-notebook:latest"}},
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Other image",
                    "validation_regex": "^jupyter/.+:.+$",
                    "validation_message": "Must be an image matching ^jupyter/<name>:<tag>$",
                    "kubespawner_override": {"image": "{value}"},
                },
            },
        },
        "kubespawner_override": {"default_url": "/lab"},
    },
    {
        "display_name": "Demo - profile_list entry 2",
        "slug": "demo-2",
        "kubespawner_override": {"extra_resource_guarantees": {"nvidia.com/gpu": "1"}},
    },
]

PLAIN = {
    "image": "quay.io/jupyter/base-notebook:2026-01-05",
    "node_selector": {"pool": "notebooks"},
    "tolerations": [{"key": "notebooks", "operator": "Exists", "effect": "NoSchedule"}],
    "environment": {"GREETING": "hello {username}"},
    "extra_labels": {"team": "{username}"},
    "extra_annotations": {"owner": "{username}"},
    "cpu_limit": 2.0, "cpu_guarantee": 0.5, "mem_limit": "4G", "mem_guarantee": "1G",
}

# (name, KubeSpawner config, AISpike-only config, user_options, named differences)
TABLE: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], set[str]]] = [
    ("node selector, tolerations, env, labels, {username}", PLAIN, {}, {}, set()),
    ("limits and guarantees (an overcommit)",
     {"cpu_limit": 4.0, "cpu_guarantee": 1.0, "mem_limit": "8G", "mem_guarantee": "2G"},
     {}, {}, set()),
    ("no CPU/RAM settings: AISpike's defaults (2 CPUs, 8 GiB) as requests = limits",
     {"image": "jupyter/base-notebook:latest"}, {}, {}, {"cpu/memory"}),
    ("storage: a PVC per user, mounted",
     {**PLAIN, "storage_pvc_ensure": True, "storage_capacity": "10Gi",
      "storage_class": "standard",
      "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
      "volume_mounts": [{"name": "home", "mountPath": "/home/jovyan"}]}, {}, {}, set()),
    ("hooks and extra containers",
     {**PLAIN, "modify_pod_hook": _hook,
      "lifecycle_hooks": {"postStart": {"exec": {"command": ["true"]}}},
      "init_containers": [{"name": "init", "image": "busybox", "command": ["true"]}],
      "extra_containers": [{"name": "side", "image": "busybox"}]}, {}, {}, set()),
    ("profile_list (docs): the default profile and its default choice",
     {**PLAIN, "profile_list": DOC_PROFILES}, {}, {}, set()),
    ("profile_list (docs): a listed choice",
     {**PLAIN, "profile_list": DOC_PROFILES}, {}, {"profile": "demo-1", "image": "base"},
     set()),
    ("profile_list (docs): an unlisted choice",
     {**PLAIN, "profile_list": DOC_PROFILES}, {},
     {"profile": "demo-1", "image--unlisted-choice": "jupyter/datascience-notebook:latest"},
     set()),
    ("profile_list (docs): a profile with extra_resource_guarantees",
     {**PLAIN, "profile_list": DOC_PROFILES}, {}, {"profile": "demo-2"}, set()),
    ("profile_list as a dict, the default profile overriding RAM",
     {**PLAIN, "profile_list": {
         "small": {"display_name": "Small", "default": True,
                   "kubespawner_override": {"mem_limit": "4G", "mem_guarantee": "2G"}},
         "big": {"display_name": "Big",
                 "kubespawner_override": {"mem_limit": "16G", "mem_guarantee": "8G"}}}},
     {}, {}, set()),
    ("a callable profile_list and callable overrides",
     {**PLAIN, "profile_list": lambda spawner: [
         {"display_name": "Mine", "slug": "mine",
          "kubespawner_override": {"image": lambda s: f"jupyter/{s.user.name}:latest"}}]},
     {}, {"profile": "mine"}, set()),
    ("a GPU slice on the nvidia backend (AISpike owns GPUs and adds the model affinity)",
     PLAIN, {"backend": "nvidia", "gpu_model_labels": ["nvidia.com/gpu.product"]},
     {"gpu_gib": 8, "gpu_model": A100}, {"affinity"}),
    ("a GPU profile on the native backend (slice pinned by the placer)",
     {**PLAIN, "profile_list": [
         {"display_name": "CPU", "slug": "cpu", "default": True,
          "kubespawner_override": {"max_gpus": 0}},
         {"display_name": "GPU", "slug": "gpu",
          "kubespawner_override": {"max_gpu_gib": 20, "mem_limit": "16G",
                                   "mem_guarantee": "8G"}}]},
     {}, {"profile": "gpu", "gpu_gib": 10}, set()),
]


def _owned_removed(pod: dict[str, Any], differs: set[str]) -> dict[str, Any]:
    """``pod`` without what AISpike owns (and without the row's named differences)."""
    pod = copy.deepcopy(pod)
    meta = pod["metadata"]
    for key in ("annotations", "labels"):
        meta[key] = {k: v for k, v in (meta.get(key) or {}).items()
                     if not k.startswith("aispike.io/")}
    spec = pod["spec"]
    spec.pop("resourceClaims", None)
    if "affinity" in differs:
        spec.pop("affinity", None)
    for container in spec["containers"]:
        container["env"] = [e for e in container.get("env") or []
                            if not e["name"].startswith("AISPIKE_")
                            and not ("cpu/memory" in differs  # JupyterHub's CPU_/MEM_ env
                                     and e["name"].startswith(("CPU_", "MEM_")))]
        resources = container.get("resources") or {}
        resources.pop("claims", None)
        for kind in ("limits", "requests"):
            # str(): a pinned pod is re-read as a V1Pod, its quantities then are strings
            kept = {k: str(v) for k, v in (resources.get(kind) or {}).items()
                    if not k.startswith(GPU_RESOURCE_PREFIXES)
                    and not ("cpu/memory" in differs and k in ("cpu", "memory"))}
            if kept:
                resources[kind] = kept
            else:
                resources.pop(kind, None)
    return pod


@pytest.mark.parametrize(("name", "kube", "aispike", "user_options", "differs"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_kubespawner_configs_build_the_same_pod(
        no_cluster: Fakes, name: str, kube: dict[str, Any], aispike: dict[str, Any],
        user_options: dict[str, Any], differs: set[str]) -> None:
    async def scenario() -> None:
        config = no_cluster.config(kube, aispike)
        theirs = await no_cluster.kube_pod(config, user_options)
        ours, spawner = await no_cluster.aispike_pod(config, user_options)
        assert _owned_removed(ours, differs) == _owned_removed(theirs, set())
        resources = ours["spec"]["containers"][0]["resources"]
        if "cpu/memory" in differs:
            assert str(resources["limits"]["cpu"]) == str(resources["requests"]["cpu"]) == "2.0"
            assert resources["limits"]["memory"] == resources["requests"]["memory"] == 8 << 30
        if user_options.get("gpu_gib"):
            assert spawner.backend == "aispike" or resources["limits"]["nvidia.com/gpu"] == "1"
        if "affinity" in differs:
            terms = ours["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            assert terms[0]["matchExpressions"][0]["values"] == [A100]
        # Storage: the PVC is KubeSpawner's too.
        if kube.get("storage_pvc_ensure"):
            kube_spawner = no_cluster.spawner(
                __import__("kubespawner").KubeSpawner, config, user_options)
            assert _pvc(spawner) == _pvc(kube_spawner)

    asyncio.run(scenario())


def _pvc(spawner: Any) -> Any:
    from kubernetes_asyncio.client import ApiClient

    return ApiClient().sanitize_for_serialization(spawner.get_pvc_manifest())


def test_the_native_gpu_profile_was_pinned(no_cluster: Fakes) -> None:
    """The last row's slice went through the placer (the rows compare only the rest)."""
    row = TABLE[-1]

    async def scenario() -> None:
        _, spawner = await no_cluster.aispike_pod(no_cluster.config(row[1], row[2]), row[3])
        assert "pin" in no_cluster.placer.calls
        assert spawner.mem_limit == 16 << 30 and spawner.mem_guarantee == 8 << 30  # "G": GiB

    asyncio.run(scenario())
