"""Model listings and details through each official SDK, with every key form it sends."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from google import genai

from tests.support.gateways import Gw


async def test_openai_lists_and_gets_models_with_their_details(gw: Gw) -> None:
    def run() -> tuple[list[Any], Any, Any]:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as c:
            listed = list(c.models.list())
            one = c.models.retrieve("fake/lorem")  # an id with a slash
            try:
                c.models.retrieve("nope/x")
                missing = None
            except openai.NotFoundError as exc:
                missing = exc
            return listed, one, missing

    listed, one, missing = await trio.to_thread.run_sync(run)
    ids = [m.id for m in listed]
    assert "sim/lorem" in ids and "anthropic-lorem" in ids
    assert one.id == "fake/lorem" and one.owned_by == "fake"
    details = one.model_extra
    assert details["max_output_tokens"] > 0
    assert details["architecture"]["input_modalities"][0] == "text"
    assert "temperature" in details["supported_parameters"]
    # fake/lorem's price: 1 micro-dollar per prompt token, 2 per completion token.
    assert details["pricing"]["prompt_usd_per_million"] == "1.000000"
    assert details["pricing"]["completion_usd_per_million"] == "2.000000"
    assert missing is not None and "nope/x" in str(missing)


async def test_details_say_what_every_deployment_honours(gw: Gw) -> None:
    async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers) as http:
        openai_model = (await http.get("/v1/models/openai-lorem")).json()
        anthropic_model = (await http.get("/v1/models/anthropic-lorem")).json()
    assert "logprobs" not in anthropic_model["supported_parameters"]
    assert "seed" in openai_model["supported_parameters"]
    assert "seed" not in anthropic_model["supported_parameters"]  # Anthropic has none
    assert "audio" not in anthropic_model["architecture"]["input_modalities"]
    assert anthropic_model["upstream_dialects"] == ["anthropic"]


@pytest.mark.parametrize("how", ["x-api-key", "bearer"])
async def test_anthropic_lists_and_gets_models_in_its_shape(gw: Gw, how: str) -> None:
    def run() -> tuple[list[Any], Any]:
        kwargs: dict[str, Any] = ({"api_key": gw.key} if how == "x-api-key"
                                  else {"auth_token": gw.key})
        with anthropic.Anthropic(base_url=gw.url, max_retries=0, **kwargs) as c:
            return list(c.models.list()), c.models.retrieve("anthropic-lorem")

    listed, one = await trio.to_thread.run_sync(run)
    assert "anthropic-lorem" in [m.id for m in listed]
    assert one.type == "model" and one.id == "anthropic-lorem"
    assert one.created_at.year >= 2026


@pytest.mark.parametrize("api_version", [None, "v1beta", "v1"])
async def test_google_genai_lists_and_gets_models_with_its_key_header(
        gw: Gw, api_version: str | None) -> None:
    def run() -> tuple[list[Any], Any]:
        options: dict[str, Any] = {"base_url": gw.url}
        if api_version:
            options["api_version"] = api_version
        client = genai.Client(api_key=gw.key, http_options=options)
        return list(client.models.list()), client.models.get(model="gemini-lorem")

    listed, one = await trio.to_thread.run_sync(run)
    assert "models/gemini-lorem" in [m.name for m in listed]
    assert one.name == "models/gemini-lorem" and one.output_token_limit
    assert "countTokens" in (one.supported_actions or [])


async def test_the_gemini_key_query_parameter_and_wrong_keys(gw: Gw) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        by_query = await http.get("/v1beta/models/gemini-lorem", params={"key": gw.key})
        wrong = await http.get("/v1beta/models", params={"key": "nope"})
        anthropic_wrong = await http.get("/v1/models", headers={"x-api-key": "nope"})
        unknown = await http.get("/v1beta/models/nope", params={"key": gw.key})
    assert by_query.status_code == 200 and by_query.json()["name"] == "models/gemini-lorem"
    assert wrong.status_code == 401 and wrong.json()["error"]["status"] == "UNAUTHENTICATED"
    assert anthropic_wrong.status_code == 401
    assert anthropic_wrong.json()["error"]["type"] == "authentication_error"
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
