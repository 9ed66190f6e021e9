"""The legacy Completions API: an OpenAI upstream's own, relayed as it answers; refused by
name elsewhere."""

from __future__ import annotations

from typing import Any

import openai
import trio

from tests.support.gateways import Gw, Sim

PROMPT = "#sim tokens=3 interval_ms=0\nOnce upon a time"


async def test_completions_whole_and_streamed_from_an_openai_upstream(
        gw: Gw, sim: Sim) -> None:
    def run() -> tuple[Any, list[Any]]:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as c:
            whole = c.completions.create(model="openai-lorem", prompt=PROMPT, max_tokens=8)
            chunks = list(c.completions.create(model="openai-lorem", prompt=PROMPT,
                                               max_tokens=8, stream=True))
            return whole, chunks

    whole, chunks = await trio.to_thread.run_sync(run)
    assert whole.object == "text_completion" and whole.model == "openai-lorem"
    assert whole.choices[0].text == " Lorem ipsum dolor" and whole.id.startswith("gen-")
    assert whole.usage.completion_tokens == 3
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " Lorem ipsum dolor"
    assert {c.model for c in chunks} == {"openai-lorem"}
    assert chunks[-1].usage.completion_tokens == 3  # the usage chunk, as asked for
    rows = await gw.wait_records(2)
    assert {(r.status, r.completion_tokens, r.client_dialect) for r in rows} == {
        ("ok", 3, "completions")}
    [record, _] = sim.records()
    assert record.body["prompt"] == PROMPT and record.body["model"] == "lorem"


async def test_completions_elsewhere_are_refused_by_name(gw: Gw, sim: Sim) -> None:
    def run() -> Any:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as c:
            try:
                c.completions.create(model="anthropic-lorem", prompt="hi")
            except openai.BadRequestError as exc:
                return exc
        return None

    refused = await trio.to_thread.run_sync(run)
    assert refused is not None and refused.body["param"] == "prompt"  # type: ignore[index]
    assert "fake-anthropic/lorem" in refused.message
    assert sim.records() == []
