"""Small clusters for the service's tests."""

from __future__ import annotations

from aispike_hub.model import Gpu, Node

GIB = 1024


def a100_nodes(n_nodes: int = 1, gpus: int = 1, gib: int = 80) -> list[Node]:
    return [
        Node(f"node-{i}", 64_000, 512 * GIB,
             tuple(Gpu(g, "NVIDIA A100-SXM4-80GB", gib * GIB, uuid=f"GPU-{i}-{g}")
                   for g in range(gpus)))
        for i in range(n_nodes)
    ]
