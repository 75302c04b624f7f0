"""The server extension's REST API in a real jupyter-server (pytest-jupyter), on recorded NVML.

Each test runs a server with the extension and a recorded machine whose GPU processes stand
for the server's kernels (``fixture_pids = "kernels"``); kernels are real ipykernel processes.
The hub side (another user's token gets 403) is tested with a real JupyterHub in
tests/integration/test_lab_extension_hub.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

pytest_plugins = ["pytest_jupyter.jupyter_server"]

FIXTURES = Path(__file__).parents[2] / "fixtures" / "nvml"
A100_1 = "GPU-bebccd92-0001-4000-8000-578599ea0001"

SURFACES: dict[str, tuple[str, dict[str, str]]] = {
    "h200-8gib": ("h200-1gpu", {"AISPIKE_GPU_MEMORY_LIMIT": "8192", "AISPIKE_BACKEND": "native",
                                "AISPIKE_GPU_MODEL": "NVIDIA H200"}),
    "h200-5gib": ("h200-1gpu", {"AISPIKE_GPU_MEMORY_LIMIT": "4608"}),
    "shared-a100": ("a100-pcie-4gpu", {"NVIDIA_VISIBLE_DEVICES": A100_1,
                                       "AISPIKE_GPU_MEMORY_LIMIT": "10240"}),
    "two-t4": ("t4-2gpu", {"AISPIKE_GPU_MEMORY_LIMITS": "8192,8192", "AISPIKE_BACKEND": "hami"}),
    "no-gpu": ("no-driver", {}),
}


@pytest.fixture
def surface(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = getattr(request, "param", "h200-8gib")
    fixture, env = SURFACES[name]
    for key in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "AISPIKE_GPU_MEMORY_LIMIT",
                "AISPIKE_GPU_MEMORY_LIMITS", "AISPIKE_GPU_MEMORY_MIB", "AISPIKE_BACKEND",
                "AISPIKE_GPU_MODEL", "AISPIKE_AGENT_URL", "AISPIKE_SERVICE_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AISPIKE_NVML_FIXTURE", str(FIXTURES / f"{fixture}.json"))
    yield name


@pytest.fixture
def jp_server_config(surface: str) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"aispike_hub.serverext": True}},
            "AISpikeLab": {"fixture_pids": "kernels", "min_interval": 0.0}}


async def get(jp_fetch: Any, what: str = "status", **kw: Any) -> dict[str, Any]:
    response = await jp_fetch("aispike", "api", what, **kw)
    assert response.code == 200
    doc: dict[str, Any] = json.loads(response.body)
    return doc


async def start_kernel(jp_fetch: Any) -> str:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kid: str = json.loads(response.body)["id"]
    return kid


async def test_slice_and_live_use_of_this_servers_kernel(jp_fetch: Any) -> None:
    doc = await get(jp_fetch)
    assert doc["slice"]["model"] == "NVIDIA H200"
    assert (doc["slice"]["limit_mib"], doc["slice"]["indices"], doc["slice"]["backend"]) == (
        8192, [0], "native")
    assert doc["usage"]["memory_used_mib"] == 0 and doc["usage"]["kernels"] == []

    kid = await start_kernel(jp_fetch)
    doc = await get(jp_fetch, "usage")
    usage = doc["usage"]
    (kernel,) = usage["kernels"]
    assert kernel["id"] == kid
    assert (kernel["memory_used_mib"], kernel["utilization_percent"]) == (4458, 91.0)
    assert usage["memory_used_mib"] == 4458 and usage["level"] == "ok"
    assert usage["gpus"] == [{"index": 0, "used_mib": 4458, "limit_mib": 8192,
                              "fraction": 0.5442, "level": "ok"}]
    again = await get(jp_fetch, "usage")
    assert [p["memory_used_mib"] for p in again["usage"]["kernels"][0]["history"]][-2:] == [
        4458, 4458]
    # Without a service configured the service part says so instead of failing.
    service = await get(jp_fetch, "service")
    assert service["idle"]["available"] is False and service["quota"]["available"] is False


@pytest.mark.parametrize("surface", ["h200-5gib"], indirect=True)
async def test_nearly_full_slice(jp_fetch: Any) -> None:
    await start_kernel(jp_fetch)
    usage = (await get(jp_fetch, "usage"))["usage"]
    assert usage["memory_used_mib"] == 4458 and usage["level"] == "full"  # 97 % of 4.5 GiB


@pytest.mark.parametrize("surface", ["shared-a100"], indirect=True)
async def test_other_notebooks_on_a_shared_gpu_are_not_reported(jp_fetch: Any) -> None:
    # GPU 1 holds 26 GiB of three processes; one of them is this server's kernel.
    await start_kernel(jp_fetch)
    doc = await get(jp_fetch)
    assert doc["slice"]["indices"] == [1]
    assert doc["usage"]["memory_used_mib"] == 8192
    assert [k["memory_used_mib"] for k in doc["usage"]["kernels"]] == [8192]
    assert doc["usage"]["other"] is None


@pytest.mark.parametrize("surface", ["two-t4"], indirect=True)
async def test_several_gpus(jp_fetch: Any) -> None:
    await start_kernel(jp_fetch)
    doc = await get(jp_fetch)
    assert doc["slice"]["indices"] == [0, 1] and doc["slice"]["limit_mib"] == 16384
    assert doc["slice"]["backend"] == "hami" and doc["slice"]["model"] == "Tesla T4"
    assert [(g["index"], g["used_mib"]) for g in doc["usage"]["gpus"]] == [(0, 3000), (1, 0)]


@pytest.mark.parametrize("surface", ["no-gpu"], indirect=True)
async def test_no_gpu_slice(jp_fetch: Any) -> None:
    await start_kernel(jp_fetch)
    doc = await get(jp_fetch)
    assert doc["slice"] is None and doc["nvml"]["available"] is False
    assert doc["usage"]["memory_used_mib"] == 0 and doc["usage"]["gpus"] == []


@pytest.mark.parametrize("what", ["status", "slice", "usage", "service"])
async def test_needs_this_servers_login(jp_fetch: Any, what: str) -> None:
    for headers in ({"Authorization": "token not-this-servers-token"}, {"Authorization": ""}):
        with pytest.raises(HTTPClientError) as e:
            await jp_fetch("aispike", "api", what, headers=headers)
        assert e.value.code == 403
