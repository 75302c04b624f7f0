"""The user's ceiling as a namespace ResourceQuota, per backend (the real API server enforcing
it is tests/integration/test_user_namespaces_hub.py)."""

from __future__ import annotations

import pytest

from aispike_hub.admission.controller import user_ceiling
from aispike_hub.kube.namespace_quota import (
    CLAIMS_QUOTA,
    DEVICES_QUOTA,
    QUOTA_NAME,
    USER_ANNOTATION,
    quota_hard,
    resource_quota,
)
from aispike_hub.quota import policy_from_dict

CEILING = {"gpu_memory_mib": 40 * 1024 + 512, "gpus": 2, "cpu_milli": 4500,
           "memory_mib": 16 * 1024, "servers": 3}
COMMON = {"requests.cpu": "4500m", "limits.cpu": "4500m", "requests.memory": "16384Mi",
          "limits.memory": "16384Mi", "pods": "3"}


@pytest.mark.parametrize(("backend", "gpu_part"), [
    ("aispike", {CLAIMS_QUOTA: "3", DEVICES_QUOTA: "2"}),
    ("hami", {"requests.nvidia.com/gpu": "2", "requests.nvidia.com/gpumem": "41472"}),
    ("nvidia", {"requests.nvidia.com/gpu": "2"}),
    ("gpushare", {"requests.aliyun.com/gpu-mem": "40"}),  # whole GiB, rounded down
    ("mig", {}),
])
def test_each_backend_gets_the_resources_it_can_count(backend: str,
                                                       gpu_part: dict[str, str]) -> None:
    assert quota_hard(CEILING, backend) == {**COMMON, **gpu_part}


def test_unlimited_resources_are_left_out() -> None:
    assert quota_hard(dict.fromkeys(CEILING), "aispike") == {}
    assert quota_hard({"servers": 1, "gpus": None}, "aispike") == {"pods": "1",
                                                                   CLAIMS_QUOTA: "1"}


def test_the_object_names_its_user_and_the_ceiling_includes_borrowing() -> None:
    policy = policy_from_dict({
        "defaults": {"quota": {"servers": 1, "gpus": 1}},
        "groups": {"lab": {"member": {"quota": {"gpus": 2}, "borrowing": {"gpus": 2}}}},
    })
    ceiling = user_ceiling(policy, "ann", ["lab"])
    assert ceiling["gpus"] == 4 and ceiling["servers"] == 1 and ceiling["cpu_milli"] is None
    body = resource_quota("ann", ceiling, "aispike")
    assert body["metadata"]["name"] == QUOTA_NAME
    assert body["metadata"]["annotations"] == {USER_ANNOTATION: "ann"}
    assert body["spec"]["hard"][DEVICES_QUOTA] == "4"
