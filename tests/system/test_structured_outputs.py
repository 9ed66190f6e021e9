"""Structured outputs round trip: each official SDK's own parser, through every upstream.

The OpenAI SDK's ``chat.completions.parse``, the Anthropic SDK's ``messages.parse`` and
google-genai's ``response_schema`` with ``response.parsed`` each send a schema made from a
pydantic model; the gateway carries it to the fake upstream in that upstream's own form
(checked there), and the fake upstream answers an instance of the schema it received, which
the SDK must parse back into the model.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pydantic
import pytest
import trio
from google import genai
from google.genai import types as genai_types

from tests.support.gateways import Gw, Sim

PROMPT = "#sim interval_ms=0\nWhich city, and how many people?"


class City(pydantic.BaseModel):
    name: str
    population: int
    coastal: bool
    districts: list[str]


def _openai(gw: Gw, model: str) -> City | None:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        answer = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": PROMPT}], response_format=City)
        return answer.choices[0].message.parsed


def _anthropic(gw: Gw, model: str) -> City | None:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        message = client.messages.parse(
            model=model, max_tokens=256, messages=[{"role": "user", "content": PROMPT}],
            output_format=City)
        return message.parsed_output


def _genai(gw: Gw, model: str) -> City | None:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    response = client.models.generate_content(
        model=model, contents=PROMPT,
        config=genai_types.GenerateContentConfig(response_mime_type="application/json",
                                                 response_schema=City))
    assert isinstance(response.parsed, City | None)
    return response.parsed


CLIENTS = {"openai": _openai, "anthropic": _anthropic, "genai": _genai}


def _schema_at_upstream(dialect: str, body: dict[str, Any]) -> Any:
    """Where each upstream dialect found the schema it was asked to fill."""
    if dialect == "openai":
        assert body["response_format"]["type"] == "json_schema"
        return body["response_format"]["json_schema"]["schema"]
    if dialect == "anthropic":
        return body["output_config"]["format"]["schema"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    return config.get("responseJsonSchema") or config["responseSchema"]


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_the_sdk_parses_a_structured_answer_from_every_upstream(
        gw: Gw, sim: Sim, client: str, upstream: str) -> None:
    parsed = await trio.to_thread.run_sync(CLIENTS[client], gw, f"{upstream}-lorem")
    assert parsed == City(name="text", population=1, coastal=True, districts=["text"])
    [record] = sim.records()
    schema = _schema_at_upstream(upstream, record.body)
    # The pydantic model's fields reach the upstream, whichever way they were spelled.
    assert set(schema["properties"]) == {"name", "population", "coastal", "districts"}
