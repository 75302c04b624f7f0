"""The policies shown in docs/quotas.md and the README are valid and behave as the text says."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aispike_hub.model import SliceRequest
from aispike_hub.quota import ClusterView, Server, User, Verdict, admit, policy_from_dict

REPO = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"```python\n(c\.AISpikeService\.policy = .*?)\n```", re.S)


def policies(path: Path) -> list[dict[str, Any]]:
    out = []
    for block in BLOCK.findall(path.read_text()):
        c = SimpleNamespace(AISpikeService=SimpleNamespace())
        exec(block, {"c": c})
        out.append(c.AISpikeService.policy)
    return out


def test_documented_policies_parse() -> None:
    docs = policies(REPO / "docs" / "quotas.md")
    assert len(docs) == 2
    overview = policies(REPO / "docs" / "overview.md")
    assert len(overview) == 1
    for doc in docs + overview:
        policy_from_dict(doc)


def test_course_example_behaves_as_documented() -> None:
    course = policy_from_dict(policies(REPO / "docs" / "quotas.md")[0])
    student = User("s1", frozenset({"ml101"}))
    running = [Server("s1", "", _charge(10240), "normal", 100)]
    image = "registry.example.edu/ml101:2026"
    second = admit(student, SliceRequest(gpu_memory_mib=4096, image=image), running,
                   ClusterView(True, (), 81920), course, server_name="two")
    assert second.verdict is Verdict.REFUSE
    assert "you use 1 of 1 server in your default server" in " ".join(second.reasons)
    other_image = admit(student, SliceRequest(gpu_memory_mib=4096, image="x/y"), [],
                        ClusterView(True, (), 81920), course)
    assert "image 'x/y' is not one you may use" in other_image.reasons[0]


def _charge(mib: int) -> Any:
    from aispike_hub.quota import Amounts

    return Amounts(gpu_memory_mib=mib, gpus=1, servers=1)
