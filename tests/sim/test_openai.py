"""The OpenAI dialect over real loopback HTTP, driven by httpx and the official OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from gateway.sim.scenarios import token_texts
from tests.support.sim_clients import CLIENT_GENERATORS_LEFT_OPEN, OPENAI_KEY, PROMPT, SimAt


@pytest.fixture
async def sdk(sim: SimAt) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{sim.url}/v1", api_key=OPENAI_KEY, max_retries=0, timeout=5
    ) as sdk:
        yield sdk


def chat(
    directive: str = "",
    *,
    stream: bool = True,
    usage: bool = False,
    model: str = "sim-echo",
    prompt: str = PROMPT,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"{prompt}\n#sim {directive}"},
        ],
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def data_of(raw: bytes) -> list[str]:
    """The data fields of a complete SSE body (our server writes one data line per event)."""
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "the body must end with a complete event"
    assert all(event.startswith("data: ") for event in events[:-1])
    return [event.removeprefix("data: ") for event in events[:-1]]


def contents(events: list[str]) -> str:
    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    return "".join(
        choice["delta"].get("content", "") for chunk in chunks for choice in chunk["choices"]
    )


@CLIENT_GENERATORS_LEFT_OPEN
async def test_sdk_stream_with_include_usage_ends_with_a_usage_chunk(
    sim: SimAt, sdk: openai.AsyncOpenAI
) -> None:
    stream = await sdk.chat.completions.create(
        model="sim-echo",
        messages=[{"role": "user", "content": f"{PROMPT}\n#sim tokens=5 tag=u"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " one two three one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    usage = last.usage
    assert (usage.completion_tokens, usage.total_tokens) == (5, 5 + usage.prompt_tokens)
    record = sim.record("u")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 5, True)
    assert record.dialect == "openai"
    assert record.started_at < record.first_token_at < record.ended_at  # type: ignore[operator]
    assert record.saw_authorization == OPENAI_KEY[:8]
    assert "authorization" not in record.request_headers
    assert OPENAI_KEY not in json.dumps(record.to_json())


async def test_raw_stream_without_include_usage_has_no_usage(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=chat("tag=r")) as response:
        raw = await response.aread()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = data_of(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk" and first["model"] == "sim-echo"
    assert first["id"].startswith("chatcmpl-")
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert contents(events) == "".join(token_texts("echo", PROMPT, 10))
    assert len(chunks) == 1 + 10 + 1  # role, tokens, finish
    assert sim.record("r").tokens_sent == 10


async def test_max_tokens_cuts_the_stream_with_finish_reason_length(
    client: httpx.AsyncClient,
) -> None:
    body = {**chat(usage=True), "max_tokens": 3}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = data_of(await response.aread())
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert contents(events) == " one two three"


async def test_sdk_non_stream_returns_a_completion_with_usage(
    sim: SimAt, sdk: openai.AsyncOpenAI
) -> None:
    completion = await sdk.chat.completions.create(
        model="gpt-lorem", messages=[{"role": "user", "content": "hi\n#sim tokens=4 tag=n"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "".join(token_texts("lorem", "", 4))
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    record = sim.record("n")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 4, False)
    # It answers when the stream would have ended: 3 intervals after the first token.
    assert record.ended_at - record.started_at >= 0.006  # type: ignore[operator]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("status", [401, 429, 500, 502, 503, 529])
async def test_status_scenarios_answer_with_openai_error_bodies(
    sim: SimAt, client: httpx.AsyncClient, status: int, stream: bool
) -> None:
    body = chat(f"scenario=status_{status} tag=s", stream=stream)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert response.headers.get("retry-after") == ("20" if status == 429 else None)
    record = sim.record("s")
    assert (record.outcome, record.headers_sent, record.tokens_sent) == ("error_status", True, 0)


async def test_retry_after_comes_from_the_directive(client: httpx.AsyncClient) -> None:
    body = chat("scenario=status_503 retry_after=3", stream=False)
    response = await client.post("/v1/chat/completions", json=body)
    assert (response.status_code, response.headers["retry-after"]) == (503, "3")


async def test_sdk_maps_status_scenarios_to_its_exceptions(sdk: openai.AsyncOpenAI) -> None:
    for scenario, exception in [
        ("status_429", openai.RateLimitError),
        ("status_401", openai.AuthenticationError),
        ("status_503", openai.InternalServerError),
    ]:
        with pytest.raises(exception, match="simulated"):
            await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"#sim scenario={scenario}"}]
            )


@CLIENT_GENERATORS_LEFT_OPEN
async def test_midstream_error_sends_an_error_event_and_ends(
    sim: SimAt, client: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    body = chat("scenario=midstream_error tag=e", usage=True)
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = data_of(await response.aread())
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert contents(events[:-1]) == "".join(token_texts("echo", PROMPT, 5))
    assert "[DONE]" not in events
    record = sim.record("e")
    assert (record.outcome, record.tokens_sent) == ("error_event", 5)

    stream = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "#sim scenario=midstream_error"}],
        stream=True,
    )
    with pytest.raises(openai.APIError, match="simulated"):
        async for _ in stream:
            pass


async def test_malformed_sends_a_broken_event_after_half(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=malformed")
    ) as response:
        events = data_of(await response.aread())
    assert events[-1] == "{not json"
    assert contents(events[:-1]) == "".join(token_texts("echo", PROMPT, 5))


async def test_invalid_json_breaks_both_shapes_from_the_start(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    body = chat("scenario=invalid_json", stream=False)
    whole = await client.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        whole.json()
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=invalid_json tag=i")
    ) as response:
        events = data_of(await response.aread())
    assert events == ["{not json"]
    assert sim.record("i").outcome == "error_event"


async def test_no_usage_completes_without_the_usage_chunk(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=no_usage", usage=True)
    ) as response:
        events = data_of(await response.aread())
    assert events[-1] == "[DONE]"
    assert all(json.loads(event).get("usage") is None for event in events[:-1])
    whole = await client.post("/v1/chat/completions", json=chat("scenario=no_usage", stream=False))
    assert "usage" not in whole.json()


async def test_byte_split_stream_decodes_like_a_normal_one(client: httpx.AsyncClient) -> None:
    prompt = "héllo wörld ✓ 漢字 \u2028line"
    async with client.stream(
        "POST", "/v1/chat/completions",
        json=chat("scenario=byte_split tokens=6", usage=True, prompt=prompt),
    ) as response:
        raw = await response.aread()
    events = data_of(raw)
    assert contents(events) == "".join(token_texts("echo", prompt, 6))
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 6
    assert events[-1] == "[DONE]"


async def test_bad_requests_get_openai_400s_and_a_record(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b"hello", "parse the JSON"),
        (b"[1]", "JSON object"),
        ({"messages": []}, "'model'"),
        (chat("tokens=lots"), "expected a whole number"),
        (chat("flavour=mint"), "unknown key"),
    ]
    for body, message in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await client.post("/v1/chat/completions", content=content)
        assert response.status_code == 400
        error = response.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"
    assert [r.outcome for r in sim.server.records] == ["error_status"] * len(cases)
