"""How the policy schema gets into the chart (:func:`embed`, ``python -m ...schema``), exactly.

``test_quota_schema.py`` checks that the schema and the parser agree on documents; these cases
pin the tool that writes the schema into ``values.schema.json``: the chart's description of the
policy value is kept (or empty when the chart has none), and the command's usage, exit status
and output file.  Written from the survivors of a mutation run over ``quota/schema.py``
(docs/testing.md), where ``main`` had no test at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aispike_hub.quota.schema import embed, main, policy_schema


def chart(service: dict[str, Any]) -> dict[str, Any]:
    """A chart values schema, as deep as ``aispike.service`` (where the policy lives)."""
    return {"properties": {"aispike": {"properties": {"service": {"properties": service}}}},
            "title": "values"}


def policy_of(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = doc["properties"]["aispike"]["properties"]["service"]["properties"][
        "policy"]
    return out


EMBED = [
    ("description-kept", {"policy": {"type": "object", "description": "The quota policy."},
                          "port": {"type": "integer"}}, "The quota policy."),
    ("no-description", {"policy": {"type": "object"}}, ""),
    ("no-policy-yet", {}, ""),
]


@pytest.mark.parametrize(("service", "description"), [c[1:] for c in EMBED],
                         ids=[c[0] for c in EMBED])
def test_embed_replaces_the_policy_and_keeps_its_description(service: dict[str, Any],
                                                             description: str) -> None:
    """Rule: the policy value becomes the generated schema with the chart's own description
    (an empty one when the chart gives none); the rest of the chart is untouched."""
    doc = embed(chart(dict(service)))
    assert policy_of(doc) == {**policy_schema(), "description": description}
    assert doc["title"] == "values"
    others = doc["properties"]["aispike"]["properties"]["service"]["properties"]
    assert set(others) == set(service) | {"policy"}
    if "port" in service:
        assert others["port"] == {"type": "integer"}


def test_the_command_rewrites_the_chart_schema(tmp_path: Path) -> None:
    """Rule: ``python -m aispike_hub.quota.schema PATH`` rewrites PATH in place (two-space JSON,
    a final newline) and exits 0."""
    path = tmp_path / "values.schema.json"
    path.write_text(json.dumps(chart({"policy": {"description": "d"}})))
    assert main([str(path)]) == 0
    text = path.read_text()
    assert text == json.dumps(embed(chart({"policy": {"description": "d"}})), indent=2) + "\n"


@pytest.mark.parametrize("argv", [[], ["a.json", "b.json"]])
def test_the_command_needs_exactly_one_path(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Rule: without exactly one path the command prints its usage to stderr and exits 2."""
    assert main(argv) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == (
        "", "usage: python -m aispike_hub.quota.schema PATH/values.schema.json\n")
