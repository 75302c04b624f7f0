"""Fuzz every parser of cluster objects and annotations (hypothesis): no crash, no stall.

Each parser either returns its record or raises :class:`aispike_hub.sanity.Rejected` (a
``ValueError``); nothing else escapes, and one example takes well under a second.  The inputs
mix the hostile values of issue 26 (``Infinity``, deep nesting, non-object entries, 5,000-digit
numbers, negative CPU, 10^24 MiB GPUs) into otherwise valid objects.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aispike_hub import sanity
from aispike_hub.kube.objects import parse_claim, parse_node, parse_pod, parse_slice
from aispike_hub.kube.slices import parse_datasets_annotation
from aispike_hub.units import QuantityError, parse_quantity

HOSTILE: list[Any] = [
    None, True, -1, 0, 10**24, 10**4000, -(10**300), float("inf"), float("nan"), 1e308, "",
    "Infinity", "NaN", "-1", "-500m", "1e999999", "9" * 5000, "1" * 300 + "Gi", "\x00",
    "x" * 5000, [], {}, [[[[[]]]]], {"a": {"b": {}}}, "1Ei", "16Gi", "64", "[" * 5000,
]
hostile = st.one_of(st.sampled_from(HOSTILE), st.just(0).map(lambda _: 10**5000))
scalar = st.one_of(hostile, st.integers(), st.text(max_size=30), st.floats())
json_like = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
FUZZ = settings(max_examples=60, deadline=None, derandomize=True)


def dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except ValueError:  # json cannot write a 5,000-digit int either
        return "[" + "9" * 5000 + "]"


def deep(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


def mutate(base: dict[str, Any], paths: list[tuple[str, ...]], values: list[Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    for path, value in zip(paths, values, strict=False):
        target = doc
        for key in path[:-1]:
            nxt = target.get(key) if isinstance(target, dict) else None
            if not isinstance(nxt, dict):
                nxt = {}
                target[key] = nxt
            target = nxt
        target[path[-1]] = value
    return doc


def bounded(call: Any, *args: Any) -> Any:
    start = time.monotonic()
    try:
        return call(*args)
    except sanity.Rejected:
        return None
    except ValueError as e:  # a QuantityError or another ValueError subclass is a refusal too
        assert isinstance(e, ValueError)
        return None
    finally:
        assert time.monotonic() - start < 2.0, "a parser stalled"


NODE = {"metadata": {"name": "n1", "labels": {"a": "b"},
                     "annotations": {"aispike.io/datasets": '[{"name":"d","bytes":1}]'}},
        "spec": {"taints": []},
        "status": {"allocatable": {"cpu": "8", "memory": "64Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "images": [{"names": ["img"], "sizeBytes": 10}]}}
NODE_PATHS = [("metadata", "name"), ("status", "allocatable", "cpu"),
              ("status", "allocatable", "memory"), ("status", "images"),
              ("metadata", "annotations", "aispike.io/datasets"), ("spec", "taints"),
              ("status", "conditions"), ("metadata", "labels"), ("status",), ("metadata",)]
SLICE = {"metadata": {"name": "s"}, "spec": {
    "driver": "gpu.aispike.io", "nodeName": "n1", "pool": {"name": "n1", "generation": 1},
    "devices": [{"name": "gpu-0", "attributes": {"uuid": {"string": "GPU-0"},
                                                 "model": {"string": "A100"},
                                                 "index": {"int": 0}},
                 "capacity": {"memory": {"value": "80Gi"}}}]}}
SLICE_PATHS = [("spec", "devices"), ("spec", "pool", "generation"), ("spec", "nodeName"),
               ("spec", "pool"), ("metadata", "name"), ("spec",)]
POD = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {
    "nodeName": "n1", "containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
    "status": {"phase": "Running"}}
POD_PATHS = [("spec", "containers"), ("spec", "initContainers"), ("spec", "overhead"),
             ("status", "conditions"), ("spec", "resourceClaims"), ("metadata", "labels")]
CLAIM = {"metadata": {"name": "c", "namespace": "ns", "labels": {
    "app.kubernetes.io/managed-by": "aispike-hub", "aispike.io/server": "u"},
    "annotations": {"aispike.io/placement": "{}", "aispike.io/request": "{}"}},
    "status": {"allocation": {"devices": {"results": [
        {"driver": "gpu.aispike.io", "pool": "n1", "device": "gpu-0",
         "consumedCapacity": {"memory": "8Gi"}}]}}}}
CLAIM_PATHS = [("status", "allocation", "devices", "results"), ("metadata", "annotations",
               "aispike.io/placement"), ("metadata", "annotations", "aispike.io/request"),
               ("status", "reservedFor"), ("metadata", "ownerReferences"),
               ("metadata", "finalizers"), ("status", "allocation")]


def values(n: int) -> Any:
    return st.lists(st.one_of(json_like, st.just(0).map(lambda _: deep(200)),
                              st.lists(json_like, max_size=3)), min_size=1, max_size=n)


@FUZZ
@given(st.lists(st.sampled_from(NODE_PATHS), min_size=1, max_size=3), values(3))
def test_parse_node_never_crashes(paths: list[tuple[str, ...]], vals: list[Any]) -> None:
    info = bounded(parse_node, mutate(NODE, paths, vals))
    if info is not None:
        assert 0 <= info.cpu_milli <= sanity.MAX_NODE_CPU_MILLI
        assert 0 <= info.memory_mib <= sanity.MAX_NODE_MEMORY_MIB


@FUZZ
@given(st.lists(st.sampled_from(SLICE_PATHS), min_size=1, max_size=3), values(3))
def test_parse_slice_never_crashes(paths: list[tuple[str, ...]], vals: list[Any]) -> None:
    start = time.monotonic()
    info, problems = parse_slice(mutate(SLICE, paths, vals))
    assert time.monotonic() - start < 2.0
    assert all(isinstance(p, str) and len(p) < 2000 for p in problems)
    if info is not None:
        assert len({g.uuid for g in info.gpus}) == len(info.gpus)
        assert all(0 < g.memory_mib <= sanity.MAX_GPU_MEMORY_MIB for g in info.gpus)


@FUZZ
@given(st.lists(st.sampled_from(POD_PATHS), min_size=1, max_size=3), values(3))
def test_parse_pod_never_crashes(paths: list[tuple[str, ...]], vals: list[Any]) -> None:
    info = bounded(parse_pod, mutate(POD, paths, vals))
    if info is not None:
        assert 0 <= info.cpu_milli <= sanity.MAX_NODE_CPU_MILLI


@FUZZ
@given(st.lists(st.sampled_from(CLAIM_PATHS), min_size=1, max_size=3), values(3))
def test_parse_claim_never_crashes(paths: list[tuple[str, ...]], vals: list[Any]) -> None:
    bounded(parse_claim, mutate(CLAIM, paths, vals))


@FUZZ
@given(st.one_of(json_like.map(dumps), st.text(max_size=50),
                 st.sampled_from(["[" * 5000, '[{"name":"d","bytes":Infinity}]',
                                  '[{"name":"d","bytes":' + "9" * 5000 + "}]", '["x"]',
                                  '[{"name":"\\u0000","bytes":1}]'])))
def test_datasets_annotation_never_crashes(text: str) -> None:
    out = bounded(parse_datasets_annotation, text)
    if out:
        assert all(0 <= v <= sanity.MAX_BYTES for v in out.values())


@FUZZ
@given(st.one_of(scalar, st.text(alphabet="0123456789.eE+-KMGTPimnuk", max_size=80)))
def test_parse_quantity_refuses_with_a_short_message(value: Any) -> None:
    try:
        parse_quantity(value)
    except QuantityError as e:
        assert len(str(e)) < 400


def test_hostile_examples_of_issue_26_are_refused_not_raised() -> None:
    node = mutate(NODE, [("metadata", "annotations", "aispike.io/datasets")],
                  ['[{"name":"d","bytes":Infinity}]'])
    assert parse_node(node).datasets == ()  # the annotation is dropped, the node kept
    node = mutate(NODE, [("status", "images")], [["not an object", {"names": ["i"],
                                                                   "sizeBytes": 5}]])
    assert parse_node(node).images == (("i", 5),)
    for cpu in ("-1", "9" * 5000, "1e999999"):
        assert bounded(parse_node, mutate(NODE, [("status", "allocatable", "cpu")], [cpu])) is None
    dup = json.loads(json.dumps(SLICE))
    second = json.loads(json.dumps(dup["spec"]["devices"][0]))
    second["name"], second["attributes"]["index"] = "gpu-1", {"int": 1}
    dup["spec"]["devices"].append(second)
    info, problems = parse_slice(dup)
    assert info is not None and len(info.gpus) == 1 and "duplicate uuid" in problems[0]
    huge = mutate(SLICE, [("spec", "devices")], [[{**SLICE["spec"]["devices"][0],
                                                   "capacity": {"memory": {"value": "1Ei"}}}]])
    info, problems = parse_slice(huge)
    assert info is not None and info.gpus == () and "out of range" in problems[0]
