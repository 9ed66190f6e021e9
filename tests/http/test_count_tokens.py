"""Token counting: the upstream's own count where it speaks the client's dialect, the
gateway's marked estimate elsewhere; with the SDKs' own calls and key forms."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
import trio
from google import genai

from tests.support.gateways import Gw, Sim, new_key

PROMPT = "What is the weather in Paris today, and tomorrow?"


def _anthropic(gw: Gw, model: str) -> tuple[Any, Any]:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        counted = client.messages.with_raw_response.count_tokens(
            model=model, system="be brief", messages=[{"role": "user", "content": PROMPT}])
        whole = client.messages.create(model=model, max_tokens=16, system="be brief",
                                       messages=[{"role": "user", "content": PROMPT}])
        return counted, whole


async def test_anthropic_counts_by_the_upstream_that_would_answer(gw: Gw, sim: Sim) -> None:
    counted, whole = await trio.to_thread.run_sync(_anthropic, gw, "anthropic-lorem")
    assert counted.headers["x-arouter-token-count"] == "upstream"
    parsed = counted.parse()
    # The upstream's own count: what it bills the same prompt as when answering it.
    assert parsed.input_tokens == whole.usage.input_tokens
    [record] = [r for r in sim.records() if r.body and "max_tokens" not in r.body]
    assert record.body["model"] == "lorem" and record.dialect == "anthropic"
    [row] = await gw.wait_records(1)  # the answer's; the count wrote none and cost nothing
    assert row.completion_tokens > 0


async def test_another_dialect_gets_a_marked_estimate(gw: Gw, sim: Sim) -> None:
    counted, _ = await trio.to_thread.run_sync(_anthropic, gw, "gemini-lorem")
    assert counted.headers["x-arouter-token-count"] == "estimate"
    assert counted.parse().input_tokens > 0 and counted.json()["estimated"] is True


@pytest.mark.parametrize("model", ["gemini-lorem", "anthropic-lorem"])
async def test_google_genai_counts(gw: Gw, sim: Sim, model: str) -> None:
    def run() -> Any:
        client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
        return client.models.count_tokens(model=model, contents=PROMPT)

    counted = await trio.to_thread.run_sync(run)
    assert counted.total_tokens > 0
    upstream = [r for r in sim.records() if r.dialect == "gemini"]
    assert len(upstream) == (1 if model == "gemini-lorem" else 0)


async def test_counting_is_rate_limited_and_refused_like_any_request(gw: Gw, sim: Sim) -> None:
    secret, _ = await new_key(gw, rpm=1)
    body = {"model": "anthropic-lorem", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        first = await http.post("/v1/messages/count_tokens", json=body,
                                headers={"x-api-key": secret})
        second = await http.post("/v1/messages/count_tokens", json=body,
                                 headers={"x-api-key": secret})
        capped = await http.post("/v1/messages/count_tokens", json={**body, "max_tokens": 5},
                                 headers={"x-api-key": gw.key})
        wrong = await http.post("/v1beta/models/gemini-lorem:countTokens",
                                params={"key": "nope"}, json={"contents": []})
    assert first.status_code == 200 and second.status_code == 429
    assert second.json()["type"] == "error"  # Anthropic's shape
    assert capped.status_code == 400 and "max_tokens" in capped.text
    assert wrong.status_code == 401 and wrong.json()["error"]["status"] == "UNAUTHENTICATED"
    assert await gw.records() == []  # counting is never recorded
