"""Recorded NVML machines: record one from real hardware, and replay it in place of pynvml.

Why: the agent's NVML code must be tested on machines nobody has at hand (an 8-GPU HGX board, a
MIG-partitioned A100, a node without a driver).  A fixture is a JSON file holding what each pynvml
function returned on such a machine, or the NVML error it raised.  :class:`RecordedNvml` has
pynvml's function names and raises pynvml's own ``NVMLError`` subclasses, so
:func:`aispike_hub.agent.nvml.read_machine` runs unchanged on it.  The agent also replays a fixture
when ``AgentApp.nvml_fixture`` is set, which is how a simulated node publishes realistic GPUs.

Fixture layout (``format`` 1)::

    {"format": 1, "description": "...",
     "nvmlInit": null | {"nvml_error": "DRIVER_NOT_LOADED"},
     "nvmlSystemGetDriverVersion": "550.54.15",
     "nvmlDeviceGetCount": 2,
     "devices": [{"nvmlDeviceGetUUID": "GPU-...", "nvmlDeviceGetMemoryInfo": {...},
                  "nvmlDeviceGetNvLinkState": [1, 1, {"nvml_error": "INVALID_ARGUMENT"}],
                  "mig_devices": [null, {...}], ...}],
     "nvmlDeviceGetTopologyCommonAncestor": {"0-1": 10}}

A value ``{"nvml_error": NAME}`` raises pynvml's error for ``NVML_ERROR_<NAME>``; a function not
recorded for a device raises ``NotSupported``; per-link functions hold one entry per link, and
links past the list raise ``InvalidArgument``, as NVML does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1

_PER_LINK = (
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkRemotePciInfo",
    "nvmlDeviceGetNvLinkRemoteDeviceType",
)
_PER_DEVICE = (
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetAttributes",
    "nvmlDeviceGetGpuInstanceId",
)


def _pynvml() -> Any:
    import pynvml  # the real module: its error classes are what callers must handle

    return pynvml


def nvml_error(name: str) -> BaseException:
    """pynvml's exception for ``NVML_ERROR_<name>`` (e.g. "GPU_IS_LOST" -> NVMLError_GpuIsLost)."""
    pynvml = _pynvml()
    code = getattr(pynvml, f"NVML_ERROR_{name}", pynvml.NVML_ERROR_UNKNOWN)
    exc: BaseException = pynvml.nvmlExceptionClass(code)()
    return exc


def _is_error(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"nvml_error"}


