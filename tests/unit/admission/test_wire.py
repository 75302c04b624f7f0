"""Admission's one wire codec: REST field names, the claim annotation's camelCase, both read."""

from __future__ import annotations

import json

import pytest

from aispike_hub.admission.wire import (
    ANY_STYLE,
    REQUEST_FIELDS,
    KeyStyle,
    RequestError,
    Ticket,
    assignment_from_dict,
    assignment_to_dict,
    request_from_dict,
    request_to_dict,
)
from aispike_hub.kube import claims
from aispike_hub.model import Assignment, SliceRequest

FULL = SliceRequest(gpu_count=1, gpu_memory_mib=8192,
                    allowed_models=frozenset({"B", "A"}), cpu_milli=1500, memory_mib=4096,
                    image="quay.io/x/y:1", datasets=("imagenet", "coco"))
WHOLE = SliceRequest(gpu_count=2)
SHARE = SliceRequest(gpu_share_milli=250, allowed_models=frozenset({"A"}))


def test_rest_documents_keep_the_field_names_the_api_has_always_accepted() -> None:
    assert request_to_dict(FULL) == {
        "gpu_count": 1, "gpu_memory_mib": 8192, "gpu_share_milli": 0, "cpu_milli": 1500,
        "memory_mib": 4096, "allowed_models": ["A", "B"], "image": "quay.io/x/y:1",
        "datasets": ["imagenet", "coco"],
    }
    assert {snake for snake, _ in REQUEST_FIELDS} == set(request_to_dict(FULL))


def test_the_claim_annotation_is_written_exactly_as_before() -> None:
    # The text objects already in clusters carry (and older replicas read).
    assert claims.request_to_json(FULL) == (
        '{"allowedModels":["A","B"],"cpuMilli":1500,"datasets":["imagenet","coco"],'
        '"gpuCount":1,"gpuMemoryMiB":8192,"gpuShareMilli":0,"image":"quay.io/x/y:1",'
        '"memoryMiB":4096}')


@pytest.mark.parametrize("request_", [FULL, WHOLE, SHARE, SliceRequest(gpu_count=0)])
@pytest.mark.parametrize("style", list(KeyStyle))
def test_every_style_round_trips(request_: SliceRequest, style: KeyStyle) -> None:
    doc = json.loads(json.dumps(request_to_dict(request_, style)))
    assert request_from_dict(doc, (style,)) == request_
    assert request_from_dict(doc, ANY_STYLE) == request_


def test_the_annotation_reads_either_style() -> None:
    snake = json.dumps(request_to_dict(FULL))
    camel = claims.request_to_json(FULL)
    assert claims.request_from_json(snake) == claims.request_from_json(camel) == FULL


def test_the_rest_api_reads_snake_case_only() -> None:
    with pytest.raises(RequestError) as raised:
        request_from_dict(request_to_dict(FULL, KeyStyle.CAMEL))
    assert raised.value.field.startswith("request.") and "unknown field" in raised.value.message


@pytest.mark.parametrize(("doc", "field_name"), [
    ({"gpuCount": -1}, "request.gpuCount"),
    ({"gpuMemoryMiB": "8Gi"}, "request.gpuMemoryMiB"),
    ({"gpuCount": 65}, "request.gpuCount"),
    ({"allowedModels": "A100"}, "request.allowedModels"),
    ({"gpuCount": 1, "gpu_count": 1}, "request.gpu_count"),
    ({"gpuCount": True}, "request.gpuCount"),
    ({"bogus": 1}, "request.bogus"),
    ("[]", "request"),
])
def test_errors_name_the_field_as_the_document_spelled_it(doc: object, field_name: str) -> None:
    with pytest.raises(RequestError) as raised:
        request_from_dict(doc, ANY_STYLE)
    assert raised.value.field == field_name


def test_a_damaged_annotation_is_a_value_error_naming_the_annotation() -> None:
    for text in ("{", '{"gpuCount": "x"}', "[]"):
        with pytest.raises(ValueError, match=r"bad aispike\.io/request annotation"):
            claims.request_from_json(text)


def test_missing_fields_take_the_defaults_in_every_style() -> None:
    assert request_from_dict({}) == request_from_dict({}, ANY_STYLE) == SliceRequest()


def test_assignments_and_tickets_travel_as_plain_json() -> None:
    a = Assignment(node="n1", gpu_indices=(0, 2), gpu_memory_mib=(8192, 8192), cpu_milli=500,
                   memory_mib=1024, owner="ada/train")
    doc = json.loads(json.dumps(assignment_to_dict(a)))
    assert assignment_from_dict(doc) == a
    ticket = Ticket("ada", "train", "admitted", ["ok"], assignment=doc, charge={"gpus": 1})
    assert json.loads(json.dumps(ticket.as_dict())) == ticket.as_dict()
    assert ticket.as_dict()["assignment"] == doc
