"""Gemini embeddings bodies: embedContent and batchEmbedContents in, batchEmbedContents to
an upstream, answers checked."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.canonical import Embeddings
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.wire.gemini.embeddings import (
    extra,
    parse_answer,
    parse_batch,
    parse_embed,
    render_batch,
    upstream_body,
)


def content(text: str, **more: Any) -> dict[str, Any]:
    return {"content": {"parts": [{"text": text}]}, **more}


def test_one_and_many() -> None:
    one = parse_embed(content("a", outputDimensionality=8, taskType="RETRIEVAL_QUERY"), "m")
    assert (one.inputs, one.dimensions, one.task) == (("a",), 8, "RETRIEVAL_QUERY")
    many = parse_batch({"requests": [content("a", model="models/m"), content("b")]}, "m")
    assert many.inputs == ("a", "b") and extra(many) == []
    assert extra(one) == ["taskType"]


@pytest.mark.parametrize(("body", "param"), [
    ({"requests": []}, "requests"),
    ({"requests": [content("a", model="models/other")]}, "requests.0.model"),
    ({"requests": [content("a", outputDimensionality=4), content("b")]}, "requests"),
    ({"requests": [{"content": {"parts": [{"inlineData": {}}]}}]},
     "requests.0.content.parts.0"),
])
def test_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_batch(body, "m")
    assert info.value.param == param


def test_the_upstream_gets_a_batch_for_its_model_with_the_client_s_fields() -> None:
    request = parse_embed(content("a", title="T", taskType="RETRIEVAL_DOCUMENT"), "public")
    assert upstream_body(request, "up") == {"requests": [
        {"content": {"parts": [{"text": "a"}]}, "title": "T", "taskType": "RETRIEVAL_DOCUMENT",
         "model": "models/up"}]}


def test_answers() -> None:
    assert parse_answer({"embeddings": [{"values": [1, 2.5]}]}, 1) == Embeddings(
        ((1.0, 2.5),), None)
    assert render_batch(Embeddings(((1.0,),))) == {"embeddings": [{"values": [1.0]}]}
    with pytest.raises(UpstreamProtocolError):
        parse_answer({"embeddings": []}, 1)


def test_a_vector_that_is_not_finite_numbers_is_the_upstream_s_fault() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_answer({"embeddings": [{"values": [float("nan")]}]}, 1)