def _as_object(value: Any) -> Any:
    """Dicts become attribute objects, as pynvml returns ctypes structures."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_as_object(v) for v in value]
    return value


@dataclass(frozen=True)
class _Handle:
    """A device handle of a recorded machine: the physical index and, for MIG, the slot."""

    index: int
    mig_slot: int | None = None


class RecordedNvml:
    """Stands in for the ``pynvml`` module, answering from a recorded fixture.

    ``faults`` injects errors on top of the recording, keyed by (function name, physical GPU
    index or None for any GPU) with an error name as value: how tests make a GPU vanish or a
    call fail in the middle of a read.
    """

    def __init__(
        self,
        fixture: Mapping[str, Any],
        faults: Mapping[tuple[str, int | None], str] | None = None,
    ) -> None:
        if fixture.get("format") != FORMAT:
            raise ValueError(f"unknown NVML fixture format {fixture.get('format')!r}")
        self.fixture = fixture
        self.faults = dict(faults or {})
        self.NVMLError = _pynvml().NVMLError
        self.calls: list[str] = []

    @classmethod
    def from_file(cls, path: str | Path) -> RecordedNvml:
        """Load a fixture file (JSON)."""
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    # -- plumbing ------------------------------------------------------------------------------

    def _fault(self, fn: str, index: int | None) -> None:
        self.calls.append(fn)
        for key in ((fn, index), (fn, None)):
            if key in self.faults:
                raise nvml_error(self.faults[key])

    def _value(self, value: Any) -> Any:
        if _is_error(value):
            raise nvml_error(value["nvml_error"])
        return _as_object(value)

    def _record(self, handle: _Handle) -> Mapping[str, Any]:
        devices = self.fixture.get("devices", [])
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(devices):
            raise nvml_error("INVALID_ARGUMENT")
        record = devices[handle.index]
        if _is_error(record):
            raise nvml_error(record["nvml_error"])
        if handle.mig_slot is not None:
            slots = record.get("mig_devices", [])
            slot = slots[handle.mig_slot] if handle.mig_slot < len(slots) else None
            if slot is None:
                raise nvml_error("NOT_FOUND")
            return dict(slot)
        return dict(record)

    def _device_call(self, fn: str, handle: _Handle) -> Any:
        self._fault(fn, handle.index if isinstance(handle, _Handle) else None)
        record = self._record(handle)
        if fn not in record:
            raise nvml_error("NOT_SUPPORTED")
        return self._value(record[fn])

    def _link_call(self, fn: str, handle: _Handle, link: int) -> Any:
        self._fault(fn, handle.index if isinstance(handle, _Handle) else None)
        record = self._record(handle)
        if fn not in record:
            raise nvml_error("NOT_SUPPORTED")
        values = record[fn]
        if _is_error(values):
            raise nvml_error(values["nvml_error"])
        if not 0 <= link < len(values):
            raise nvml_error("INVALID_ARGUMENT")
        if values[link] is None:
            raise nvml_error("NOT_SUPPORTED")
        return self._value(values[link])

    # -- the pynvml functions the agent calls ----------------------------------------------------

    def nvmlInit(self) -> None:
        self._fault("nvmlInit", None)
        if self.fixture.get("nvmlInit") is not None:
            self._value(self.fixture["nvmlInit"])

    def nvmlShutdown(self) -> None:
        self._fault("nvmlShutdown", None)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._fault("nvmlSystemGetDriverVersion", None)
        if "nvmlSystemGetDriverVersion" not in self.fixture:
            raise nvml_error("NOT_SUPPORTED")
        return str(self._value(self.fixture["nvmlSystemGetDriverVersion"]))

    def nvmlDeviceGetCount(self) -> int:
        self._fault("nvmlDeviceGetCount", None)
        return int(self._value(self.fixture.get("nvmlDeviceGetCount", 0)))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._fault("nvmlDeviceGetHandleByIndex", index)
        handle = _Handle(index)
        record = self._record(handle)
        if "nvmlDeviceGetHandleByIndex" in record:
            self._value(record["nvmlDeviceGetHandleByIndex"])
        return handle

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, slot: int) -> _Handle:
        self._fault("nvmlDeviceGetMigDeviceHandleByIndex", handle.index)
        mig = _Handle(handle.index, slot)
        self._record(mig)
        return mig

    def nvmlDeviceGetTopologyCommonAncestor(self, a: _Handle, b: _Handle) -> int:
        self._fault("nvmlDeviceGetTopologyCommonAncestor", a.index)
        self._fault("nvmlDeviceGetTopologyCommonAncestor", b.index)
        self._record(a)
        self._record(b)
        levels = self.fixture.get("nvmlDeviceGetTopologyCommonAncestor", {})
        i, j = sorted((a.index, b.index))
        key = f"{i}-{j}"
        if key not in levels:
            raise nvml_error("NOT_SUPPORTED")
        return int(self._value(levels[key]))

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, since_us: int) -> list[Any]:
        samples = self._device_call("nvmlDeviceGetProcessUtilization", handle)
        fresh = [s for s in samples if int(s.timeStamp) > int(since_us)]
        if not fresh:
            raise nvml_error("NOT_FOUND")  # what NVML says when no sample is newer
        return fresh

    def __getattr__(self, name: str) -> Any:
        if name in _PER_DEVICE:
            return lambda handle: self._device_call(name, handle)
        if name in _PER_LINK:
            return lambda handle, link: self._link_call(name, handle, link)
        raise AttributeError(name)


# ---------------------------------------------------------------------------------------------
# Recording from a real machine
# ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A ctypes structure or pynvml friendly object as JSON-ready data."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    fields = getattr(value, "_fields_", None)
    if fields is not None:
        return {name: _plain(getattr(value, name)) for name, *_ in fields}
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def _error_name(nvml: Any, exc: BaseException) -> str:
    value = getattr(exc, "value", None)
    for name in dir(nvml):
        if name.startswith("NVML_ERROR_") and getattr(nvml, name) == value:
            return name[len("NVML_ERROR_") :]
    return "UNKNOWN"


def _try(nvml: Any, fn: str, *args: Any, keep: Iterable[str] = ()) -> Any:
    """Call ``nvml.fn``; return its plain value or ``{"nvml_error": NAME}``."""
    try:
        value = getattr(nvml, fn)(*args)
    except nvml.NVMLError as exc:
        return {"nvml_error": _error_name(nvml, exc)}
    plain = _plain(value)
    if keep and isinstance(plain, dict):
        return {k: plain[k] for k in keep if k in plain}
    return plain


_KEEP = {
    "nvmlDeviceGetMemoryInfo": ("total", "used", "free"),
    "nvmlDeviceGetPciInfo": ("busId",),
    "nvmlDeviceGetUtilizationRates": ("gpu", "memory"),
    "nvmlDeviceGetAttributes": ("gpuInstanceSliceCount", "computeInstanceSliceCount",
                                "multiprocessorCount", "memorySizeMB"),
}


def _record_device(nvml: Any, handle: Any, mig: bool) -> dict[str, Any]:
    functions = (
        ("nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo",
         "nvmlDeviceGetAttributes", "nvmlDeviceGetGpuInstanceId")
        if mig
        else [f for f in _PER_DEVICE if f not in ("nvmlDeviceGetAttributes",
                                                  "nvmlDeviceGetGpuInstanceId")]
    )
    record: dict[str, Any] = {}
    for fn in functions:
        if fn == "nvmlDeviceGetProcessUtilization":
            record[fn] = _try(nvml, fn, handle, 0)
        else:
            record[fn] = _try(nvml, fn, handle, keep=_KEEP.get(fn, ()))
    if mig:
        return record
    states: list[Any] = []
    remotes: list[Any] = []
    kinds: list[Any] = []
    for link in range(36):
        state = _try(nvml, "nvmlDeviceGetNvLinkState", handle, link)
        states.append(state)
        if _is_error(state):
            break
        active = bool(state)
        remotes.append(
            _try(nvml, "nvmlDeviceGetNvLinkRemotePciInfo", handle, link, keep=("busId",))
            if active else None
        )
        kinds.append(_try(nvml, "nvmlDeviceGetNvLinkRemoteDeviceType", handle, link)
                     if active else None)
    record["nvmlDeviceGetNvLinkState"] = states
    record["nvmlDeviceGetNvLinkRemotePciInfo"] = remotes
    record["nvmlDeviceGetNvLinkRemoteDeviceType"] = kinds
    mode = record.get("nvmlDeviceGetMigMode")
    if isinstance(mode, list) and mode and mode[0] == 1:
        slots: list[Any] = []
        count = _try(nvml, "nvmlDeviceGetMaxMigDeviceCount", handle)
        record["nvmlDeviceGetMaxMigDeviceCount"] = count
        for slot in range(count if isinstance(count, int) else 0):
            try:
                mig_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError:
                slots.append(None)
                continue
            slots.append(_record_device(nvml, mig_handle, mig=True))
        record["mig_devices"] = slots
    return record


def record_machine(nvml: Any, description: str = "") -> dict[str, Any]:
    """Record what the agent reads from this machine's NVML as a fixture (a JSON-ready dict).

    Records the same calls :func:`aispike_hub.agent.nvml.read_machine` makes, keeping errors as
    errors, so replaying the fixture exercises the same paths the real machine did.
    """
    fixture: dict[str, Any] = {"format": FORMAT, "description": description}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        fixture["nvmlInit"] = {"nvml_error": _error_name(nvml, exc)}
        return fixture
    try:
        fixture["nvmlInit"] = None
        fixture["nvmlSystemGetDriverVersion"] = _try(nvml, "nvmlSystemGetDriverVersion")
        count = _try(nvml, "nvmlDeviceGetCount")
        fixture["nvmlDeviceGetCount"] = count
        handles: dict[int, Any] = {}
        devices: list[Any] = []
        for i in range(count if isinstance(count, int) else 0):
            try:
                handles[i] = nvml.nvmlDeviceGetHandleByIndex(i)
            except nvml.NVMLError as exc:
                devices.append({"nvml_error": _error_name(nvml, exc)})
                continue
            devices.append(_record_device(nvml, handles[i], mig=False))
        fixture["devices"] = devices
        levels: dict[str, Any] = {}
        for i in handles:
            for j in handles:
                if i < j:
                    levels[f"{i}-{j}"] = _try(
                        nvml, "nvmlDeviceGetTopologyCommonAncestor", handles[i], handles[j]
                    )
        fixture["nvmlDeviceGetTopologyCommonAncestor"] = levels
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)
    return fixture
