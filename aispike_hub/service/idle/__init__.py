"""The idle monitor inside the AISpike service: signals, the monitor, its REST API.

* :mod:`.signals`: agent usage documents and kernel answers turned into per-server signals
  (GPU samples with gaps, kernel state, last activity); no I/O.
* :mod:`.monitor`: :class:`IdleMonitor` polls the hub (through
  :class:`~aispike_hub.service.hubclient.HubClient`), the agents and the kernels, asks the pure
  policy (:mod:`aispike_hub.idle.policy`) and warns, stops, removes and reports.
* :mod:`.handlers`: ``api/idle/report`` and ``api/idle/servers/<user>/<server>``.

Every name of the former ``aispike_hub.service.idle`` module is importable from here.
"""

from aispike_hub.service.idle.handlers import (
    IDLE_SCOPE,
    IdleReportHandler,
    IdleServerHandler,
    idle_handlers,
)
from aispike_hub.service.idle.monitor import Hook, IdleMonitor, ServerEntry
from aispike_hub.service.idle.signals import (
    KernelAnswer,
    SampleBook,
    ServerGpuUse,
    ServerKey,
    SourceState,
    iso,
    kernel_signals,
    parse_time,
    server_signals,
    usage_by_server,
    with_user_activity,
)

__all__ = [
    "IDLE_SCOPE",
    "Hook",
    "IdleMonitor",
    "IdleReportHandler",
    "IdleServerHandler",
    "KernelAnswer",
    "SampleBook",
    "ServerEntry",
    "ServerGpuUse",
    "ServerKey",
    "SourceState",
    "idle_handlers",
    "iso",
    "kernel_signals",
    "parse_time",
    "server_signals",
    "usage_by_server",
    "with_user_activity",
]
