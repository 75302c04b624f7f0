"""The AISpike jupyter-server extension: REST API behind the lab extension.

Routes (under the server's base URL; every one needs the same login as the server itself, so
under JupyterHub another user's token gets 403):

| route | what |
|---|---|
| ``aispike/api/status`` | everything below in one document (what the lab extension polls) |
| ``aispike/api/slice`` | this server's slice: GPU model, memory limit, GPU indices, backend |
| ``aispike/api/usage`` | live GPU memory and utilisation per kernel, only this server's processes |
| ``aispike/api/service`` | idle warning state, notices and the user's quota (AISpike service) |

Enabled on install by ``jupyter-config/jupyter_server_config.d/aispike_hub.json`` (installed
into ``etc/jupyter``).  Configure it as ``c.AISpikeLab.<trait>``; the service view as
``c.ServiceView.<trait>`` and GPU activity reporting as ``c.GpuActivity.<trait>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.application import ExtensionApp
from tornado import httpclient, web
from traitlets import Enum, Float, Int, Unicode, default

from aispike_hub.agent.nvml import GpuProcess, GpuReading, MachineReading, read_machine
from aispike_hub.agent.procs import ProcessInfo, read_process_tree
from aispike_hub.model import Gpu
from aispike_hub.serverext.gpu_activity import SETTING as ACTIVITY_SETTING
from aispike_hub.serverext.gpu_activity import GpuActivity
from aispike_hub.serverext.service import ServiceView
from aispike_hub.serverext.slice import (
    SERVER_ROW,
    RowUse,
    ServerSlice,
    attribute,
    fill_level,
    server_slice,
)

API_VERSION = 1


def reading_from_agent(doc: Mapping[str, Any], user: str, server: str) -> MachineReading:
    """The node agent's ``/usage`` document as a reading of this server's processes only.

    Why: inside a pod NVML names processes by host PIDs, which the notebook cannot map to its
    kernels; the agent can, and reports each notebook's pids.  Other notebooks' rows are dropped
    here, before anything else sees them.
    """
    gpus = []
    for g in doc.get("gpus", []):
        try:
            gpu = Gpu(index=int(g["index"]), model=str(g.get("model") or "unknown"),
                      memory_mib=int(g["memory_total_mib"]), uuid=str(g.get("uuid", "")),
                      mig_profile=str(g.get("mig_profile") or ""))
        except (KeyError, TypeError, ValueError):
            continue
        gpus.append(GpuReading(gpu, int(g.get("memory_used_mib") or 0),
                               g.get("utilization_percent"), gpu.index))
    processes = []
    for nb in doc.get("notebooks", []):
        if nb.get("user") != user or (nb.get("server") or "") != server:
            continue
        pids = list(nb.get("pids") or [0])
        # The agent sums per notebook and GPU: give the sum to its first pid.
        for i, pid in enumerate(pids):
            processes.append(GpuProcess(
                int(nb.get("gpu_index", -1)), str(nb.get("gpu_uuid", "")), int(pid),
                int(nb.get("memory_used_mib") or 0) if i == 0 else 0,
                nb.get("utilization_percent") if i == 0 else None))
    nvml = doc.get("nvml") or {}
    return MachineReading(available=bool(nvml.get("available", bool(gpus))), gpus=tuple(gpus),
                          processes=tuple(processes), problems=tuple(nvml.get("problems", [])))


class AISpikeLab(ExtensionApp):
    """My slice, my live GPU use and my idle warnings, for the JupyterLab extension."""

    name = "aispike_hub.serverext"
    load_other_extensions = True

    usage_source = Enum(
        ["auto", "nvml", "agent"], "auto",
        help="""Where live GPU use comes from. nvml: this machine's NVML (or nvml_fixture),
        processes attributed to kernels through /proc. agent: the node agent's /usage document
        (agent_url), needed inside a pod, where NVML shows host PIDs. auto: agent when agent_url
        is set, else nvml.""",
    ).tag(config=True)

    nvml_fixture = Unicode(
        help="""Replay a recorded NVML machine (tests/fixtures/nvml/*.json) instead of the GPU
        driver: demos and tests. Default $AISPIKE_NVML_FIXTURE.""",
    ).tag(config=True)

    @default("nvml_fixture")
    def _nvml_fixture(self) -> str:
        return os.environ.get("AISPIKE_NVML_FIXTURE", "")

    fixture_pids = Enum(
        ["recorded", "kernels"], "recorded",
        help="""With nvml_fixture: 'recorded' keeps the recorded PIDs (they are nobody's here);
        'kernels' lets the recorded processes stand for this server's running kernels, in the
        order the kernels started (a recorded surface for demos and browser tests).""",
    ).tag(config=True)

    agent_url = Unicode(
        help="The node agent's usage document (default $AISPIKE_AGENT_URL).").tag(config=True)

    @default("agent_url")
    def _agent_url(self) -> str:
        return os.environ.get("AISPIKE_AGENT_URL", "")

    min_interval = Float(
        2.0, help="Seconds a GPU reading is reused (several tabs poll the same server).").tag(
        config=True)

    history_length = Int(
        120, help="Readings kept per kernel for the sparklines.").tag(config=True)

    warn_fraction = Float(
        0.8, help="A GPU of the slice this full (0-1) turns the status bar amber.").tag(
        config=True)

    full_fraction = Float(
        0.95, help="A GPU of the slice this full (0-1) turns it red and notifies.").tag(
        config=True)

    proc_root = Unicode("/proc", help="Where process information is read.").tag(config=True)

    user = Unicode(help="Hub user of this server; default $JUPYTERHUB_USER.").tag(config=True)

    @default("user")
    def _user(self) -> str:
        return os.environ.get("JUPYTERHUB_USER", "")

    server_name = Unicode(
        help="This server's name; default $JUPYTERHUB_SERVER_NAME ('' = default server)."
    ).tag(config=True)

    @default("server_name")
    def _server_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    # -- state ---------------------------------------------------------------------------------

    @property
    def server(self) -> Any:
        """The ServerApp (set once the extension is loaded)."""
        assert self.serverapp is not None
        return self.serverapp

    _nvml: Any = None
    _marks: dict[str, int]
    _cached: tuple[float, dict[str, Any]] | None = None
    _lock: asyncio.Lock | None = None

    def initialize_settings(self) -> None:
        self._marks = {}
        self.history: dict[str, deque[tuple[float, int, float | None]]] = {}
        self.service = ServiceView(parent=self, log=self.log)
        if self.nvml_fixture:
            from aispike_hub.agent.recorded import RecordedNvml

            self._nvml = RecordedNvml.from_file(self.nvml_fixture)
        self.settings["aispike_lab"] = self
        # GPU work counts as activity; unless gpu_activity is enabled on its own (it starts then).
        settings = self.server.web_app.settings
        if ("aispike_gpu_activity" not in settings
                and not self.server.jpserver_extensions.get("aispike_hub.serverext.gpu_activity")):
            reporter = GpuActivity(parent=self.server, log=self.log)
            settings["aispike_gpu_activity"] = reporter
            reporter.start(settings)

    def initialize_handlers(self) -> None:
        kw = {"lab": self}
        self.handlers.extend([
            (r"/aispike/api/status", StatusHandler, kw),
            (r"/aispike/api/slice", SliceHandler, kw),
            (r"/aispike/api/usage", UsageHandler, kw),
            (r"/aispike/api/service", ServiceHandler, kw),
        ])

    # -- reading -------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        if self.usage_source != "auto":
            return str(self.usage_source)
        return "agent" if self.agent_url and not self.nvml_fixture else "nvml"

    async def _kernels(self) -> list[dict[str, Any]]:
        """Running kernels, oldest first: id, name, state, pid, notebook path."""
        km = self.server.kernel_manager
        paths: dict[str, str] = {}
        try:
            for s in await self.server.session_manager.list_sessions():
                paths[s["kernel"]["id"]] = s.get("path") or s.get("name") or ""
        except Exception as e:
            self.log.debug("AISpike: sessions unavailable: %s", e)
        out = []
        for kid in list(km.list_kernel_ids()):
            try:
                kernel = km.get_kernel(kid)
            except KeyError:
                continue
            provisioner = getattr(kernel, "provisioner", None)
            pid = getattr(provisioner, "pid", None) or getattr(
                getattr(provisioner, "process", None), "pid", None)
            out.append({"id": kid, "name": getattr(kernel, "kernel_name", ""),
                        "state": getattr(kernel, "execution_state", ""),
                        "started": getattr(kernel, "aispike_started", None) or
                        _remember_start(kernel), "pid": int(pid) if pid else None,
                        "path": paths.get(kid, "")})
        out.sort(key=lambda k: (k["started"], k["id"]))
        return out

    async def _agent_reading(self) -> MachineReading:
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(self.agent_url, request_timeout=5)
            doc = json.loads(resp.body)
        except Exception as e:
            return MachineReading(available=False,
                                  problems=(f"node agent {self.agent_url} did not answer: {e}",))
        return reading_from_agent(doc, self.user, self.server_name)

    def _nvml_reading(self, kernel_pids: list[int]) -> MachineReading:
        marks = {} if self.nvml_fixture else self._marks  # a replay repeats its samples
        reading = read_machine(self._nvml, marks)
        if self.nvml_fixture and self.fixture_pids == "kernels":
            recorded = list(dict.fromkeys(p.pid for p in reading.processes))
            mapping = dict(zip(recorded, kernel_pids, strict=False))
            # Recorded processes left unmapped are other people's: move their pids above Linux's
            # pid_max (2**22) so that they can never match a live process of this server.
            reading = dataclasses.replace(reading, processes=tuple(
                dataclasses.replace(p, pid=mapping.get(p.pid, (1 << 23) + p.pid))
                for p in reading.processes))
        return reading

    async def status(self) -> dict[str, Any]:
        """Slice and live use (cached for ``min_interval``); the service part is separate."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.time()
            if self._cached and now - self._cached[0] < self.min_interval:
                return self._cached[1]
            doc = await self._read(now)
            self._cached = (now, doc)
            return doc

    async def _read(self, now: float) -> dict[str, Any]:
        kernels = await self._kernels()
        kernel_pids = [k["pid"] for k in kernels if k["pid"]]
        environ = dict(os.environ)
        if self.source == "agent":
            reading = await self._agent_reading()
        else:
            reading = await asyncio.to_thread(self._nvml_reading, kernel_pids)
        slice_ = server_slice(environ, reading.gpus, reading.available)
        tree: dict[int, ProcessInfo] = {}
        if reading.processes:
            tree = await asyncio.to_thread(
                read_process_tree, {p.pid for p in reading.processes}, self.proc_root)
        by_pid = {k["pid"]: k["id"] for k in kernels if k["pid"]}
        indices = [g.index for g in slice_.gpus] if slice_ and slice_.live else None
        rows = attribute(reading.processes, tree, by_pid, os.getpid(), indices)
        self._remember(now, kernels, rows)
        return {
            "version": API_VERSION,
            "time": now,
            "user": self.user,
            "server": self.server_name,
            "source": self.source,
            "nvml": {"available": reading.available, "problems": list(reading.problems)},
            "slice": slice_.as_dict() if slice_ else None,
            "usage": self._usage(slice_, kernels, rows),
            "thresholds": {"warn": self.warn_fraction, "full": self.full_fraction},
        }

    def _remember(self, now: float, kernels: list[dict[str, Any]],
                  rows: Mapping[str, RowUse]) -> None:
        keys = [k["id"] for k in kernels] + ([SERVER_ROW] if SERVER_ROW in rows else [])
        for key in keys:
            row = rows.get(key)
            book = self.history.setdefault(key, deque(maxlen=self.history_length))
            book.append((now, row.memory_used_mib if row else 0,
                         row.utilization_percent if row else None))
        for key in set(self.history) - set(keys):
            del self.history[key]

    def _usage(self, slice_: ServerSlice | None, kernels: list[dict[str, Any]],
               rows: Mapping[str, RowUse]) -> dict[str, Any]:
        def row_doc(key: str, extra: dict[str, Any]) -> dict[str, Any]:
            row = rows.get(key) or RowUse(key)
            return {**extra, "memory_used_mib": row.memory_used_mib,
                    "utilization_percent": row.utilization_percent, "pids": sorted(row.pids),
                    "by_gpu": {str(i): m for i, m in sorted(row.by_gpu.items())},
                    "history": [{"t": t, "memory_used_mib": m, "utilization_percent": u}
                                for t, m, u in self.history.get(key, ())]}

        out_kernels = [row_doc(k["id"], {"id": k["id"], "name": k["name"], "path": k["path"],
                                         "state": k["state"]}) for k in kernels]
        other = row_doc(SERVER_ROW, {"id": SERVER_ROW, "name": "other processes of this server",
                                     "path": "", "state": ""}) if SERVER_ROW in rows else None
        used_by_gpu: dict[int, int] = {}
        for row in rows.values():
            for i, m in row.by_gpu.items():
                used_by_gpu[i] = used_by_gpu.get(i, 0) + m
        gpus = []
        level = "ok"
        for g in slice_.gpus if slice_ else ():
            used = used_by_gpu.get(g.index, 0)
            lvl = fill_level(used, g.limit_mib, self.warn_fraction, self.full_fraction)
            level = max(level, lvl, key=("ok", "warn", "full").index)
            gpus.append({"index": g.index, "used_mib": used, "limit_mib": g.limit_mib,
                         "fraction": round(used / g.limit_mib, 4) if g.limit_mib else 0.0,
                         "level": lvl})
        utils = [r.utilization_percent for r in rows.values()
                 if r.utilization_percent is not None]
        return {
            "memory_used_mib": sum(used_by_gpu.values()),
            "memory_limit_mib": slice_.limit_mib if slice_ else 0,
            "utilization_percent": min(100.0, sum(utils)) if utils else None,
            "level": level,
            "gpus": gpus,
            "kernels": out_kernels,
            "other": other,
            "last_gpu_activity": _iso(self.server.web_app.settings.get(ACTIVITY_SETTING)),
        }


def _remember_start(kernel: Any) -> float:
    started = time.time()
    with contextlib.suppress(AttributeError):
        kernel.aispike_started = started
    return started


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


class _Handler(APIHandler):
    lab: AISpikeLab

    def initialize(self, lab: AISpikeLab) -> None:
        self.lab = lab

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def reply(self, doc: Any) -> None:
        self.finish(json.dumps(doc, default=str))


class StatusHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        doc = await self.lab.status()
        self.reply({**doc, **await self.lab.service.read()})


class SliceHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        doc = await self.lab.status()
        self.reply({k: doc[k] for k in ("version", "user", "server", "nvml", "slice")})


class UsageHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        doc = await self.lab.status()
        self.reply({k: doc[k] for k in ("version", "time", "source", "usage", "thresholds")})


class ServiceHandler(_Handler):
    @web.authenticated
    async def get(self) -> None:
        self.reply(await self.lab.service.read())
