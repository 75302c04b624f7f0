"""Two hubs on one cluster: hub ids in aispike.io/hub-server, old values = the default hub."""

from __future__ import annotations

import pytest
from test_coexist import cluster, gpu_pod

from aispike_hub.kube import claims
from aispike_hub.kube.identity import (
    hub_id_for,
    hub_server_value,
    split_hub_server,
    valid_hub_id,
)


def test_values_name_the_hub_and_old_values_belong_to_the_default_hub() -> None:
    assert hub_server_value("alice/train", "jhub.aispike") == "jhub.aispike:alice/train"
    assert hub_server_value("alice/train") == "alice/train"
    assert split_hub_server("jhub.aispike:alice/train") == ("jhub.aispike", "alice/train")
    assert split_hub_server("alice/train") == ("", "alice/train")
    # A user name with a colon is not taken for a hub id.
    assert split_hub_server("Bob:x/train") == ("", "Bob:x/train")
    assert split_hub_server("a/b:c/d") == ("", "a/b:c/d")
    assert hub_id_for("jhub", "aispike") == "jhub.aispike"
    assert hub_id_for("jhub") == "jhub"
    assert hub_id_for("jhub", "x", configured="lab-1") == "lab-1"
    assert valid_hub_id("") and not valid_hub_id("Lab 1")
    with pytest.raises(ValueError):
        hub_id_for("jhub", configured="no/slashes")


def test_each_hub_counts_its_own_servers_and_the_other_hubs_as_taken() -> None:
    inv = cluster()
    inv._apply("pods", "ADDED", gpu_pod("a", limits={"nvidia.com/gpu": "1"}, annotations={
        claims.HUB_SERVER_ANNOTATION: "alice/"}))
    inv._apply("pods", "ADDED", gpu_pod("b", limits={"nvidia.com/gpu": "1"}, annotations={
        claims.HUB_SERVER_ANNOTATION: "lab-2:bob/"}))
    ours, other = inv.usage_by_server()
    assert list(ours) == ["alice/"] and sum(a.anonymous_gpus for a in other) == 1
    inv.hub_id = "lab-2"
    ours, other = inv.usage_by_server()
    assert list(ours) == ["bob/"] and sum(a.anonymous_gpus for a in other) == 1
