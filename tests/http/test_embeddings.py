"""Embeddings through the official SDKs to both upstream dialects that embed, and the
built-in simulator: vectors arrive unchanged, every request leaves one ledger row."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import pytest
import trio
from google import genai
from google.genai import types as genai_types

from gateway.sim.vectors import vector
from tests.support.gateways import Gw, Sim

TEXTS = ["The quick brown fox", "jumps over the lazy dog"]


def _float32(values: tuple[float, ...]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


@pytest.mark.parametrize("model", ["openai-lorem", "gemini-lorem", "sim/embed"])
@pytest.mark.parametrize("encoding", ["float", "base64", None])
async def test_openai_sdk_embeds_through_each_upstream(gw: Gw, sim: Sim, model: str,
                                                       encoding: str | None) -> None:
    def run() -> Any:
        # None: the SDK's default, which asks for base64 and decodes it itself.
        given: Any = {"encoding_format": encoding} if encoding else {}
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as c:
            return c.embeddings.create(model=model, input=TEXTS, dimensions=8, **given)

    answer = await trio.to_thread.run_sync(run)
    upstream_model = "embed" if model == "sim/embed" else "lorem"
    expected = [vector(upstream_model, text, 8) for text in TEXTS]
    got = [item.embedding for item in answer.data]
    if encoding == "base64":  # float32 on the wire, as OpenAI's (the SDK leaves it encoded)
        decoded = [list(struct.unpack(f"<{len(base64.b64decode(g)) // 4}f",
                                      base64.b64decode(g))) for g in got]
        assert decoded == [_float32(v) for v in expected]
    elif encoding is None:
        assert got == [_float32(v) for v in expected]
    else:
        assert got == [list(v) for v in expected]
    assert answer.model == model and answer.usage.prompt_tokens > 0
    [row] = await gw.wait_records(1)
    assert (row.status, row.completion_tokens) == ("ok", 0)
    assert row.prompt_tokens == answer.usage.prompt_tokens
    assert row.usage_estimated == (model == "gemini-lorem")  # Gemini counts no tokens
    assert row.client_dialect == "openai-embeddings"
    if model == "openai-lorem":  # priced per input token: 1 micro-dollar each
        assert row.cost == row.prompt_tokens


@pytest.mark.parametrize("model", ["gemini-lorem", "openai-lorem"])
async def test_google_genai_embeds_through_each_upstream(gw: Gw, sim: Sim, model: str) -> None:
    def run() -> Any:
        client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
        # One Content per text (a list of strings is one content of several parts).
        contents: Any = [genai_types.Content(parts=[genai_types.Part(text=t)]) for t in TEXTS]
        return client.models.embed_content(
            model=model, contents=contents,
            config=genai_types.EmbedContentConfig(output_dimensionality=8))

    answer = await trio.to_thread.run_sync(run)
    assert [e.values for e in answer.embeddings] == [list(vector("lorem", t, 8))
                                                     for t in TEXTS]
    [row] = await gw.wait_records(1)
    assert row.status == "ok" and row.client_dialect == "gemini-embeddings"


async def test_what_cannot_embed_is_refused_by_name(gw: Gw, sim: Sim) -> None:
    async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers) as http:
        anthropic = await http.post("/v1/embeddings", json={
            "model": "anthropic-lorem", "input": "hi"})
        tokens = await http.post("/v1/embeddings", json={
            "model": "gemini-lorem", "input": [[1, 2, 3]]})
        extra = await http.post("/v1/embeddings", json={
            "model": "gemini-lorem", "input": "hi", "brand_new": 1})
        empty = await http.post("/v1/embeddings", json={"model": "openai-lorem", "input": []})
        token_ok = await http.post("/v1/embeddings", json={
            "model": "openai-lorem", "input": [[1, 2, 3]]})
    assert anthropic.status_code == 400 and "Anthropic has none" in anthropic.text
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "brand_new"
    assert empty.status_code == 400
    assert token_ok.status_code == 200  # an OpenAI upstream reads token arrays
    assert len(await gw.wait_records(1)) == 1  # refusals are never recorded


async def test_token_arrays_reserve_what_they_count(gw: Gw, sim: Sim) -> None:
    # 100 000 tokens given as ids, at 1 micro-dollar each: a balance of 100 cannot cover
    # them (their text estimate would be a few tokens).
    from tests.support.gateways import new_key

    poor, _ = await new_key(gw, balance=100)
    async with httpx.AsyncClient(base_url=gw.url) as http:
        refused = await http.post("/v1/embeddings", json={
            "model": "openai-lorem", "input": [[1] * 5000] * 20},
            headers={"authorization": f"Bearer {poor}"})
    assert refused.status_code == 402, refused.text
    assert sim.records() == []
