"""The official ``openai`` SDK, sync and async, through a gateway on a loopback port."""

from __future__ import annotations

import openai
import pytest
import trio

from tests.support.gateways import FAKE_PROVIDER_KEY, Gw, Sim

PROMPT = "#sim tokens=12 interval_ms=1 tag={tag}\nHow would you build the tallest building?"


def _messages(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPT.format(tag=tag)}]


@pytest.mark.parametrize("model", ["fake/lorem", "fast", "sim/lorem"])
async def test_async_stream_has_text_then_usage_last(gw: Gw, sim: Sim, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with client, await client.chat.completions.create(
        model=model, messages=_messages(f"async-{model}"), stream=True  # type: ignore[arg-type]
    ) as stream:
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["Lorem", "ipsum", "dolor", "sit", "amet,", "consectetur",
                            "adipiscing", "elit,", "sed", "do", "eiusmod", "tempor"]
    assert {c.model for c in chunks} == {model}
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 12
    assert last.usage.total_tokens == last.usage.prompt_tokens + 12
    assert last.usage.prompt_tokens_details.cached_tokens == 0
    assert last.usage.completion_tokens_details.reasoning_tokens == 0
    if model != "sim/lorem":
        record = sim.records(f"async-{model}")[0]
        assert record.outcome == "completed"
        # The provider key reaches the upstream; the client's gateway key never does.
        assert record.saw_authorization == FAKE_PROVIDER_KEY[:8]
    [row] = await gw.wait_records(1)
    assert (row.status, row.http_status, row.completion_tokens) == ("ok", 200, 12)
    assert not row.usage_estimated


async def test_sync_client_in_thread(gw: Gw, sim: Sim) -> None:
    # The gateway runs in this test's Trio loop, so the blocking client gets a thread.
    def use_sync_client() -> tuple[str, object, str, object]:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
            stream = client.chat.completions.create(
                model="fake/echo", messages=_messages("sync-stream"), stream=True
            )
            chunks = list(stream)
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            whole = client.chat.completions.create(
                model="fake/echo", messages=_messages("sync-whole")
            )
            return streamed, chunks[-1].usage, whole.choices[0].message.content or "", whole.usage

    streamed, stream_usage, whole, whole_usage = await trio.to_thread.run_sync(use_sync_client)
    assert streamed.split()[:3] == ["How", "would", "you"]
    assert whole.split()[:3] == ["How", "would", "you"]
    assert stream_usage is not None and whole_usage is not None
    assert stream_usage.completion_tokens == whole_usage.completion_tokens == 12  # type: ignore[attr-defined]


async def test_non_stream_async(gw: Gw) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    answer = await client.chat.completions.create(
        model="fake/lorem", messages=_messages("whole")  # type: ignore[arg-type]
    )
    await client.close()
    assert answer.object == "chat.completion"
    assert answer.model == "fake/lorem"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 12


async def test_models_listing(gw: Gw) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    ids = [model.id async for model in client.models.list()]
    await client.close()
    assert {"sim/echo", "sim/lorem", "fast"} <= set(ids)
