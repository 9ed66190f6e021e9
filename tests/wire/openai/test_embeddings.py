"""OpenAI embeddings bodies: what is read, refused by name, and how vectors are encoded."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from gateway.canonical import Embeddings
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.wire.openai.embeddings import extra, parse_answer, parse_request, render, upstream_body


def test_inputs_in_every_form() -> None:
    assert parse_request({"model": "m", "input": "a"}).inputs == ("a",)
    assert parse_request({"model": "m", "input": ["a", "b"]}).inputs == ("a", "b")
    assert parse_request({"model": "m", "input": [1, 2]}).inputs == ((1, 2),)
    assert parse_request({"model": "m", "input": [[1], [2, 3]]}).inputs == ((1,), (2, 3))


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [""]}, "input"),
    ({"model": "m", "input": [1, "a"]}, "input"),
    ({"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a"}, "model"),
])
def test_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert info.value.param == param


def test_the_upstream_is_always_asked_for_floats_and_extra_fields_are_named() -> None:
    request = parse_request({"model": "m", "input": "a", "encoding_format": "base64",
                             "brand_new": 1})
    assert upstream_body(request, "up") == {"model": "up", "input": "a",
                                            "encoding_format": "float", "brand_new": 1}
    assert extra(request) == ["brand_new"]


def test_base64_is_float32_little_endian() -> None:
    out = render(Embeddings(((0.5, -1.25),)), "m", "base64", 3)
    import json
    encoded = json.loads(out)["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.25)


def test_answers_are_checked_and_put_in_input_order() -> None:
    answer = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
              "usage": {"prompt_tokens": 4}}
    assert parse_answer(answer, 2) == Embeddings(((1.0,), (2.0,)), 4)
    for bad in ({"data": [{"index": 0, "embedding": [1.0]}]},
                {"data": [{"index": 0, "embedding": "!!"}, {"index": 1, "embedding": []}]},
                {"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [1]}]}):
        with pytest.raises(UpstreamProtocolError):
            parse_answer(bad, 2)


@pytest.mark.parametrize("values", [[float("nan")], [float("inf")], [10**400], ["1"], [True]])
def test_a_vector_that_is_not_finite_numbers_is_the_upstream_s_fault(values: list[Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_answer({"data": [{"index": 0, "embedding": values}]}, 1)
