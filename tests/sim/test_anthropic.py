"""The Anthropic Messages dialect over real loopback HTTP, driven by httpx and the official
Anthropic SDK (``AsyncAnthropic``, which runs under Trio)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest

from gateway.sim.scenarios import token_texts
from tests.support.sim_clients import (
    ANTHROPIC_KEY,
    CLIENT_GENERATORS_LEFT_OPEN,
    PROMPT,
    SPEAKERS,
    SimAt,
    sse_events,
)

SPEAKER = SPEAKERS["anthropic"]
TOKENS = "".join(token_texts("echo", PROMPT, 10))


@pytest.fixture
async def sdk(sim: SimAt) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.url, api_key=ANTHROPIC_KEY, max_retries=0, timeout=5
    ) as sdk:
        yield sdk


def messages(directive: str) -> list[Any]:
    return [{"role": "user", "content": f"{PROMPT}\n#sim {directive}"}]


async def stream_events(
    client: httpx.AsyncClient, directive: str, **changes: Any
) -> list[tuple[str | None, Any]]:
    """(event, data) of a raw stream; data parsed as JSON where it is JSON."""
    request = SPEAKER.request(directive)
    request["json"].update(changes)
    async with client.stream("POST", **request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = await response.aread()
    parsed: list[tuple[str | None, Any]] = []
    for event, data in sse_events(raw):
        try:
            parsed.append((event, json.loads(data)))
        except json.JSONDecodeError:
            parsed.append((event, data))
    return parsed


def text_of(events: list[tuple[str | None, Any]]) -> str:
    return "".join(
        data["delta"]["text"] for event, data in events if event == "content_block_delta"
    )


async def test_sdk_stream_yields_the_text_and_a_final_message(
    sim: SimAt, sdk: anthropic.AsyncAnthropic
) -> None:
    async with sdk.messages.stream(
        model="claude-echo", max_tokens=100, messages=messages("tokens=5 tag=s")
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()
    assert text == " one two three one two"
    assert final.id.startswith("msg_") and final.model == "claude-echo"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    record = sim.record("s")
    assert (record.dialect, record.outcome, record.tokens_sent) == ("anthropic", "completed", 5)
    # anthropic 2.x sends its api_key as a bearer token, not as x-api-key.
    assert record.saw_authorization == ANTHROPIC_KEY[:8]
    assert "anthropic-version" in record.request_headers
    assert ANTHROPIC_KEY not in json.dumps(record.to_json())


async def test_sdk_create_returns_a_message_cut_by_max_tokens(
    sim: SimAt, sdk: anthropic.AsyncAnthropic
) -> None:
    message = await sdk.messages.create(
        model="claude-lorem",
        max_tokens=3,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi\n#sim tag=c"}]}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "".join(token_texts("lorem", "", 3))  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    record = sim.record("c")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 3, False)


async def test_raw_stream_is_the_messages_event_sequence(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    events = await stream_events(client, "tag=r")
    names = [event for event, _ in events]
    assert names == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 10,
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert all(data["type"] == event for event, data in events)  # the data names its event
    start = events[0][1]["message"]
    assert start["id"] == f"msg_sim{sim.record('r').id}"
    assert (start["role"], start["content"], start["stop_reason"]) == ("assistant", [], None)
    assert start["usage"]["input_tokens"] > 0
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert events[3][1] == {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": " one"},
    }
    assert text_of(events) == TOKENS
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 10}
    record = sim.record("r")
    assert (record.saw_authorization, record.request_headers["x-api-key"]) == (
        ANTHROPIC_KEY[:8], ANTHROPIC_KEY[:8]
    )


async def test_max_tokens_stops_the_stream_with_stop_reason_max_tokens(
    client: httpx.AsyncClient,
) -> None:
    events = await stream_events(client, "", max_tokens=3)
    assert text_of(events) == " one two three"
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_status_scenarios_answer_with_anthropic_error_bodies(
    sim: SimAt, client: httpx.AsyncClient, status: int, kind: str, stream: bool
) -> None:
    request = SPEAKER.request(f"scenario=status_{status} tag=e", stream=stream)
    response = await client.post(**request)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert "simulated" in body["error"]["message"]
    assert response.headers.get("retry-after") == ("20" if status == 429 else None)
    assert sim.record("e").outcome == "error_status"


async def test_sdk_maps_status_scenarios_to_its_exceptions(
    sdk: anthropic.AsyncAnthropic,
) -> None:
    for scenario, exception in [
        ("status_529", anthropic.OverloadedError),
        ("status_429", anthropic.RateLimitError),
        ("status_401", anthropic.AuthenticationError),
        ("status_503", anthropic.InternalServerError),
    ]:
        with pytest.raises(exception, match="simulated"):
            await sdk.messages.create(
                model="m", max_tokens=10, messages=messages(f"scenario={scenario}")
            )


@CLIENT_GENERATORS_LEFT_OPEN
async def test_midstream_error_is_an_error_event_after_half(
    sim: SimAt, client: httpx.AsyncClient, sdk: anthropic.AsyncAnthropic
) -> None:
    events = await stream_events(client, "scenario=midstream_error tag=m")
    assert events[-1] == ("error", {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded (simulated by arouter sim)"},
    })
    assert text_of(events) == "".join(token_texts("echo", PROMPT, 5))
    assert "message_stop" not in [event for event, _ in events]
    record = sim.record("m")
    assert (record.outcome, record.tokens_sent) == ("error_event", 5)

    # The SDK raises on the error event with the status of the response it came in: 200.
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error") as raised:
        async with sdk.messages.stream(
            model="m", max_tokens=10, messages=messages("scenario=midstream_error")
        ) as stream:
            async for _ in stream.text_stream:
                pass
    assert raised.value.status_code == 200


async def test_non_stream_midstream_error_is_a_529(client: httpx.AsyncClient) -> None:
    response = await client.post(**SPEAKER.request("scenario=midstream_error", stream=False))
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"


async def test_malformed_and_invalid_json_send_a_broken_delta(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    events = await stream_events(client, "scenario=malformed")
    assert events[-1] == ("content_block_delta", "{not json")
    assert text_of(events[:-1]) == "".join(token_texts("echo", PROMPT, 5))
    # invalid_json breaks the very first event: no message_start before it.
    assert await stream_events(client, "scenario=invalid_json tag=i") == [
        ("content_block_delta", "{not json")
    ]
    assert sim.record("i").outcome == "error_event"
    whole = await client.post(**SPEAKER.request("scenario=invalid_json", stream=False))
    assert (whole.status_code, whole.content) == (200, b"{not json")


async def test_no_usage_leaves_out_every_usage(client: httpx.AsyncClient) -> None:
    events = await stream_events(client, "scenario=no_usage")
    assert text_of(events) == TOKENS
    assert "usage" not in events[0][1]["message"] and "usage" not in events[-2][1]
    whole = await client.post(**SPEAKER.request("scenario=no_usage", stream=False))
    assert "usage" not in whole.json()


async def test_bad_requests_get_anthropic_400s_and_a_record(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    body = SPEAKER.request()["json"]
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b"hello", "parsing the body"),
        ({k: v for k, v in body.items() if k != "max_tokens"}, "max_tokens: Field required"),
        ({**body, "max_tokens": "many"}, "max_tokens: Input should be"),
        ({**body, "messages": "hi"}, "messages: Input should be"),
        (SPEAKER.request("tokens=lots")["json"], "expected a whole number"),
        # An OpenAI body on the Anthropic route.
        (SPEAKERS["openai"].request()["json"], "max_tokens: Field required"),
    ]
    for case, message in cases:
        content = case if isinstance(case, bytes) else json.dumps(case).encode()
        response = await client.post("/v1/messages", content=content)
        assert response.status_code == 400
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert message in error["error"]["message"]
    records = sim.server.records
    assert [(r.dialect, r.outcome) for r in records] == [("anthropic", "error_status")] * len(cases)
    wrong = await client.get("/v1/messages")
    assert (wrong.status_code, wrong.json()["error"]["type"]) == (405, "invalid_request_error")
