"""What the placer's ask costs: admission's ``place`` (a fresh place for an admitted server) vs
``admit``, on one controller over a synthetic cluster (sqlite in memory, no network).

Not a test: prints a table.  ``place`` is what the hub's placer waits for when the ticket's
assignment no longer fits its view or a pin went stale (issue 18; docs/architecture.md).

    python benchmarks/replace.py                       # 50 nodes x 8 GPUs, 300 admitted servers
    python benchmarks/replace.py --nodes 200 --servers 1000
"""

from __future__ import annotations

import argparse
import statistics
import time

from aispike_hub.admission.controller import AdmissionController
from aispike_hub.admission.inventory import StaticInventory
from aispike_hub.admission.replace import claimed_request
from aispike_hub.model import GIB_IN_MIB, Gpu, Node, SliceRequest
from aispike_hub.quota import User, policy_from_dict
from aispike_hub.service.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--servers", type=int, default=300)
    parser.add_argument("--asks", type=int, default=200)
    args = parser.parse_args()
    nodes = [Node(f"n{i}", 128_000, 1024 * GIB_IN_MIB,
                  tuple(Gpu(g, "NVIDIA A100-SXM4-80GB", 80 * GIB_IN_MIB, uuid=f"n{i}-{g}",
                            nvlink_domain=f"n{i}-nvl{g // 4}") for g in range(args.gpus)))
             for i in range(args.nodes)]
    controller = AdmissionController(Store("sqlite://"), StaticInventory(nodes),
                                     policy_from_dict({}), rounding=claimed_request)
    sizes = (4, 8, 12, 16, 20, 40)
    admit_s: list[float] = []
    for k in range(args.servers):
        request = SliceRequest(gpu_memory_mib=sizes[k % len(sizes)] * GIB_IN_MIB - 512)
        started = time.perf_counter()
        ticket = controller.admit(User(f"u{k}"), "", request, "bench")
        admit_s.append(time.perf_counter() - started)
        assert ticket.state == "admitted", ticket
    place_s: list[float] = []
    for k in range(args.asks):
        started = time.perf_counter()
        answer = controller.place(f"u{k % args.servers}", "", "bench",
                                  prefer_node=f"n{k % args.nodes}")
        place_s.append(time.perf_counter() - started)
        assert answer["placed"], answer

    def ms(xs: list[float], q: float) -> float:
        return 1000 * statistics.quantiles(xs, n=100)[int(q) - 1]

    print(f"{args.nodes} nodes x {args.gpus} GPUs, {args.servers} admitted servers")
    print("| call | n | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, xs in (("admit", admit_s), ("place", place_s)):
        print(f"| {name} | {len(xs)} | {ms(xs, 50):.1f} | {ms(xs, 99):.1f} |")


if __name__ == "__main__":
    main()
