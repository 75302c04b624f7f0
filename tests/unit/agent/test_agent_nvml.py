"""NVML reading over every recorded machine: GPUs, topology groups, processes, bad data."""

from __future__ import annotations

import logging
from pathlib import Path

import pynvml
import pytest
from agent_fixtures import ALL_FIXTURES, load_fixture, recorded

from aispike_hub.agent.nvml import (
    TOPOLOGY_NODE,
    TOPOLOGY_SINGLE,
    TOPOLOGY_SYSTEM,
    UNKNOWN_MODEL,
    mig_profile_from,
    normalize_bus_id,
    read_machine,
    reduce_topology,
)
from aispike_hub.agent.recorded import RecordedNvml


def test_every_fixture_is_listed() -> None:
    assert set(ALL_FIXTURES) >= {
        "h100-sxm-8gpu.json",
        "a100-pcie-4gpu.json",
        "t4-2gpu.json",
        "a100-mig.json",
        "no-driver.json",
        "h200-1gpu.json",
        "h200-idle.json",
    }


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_reads_without_problems(name: str) -> None:
    reading = read_machine(recorded(name))
    indices = [g.gpu.index for g in reading.gpus]
    assert indices == sorted(set(indices))
    for r in reading.gpus:
        assert r.gpu.uuid and r.gpu.memory_mib > 0 and r.gpu.model
        assert 0 <= r.memory_used_mib <= r.gpu.memory_mib
    gpu_uuids = {g.gpu.uuid for g in reading.gpus}
    assert all(p.gpu_uuid in gpu_uuids for p in reading.processes)
    if name == "no-driver.json":
        assert not reading.available and reading.problems
    else:
        assert reading.available and reading.problems == ()


