"""A node agent's ``/usage`` endpoint serving recorded GPU metrics (tests of the idle monitor).

The documents are built by the agent's own code (``read_machine`` -> ``notebook_usage`` ->
``usage_document``) from the NVML recording of a real H200 (tests/fixtures/nvml/h200-1gpu.json:
one notebook process holding 4.4 GiB at 91 % SM utilisation).  Each notebook a test places on a
node gets that recorded process: ``busy`` as recorded, ``idle`` with the same memory and no
utilisation (a kernel that holds GPU memory and computes nothing).  A node in ``down`` answers
503, as an agent that is restarting.  A tiny real HTTP server, nothing mocked in the monitor.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aispike_hub.agent.metrics import Snapshot, notebook_usage, usage_document
from aispike_hub.agent.nvml import read_machine
from aispike_hub.agent.procs import Owner
from aispike_hub.agent.recorded import RecordedNvml

H200 = Path(__file__).resolve().parents[1] / "fixtures" / "nvml" / "h200-1gpu.json"


def usage_doc(node: str, notebooks: Sequence[tuple[str, str, str]], now: float) -> dict[str, Any]:
    """The agent's document for ``node`` with ``(user, server, "busy" | "idle")`` notebooks."""
    reading = read_machine(RecordedNvml.from_file(H200))
    recorded = reading.processes[0]
    procs, owners = [], {}
    for i, (user, server, kind) in enumerate(notebooks):
        pid = recorded.pid + i
        util = recorded.sm_utilization_percent if kind == "busy" else 0.0
        procs.append(replace(recorded, pid=pid, sm_utilization_percent=util))
        owners[pid] = Owner(pod=f"jupyter-{user}", namespace="hub", user=user, server=server)
    return usage_document(Snapshot(node, now, reading, tuple(notebook_usage(procs, owners))))


def send_json(handler: BaseHTTPRequestHandler, document: Any, status: int = 200) -> None:
    """Answer a stand-in server's request with ``document`` as JSON."""
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class RecordedAgent:
    """``GET /<node>/usage`` for any number of nodes, on a loopback port."""

    def __init__(self) -> None:
        self.nodes: dict[str, list[tuple[str, str, str]]] = {}
        self.down: set[str] = set()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                node = self.path.strip("/").split("/")[0]
                if node in agent.down or node not in agent.nodes:
                    self.send_error(503, "agent restarting")
                    return
                send_json(self, usage_doc(node, agent.nodes[node], time.time()))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RecordedAgent:
        self.thread.start()
        return self

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{node}/usage"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
