"""Two hubs on one cluster: hub ids in aispike.io/hub-server, old values = the default hub."""

from __future__ import annotations

import pytest
from test_coexist import cluster, gpu_pod

from aispike_hub.contract import HUB_ID_LABEL
from aispike_hub.kube import claims, inventory
from aispike_hub.kube.identity import (
    belongs,
    hub_id_for,
    hub_id_from_env,
    hub_server_value,
    owns_unnamed_from_env,
    split_hub_server,
    valid_hub_id,
)
from aispike_hub.model import SliceRequest


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


# -- where the id comes from, and who owns values without one (issue 26 item 4) ---------------

@pytest.mark.parametrize(("env", "expected"), [
    ({}, ""),
    ({"POD_NAMESPACE": "jhub"}, ""),  # a namespace alone is not an id: the default hub
    ({"POD_NAMESPACE": "jhub", "AISPIKE_HELM_RELEASE": "aispike"}, "jhub.aispike"),
    ({"POD_NAMESPACE": "jhub", "AISPIKE_HELM_RELEASE": "aispike", "AISPIKE_HUB_ID": "lab-1"},
     "lab-1"),
    ({"AISPIKE_HUB_ID": " Lab-2 "}, "lab-2"),
])
def test_the_hub_id_comes_from_the_environment_the_chart_sets(
        env: dict[str, str], expected: str) -> None:
    assert hub_id_from_env(env) == expected


def test_a_hub_id_that_cannot_be_a_label_stops_the_start() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        hub_id_from_env({"AISPIKE_HUB_ID": "lab/1"})
    with pytest.raises(ValueError):
        hub_id_from_env({"AISPIKE_HUB_ID": "x" * 64})


@pytest.mark.parametrize(("value", "hub", "owns_unnamed", "mine"), [
    ("lab-1:alice/", "lab-1", False, True),
    ("lab-2:alice/", "lab-1", False, False),
    ("lab-2:alice/", "lab-1", True, False),  # owning unnamed values never takes a named one
    ("lab-1:alice/", "", False, False),  # the default hub does not own named values
    ("alice/", "", False, True),  # an old value: the default hub's
    ("alice/", "lab-1", False, False),  # ... not a named hub's
    ("alice/", "lab-1", True, True),  # ... unless it was upgraded in place
    ("", "", False, True),  # no annotation at all: the default hub's (a claim of an old Placer)
    ("", "lab-1", False, False),
])
def test_belongs(value: str, hub: str, owns_unnamed: bool, mine: bool) -> None:
    assert belongs(value, hub, owns_unnamed) is mine


@pytest.mark.parametrize(("env", "owns"), [
    ({}, False), ({"AISPIKE_HUB_OWNS_UNNAMED": "true"}, True),
    ({"AISPIKE_HUB_OWNS_UNNAMED": "1"}, True), ({"AISPIKE_HUB_OWNS_UNNAMED": "no"}, False),
])
def test_owning_unnamed_values_is_an_explicit_choice(env: dict[str, str], owns: bool) -> None:
    assert owns_unnamed_from_env(env) is owns


def test_a_claim_names_its_hub_in_the_annotation_and_a_label() -> None:
    placement = claims.Placement("n0", (claims.PinnedGpu("GPU-a0", 0, 8192),), False, 1000,
                                 1024)
    request = SliceRequest(gpu_count=1, gpu_memory_mib=8192, cpu_milli=1000, memory_mib=1024)
    named = claims.pinned_claim("jupyter-alice", placement, request,
                                hub_server=hub_server_value("alice/", "lab-1"))
    meta = named["metadata"]
    assert meta["annotations"][claims.HUB_SERVER_ANNOTATION] == "lab-1:alice/"
    assert meta["labels"][HUB_ID_LABEL] == "lab-1"
    old = claims.pinned_claim("jupyter-alice", placement, request, hub_server="alice/")
    assert old["metadata"]["annotations"][claims.HUB_SERVER_ANNOTATION] == "alice/"
    assert HUB_ID_LABEL not in old["metadata"]["labels"]
    # what the inventory reads back is the same value
    assert inventory.parse_claim({**named, "metadata": {**meta, "namespace": "ns", "uid": "u",
                                                        "resourceVersion": "1"}}
                                 ).hub_server == "lab-1:alice/"


def test_the_inventory_reads_its_hub_from_the_environment_and_refuses_a_bad_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISPIKE_HUB_ID", "lab-1")
    monkeypatch.setenv("AISPIKE_HUB_OWNS_UNNAMED", "true")
    inv = cluster()
    assert inv.hub_id == "lab-1" and inv.owns_unnamed
    assert inv.belongs("lab-1:a/") and inv.belongs("a/") and not inv.belongs("lab-2:a/")
    from traitlets import TraitError
    with pytest.raises(TraitError, match="hub_id"):
        inv.hub_id = "Not A Label"


def test_an_upgraded_hub_that_owns_unnamed_values_counts_its_old_servers_as_its_own() -> None:
    inv = cluster()
    inv._apply("pods", "ADDED", gpu_pod("a", limits={"nvidia.com/gpu": "1"}, annotations={
        claims.HUB_SERVER_ANNOTATION: "alice/"}))
    inv._apply("pods", "ADDED", gpu_pod("b", limits={"nvidia.com/gpu": "1"}, annotations={
        claims.HUB_SERVER_ANNOTATION: "lab-1:bob/"}))
    inv._apply("pods", "ADDED", gpu_pod("c", limits={"nvidia.com/gpu": "1"}, annotations={
        claims.HUB_SERVER_ANNOTATION: "lab-2:carol/"}))
    inv.hub_id = "lab-1"
    ours, other = inv.usage_by_server()
    assert sorted(ours) == ["bob/"] and sum(a.anonymous_gpus for a in other) == 2
    inv.owns_unnamed = True
    ours, other = inv.usage_by_server()
    assert sorted(ours) == ["alice/", "bob/"] and sum(a.anonymous_gpus for a in other) == 1