def test_h100_hgx_is_one_nvlink_domain_and_two_numa_nodes() -> None:
    reading = read_machine(recorded("h100-sxm-8gpu.json"))
    gpus = reading.core_gpus
    assert len(gpus) == 8
    assert {g.model for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert {g.memory_mib for g in gpus} == {81559}
    assert {g.nvlink_domain for g in gpus} == {"nvlink-0"}
    assert {g.pcie_switch for g in gpus} == {""}  # one PCIe switch per GPU on HGX
    assert [g.numa_node for g in gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert reading.driver_version == "550.54.15"


def test_h100_processes_and_their_utilisation() -> None:
    reading = read_machine(recorded("h100-sxm-8gpu.json"))
    by_pid = {p.pid: p for p in reading.processes}
    assert set(by_pid) == {4101, 4102, 4201}
    assert by_pid[4101].gpu_index == 0 and by_pid[4101].memory_used_mib == 20480
    assert by_pid[4101].sm_utilization_percent == 70.0  # mean of its two samples, 60 and 80
    assert by_pid[4102].sm_utilization_percent == 5.0
    assert by_pid[4201].gpu_index == 5 and by_pid[4201].sm_utilization_percent == 97.0


def test_process_samples_are_read_since_the_last_pass() -> None:
    nvml = recorded("h100-sxm-8gpu.json")
    marks: dict[str, int] = {}
    first = read_machine(nvml, marks)
    assert {p.pid: p.sm_utilization_percent for p in first.processes}[4101] == 70.0
    second = read_machine(nvml, marks)  # no newer samples: NVML says NotFound, util unknown
    assert {p.pid: p.sm_utilization_percent for p in second.processes}[4101] is None
    assert second.problems == ()


def test_a100_pcie_two_switch_groups_no_nvlink() -> None:
    gpus = read_machine(recorded("a100-pcie-4gpu.json")).core_gpus
    assert [g.pcie_switch for g in gpus] == ["pcie-0", "pcie-0", "pcie-2", "pcie-2"]
    assert {g.nvlink_domain for g in gpus} == {""}
    assert [g.numa_node for g in gpus] == [0, 0, 1, 1]
    assert {g.memory_mib for g in gpus} == {81920}


def test_a100_pcie_process_without_samples_has_unknown_utilisation() -> None:
    reading = read_machine(recorded("a100-pcie-4gpu.json"))
    by_pid = {p.pid: p for p in reading.processes}
    assert {p.gpu_index for p in reading.processes} == {1}
    assert by_pid[7002].memory_used_mib == 16384
    assert by_pid[7003].sm_utilization_percent is None


def test_t4_without_numa_ids_or_nvlink() -> None:
    reading = read_machine(recorded("t4-2gpu.json"))
    gpus = reading.core_gpus
    assert [g.model for g in gpus] == ["Tesla T4", "Tesla T4"]
    assert [g.numa_node for g in gpus] == [-1, -1]
    assert [(g.nvlink_domain, g.pcie_switch) for g in gpus] == [("", ""), ("", "")]
    assert [g.mig_profile for g in gpus] == ["", ""]


def test_mig_instances_become_devices_after_the_physical_gpus() -> None:
    reading = read_machine(recorded("a100-mig.json"))
    gpus = {g.index: g for g in reading.core_gpus}
    assert sorted(gpus) == [1, 2, 3, 4]  # GPU 0 is in MIG mode: only its instances
    assert gpus[1].mig_profile == "" and gpus[1].uuid.startswith("GPU-")
    assert [gpus[i].mig_profile for i in (2, 3, 4)] == ["3g.20gb", "2g.10gb", "1g.5gb"]
    assert [gpus[i].memory_mib for i in (2, 3, 4)] == [19968, 9856, 4864]
    assert all(gpus[i].uuid.startswith("MIG-") for i in (2, 3, 4))
    assert {g.model for g in gpus.values()} == {"NVIDIA A100-SXM4-40GB"}
    # the NVLink pair (GPU 0 and 1) still holds for the instances of GPU 0
    assert {g.nvlink_domain for g in gpus.values()} == {"nvlink-0"}
    migs = [r for r in reading.gpus if r.mig_enabled]
    assert {r.parent_index for r in migs} == {0}
    assert all(r.utilization_percent is None for r in migs)


def test_mig_processes_land_on_their_instance() -> None:
    reading = read_machine(recorded("a100-mig.json"))
    assert {(p.pid, p.gpu_index, p.memory_used_mib) for p in reading.processes} == {
        (5001, 2, 10240),
        (5002, 4, 1024),
    }


def test_h200_recorded_on_the_device_machine() -> None:
    """The real recording: one H200 in a VM, NUMA unknown, no NVLink, one notebook process."""
    reading = read_machine(recorded("h200-1gpu.json"))
    (gpu,) = reading.core_gpus
    assert gpu.model == "NVIDIA H200" and gpu.memory_mib == 143771
    assert gpu.uuid == "GPU-1ebf3528-e5b2-76bb-9a6f-d932f6f20ea6"
    assert (gpu.nvlink_domain, gpu.pcie_switch, gpu.numa_node) == ("", "", -1)
    assert reading.driver_version == "580.159.04"
    (proc,) = reading.processes
    assert (proc.pid, proc.memory_used_mib, proc.sm_utilization_percent) == (429, 4458, 91.0)
    idle = read_machine(recorded("h200-idle.json"))
    assert idle.processes == () and idle.gpus[0].gpu == gpu


def test_no_driver_publishes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        reading = read_machine(recorded("no-driver.json"))
    assert not reading.available and reading.gpus == ()
    assert "DriverNotLoaded" in caplog.text


def test_fake_raises_real_pynvml_errors() -> None:
    nvml = recorded("t4-2gpu.json")
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetNumaNodeId(handle)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(7)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        recorded("no-driver.json").nvmlInit()
    with pytest.raises(ValueError, match="format"):
        RecordedNvml({"format": 99})


# --- bad data: errors in the middle of a read are logged and skipped ------------------------------


def test_gpu_lost_mid_read_skips_only_that_gpu(caplog: pytest.LogCaptureFixture) -> None:
    nvml = recorded("h100-sxm-8gpu.json", {("nvmlDeviceGetMemoryInfo", 3): "GPU_IS_LOST"})
    with caplog.at_level(logging.WARNING):
        reading = read_machine(nvml)
    assert [g.gpu.index for g in reading.gpus] == [0, 1, 2, 4, 5, 6, 7]
    assert {g.gpu.nvlink_domain for g in reading.gpus} == {"nvlink-0"}
    assert any("GPU 3" in p and "GpuIsLost" in p for p in reading.problems)
    assert "GPU 3" in caplog.text


def test_gpu_vanished_between_count_and_handle() -> None:
    nvml = recorded("a100-pcie-4gpu.json", {("nvmlDeviceGetHandleByIndex", 2): "GPU_IS_LOST"})
    reading = read_machine(nvml)
    assert [g.gpu.pcie_switch for g in reading.gpus] == ["pcie-0", "pcie-0", ""]
    assert [g.gpu.index for g in reading.gpus] == [0, 1, 3]


def test_optional_reads_failing_leave_facts_unknown() -> None:
    nvml = recorded(
        "h100-sxm-8gpu.json",
        {
            ("nvmlDeviceGetNumaNodeId", None): "UNKNOWN",
            ("nvmlDeviceGetUtilizationRates", 0): "TIMEOUT",
            ("nvmlDeviceGetTopologyCommonAncestor", None): "UNKNOWN",
            ("nvmlDeviceGetProcessUtilization", None): "NO_PERMISSION",
        },
    )
    reading = read_machine(nvml)
    assert len(reading.gpus) == 8
    assert {g.gpu.numa_node for g in reading.gpus} == {-1}
    assert reading.gpus[0].utilization_percent is None
    assert {g.gpu.nvlink_domain for g in reading.gpus} == {"nvlink-0"}
    assert all(p.sm_utilization_percent is None for p in reading.processes)
    assert len(reading.problems) >= 8


def test_nvlink_error_mid_links_keeps_links_read_so_far() -> None:
    fixture = load_fixture("a100-mig.json")
    fixture["devices"][1]["nvmlDeviceGetNvLinkState"][3] = {"nvml_error": "UNKNOWN"}
    reading = read_machine(RecordedNvml(fixture))
    assert {g.gpu.nvlink_domain for g in reading.gpus} == {"nvlink-0"}
    assert any("NVLink 3" in p for p in reading.problems)


def test_process_list_failing_keeps_the_gpus() -> None:
    nvml = recorded(
        "h100-sxm-8gpu.json", {("nvmlDeviceGetComputeRunningProcesses", 0): "GPU_IS_LOST"}
    )
    reading = read_machine(nvml)
    assert len(reading.gpus) == 8
    assert {p.pid for p in reading.processes} == {4201}


def test_count_failing_reads_as_no_gpus() -> None:
    reading = read_machine(recorded("t4-2gpu.json", {("nvmlDeviceGetCount", None): "UNKNOWN"}))
    assert not reading.available and reading.gpus == ()


def test_unknown_models_are_kept_or_named_unknown(caplog: pytest.LogCaptureFixture) -> None:
    fixture = load_fixture("t4-2gpu.json")
    fixture["devices"][0]["nvmlDeviceGetName"] = "NVIDIA Graphics Device"  # unreleased board
    fixture["devices"][1]["nvmlDeviceGetName"] = {"nvml_error": "UNKNOWN"}
    with caplog.at_level(logging.WARNING):
        gpus = read_machine(RecordedNvml(fixture)).core_gpus
    assert [g.model for g in gpus] == ["NVIDIA Graphics Device", UNKNOWN_MODEL]
    assert "model unknown" in caplog.text


def test_mig_slot_errors_skip_the_instance() -> None:
    fixture = load_fixture("a100-mig.json")
    fixture["devices"][0]["mig_devices"][1]["nvmlDeviceGetMemoryInfo"] = {
        "nvml_error": "GPU_IS_LOST"
    }
    fixture["devices"][0]["mig_devices"][2]["nvmlDeviceGetName"] = "NVIDIA A100-SXM4-40GB"
    reading = read_machine(RecordedNvml(fixture))
    profiles = {g.gpu.index: g.gpu.mig_profile for g in reading.gpus}
    assert profiles == {1: "", 2: "3g.20gb", 3: "1g.5gb"}  # the 1g.5gb from its attributes


def test_nvml_not_installed_or_dead_module() -> None:
    class NoLibrary:
        NVMLError = pynvml.NVMLError

        def nvmlInit(self) -> None:
            raise pynvml.NVMLError_LibraryNotFound()

    assert not read_machine(NoLibrary()).available


# --- pure topology reduction ------------------------------------------------------------------


def test_bus_ids_compare_across_spellings() -> None:
    assert normalize_bus_id("0000:18:00.0") == normalize_bus_id(b"00000000:18:00.0")
    assert normalize_bus_id("00000000:AB:00.0") == "00000000:ab:00.0"
    assert normalize_bus_id("") == ""


def test_bridged_pairs_form_separate_nvlink_domains() -> None:
    buses = {i: f"0000:{b}:00.0" for i, b in enumerate(["17", "31", "b1", "ca"])}
    remotes = {
        0: [(buses[1], 0), (buses[1], 0)],
        1: [(buses[0], 0)],
        2: [(buses[3], None)],  # remote type unsupported: still a GPU by its bus id
        3: [(buses[2], 0)],
    }
    levels = {(0, 1): TOPOLOGY_SINGLE, (2, 3): TOPOLOGY_SINGLE, (0, 2): TOPOLOGY_SYSTEM}
    groups = reduce_topology(buses, levels, remotes)
    assert [groups[i].nvlink_domain for i in range(4)] == ["nvlink-0"] * 2 + ["nvlink-2"] * 2
    assert [groups[i].pcie_switch for i in range(4)] == ["pcie-0"] * 2 + ["pcie-2"] * 2


def test_two_nvswitch_islands() -> None:
    buses = {i: f"0000:{i + 16:02x}:00.0" for i in range(4)}
    remotes = {i: [(f"0000:0{5 + i // 2}:00.0", 2)] for i in range(4)}
    levels = {(i, j): TOPOLOGY_NODE for i in range(4) for j in range(i + 1, 4)}
    groups = reduce_topology(buses, levels, remotes)
    assert [groups[i].nvlink_domain for i in range(4)] == ["nvlink-0", "nvlink-0", "nvlink-2",
                                                           "nvlink-2"]
    assert {g.pcie_switch for g in groups.values()} == {""}


def test_mig_profile_from_name_or_attributes() -> None:
    assert mig_profile_from("NVIDIA A100-SXM4-40GB MIG 3g.20gb", 3, 19968) == "3g.20gb"
    assert mig_profile_from("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 1, 9984) == "1g.10gb"
    assert mig_profile_from("NVIDIA A100-SXM4-40GB", 2, 9856) == "2g.10gb"
    assert mig_profile_from("", None, 4864) == "mig"


def test_numa_node_from_sysfs_when_nvml_cannot_say(tmp_path: Path) -> None:
    dev = tmp_path / "bus" / "pci" / "devices" / "0000:00:06.0"
    dev.mkdir(parents=True)
    (dev / "numa_node").write_text("1\n")

    def numa(root: Path) -> int:
        return read_machine(recorded("h200-1gpu.json"), sysfs_root=str(root)).gpus[0].gpu.numa_node

    assert numa(tmp_path) == 1
    (dev / "numa_node").write_text("-1\n")  # the kernel does not know either
    assert numa(tmp_path) == -1
    assert numa(tmp_path / "none") == -1
