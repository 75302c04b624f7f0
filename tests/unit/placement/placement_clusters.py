"""Small clusters as plain data for placement tests (imported by basename, as pytest does)."""

from __future__ import annotations

from aispike_hub.model import Gpu, Node

GIB = 1024


def make_node(name: str, gpus: int = 4, model: str = "A100", gib: int = 80, cpu: int = 64000,
              ram: int = 512 * GIB, nvlink: list[str] | None = None,
              pcie: list[str] | None = None, numa: list[int] | None = None,
              **extra: object) -> Node:
    return Node(
        name=name, cpu_milli=cpu, memory_mib=ram,
        gpus=tuple(
            Gpu(index=i, model=model, memory_mib=gib * GIB, uuid=f"GPU-{name}-{i}",
                nvlink_domain=(nvlink[i] if nvlink else ""),
                pcie_switch=(pcie[i] if pcie else ""),
                numa_node=(numa[i] if numa else -1))
            for i in range(gpus)
        ),
        **extra,  # type: ignore[arg-type]
    )


