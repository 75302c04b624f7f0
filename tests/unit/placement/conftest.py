"""Fixtures of small clusters for placement tests."""

from __future__ import annotations

import pytest
from placement_clusters import make_node

from aispike_hub.model import Node


@pytest.fixture
def two_nodes() -> list[Node]:
    return [make_node("a"), make_node("b", model="H100", gib=80)]
