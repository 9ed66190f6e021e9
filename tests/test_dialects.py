"""Three dialects in, three dialects out, through one canonical model (issue 4).

Every official client SDK (openai, anthropic, google-genai, google-generativeai) against
every upstream dialect of the fake upstream (OpenAI, Anthropic Messages, Gemini), streaming
and not, through a gateway on a loopback port. The SDKs' blocking clients run in threads:
the gateway and the fake upstream run in this test's Trio loop.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
import trio
from google import genai

from tests.conftest import FAKE_PROVIDER_KEY, Gw, Sim

UPSTREAMS = {"openai": "fake", "anthropic": "fake-anthropic", "gemini": "fake-gemini"}
PROMPT = "#sim tokens=6 interval_ms=1 tag={tag}\nHow tall can a building be?"
WORDS = ["Lorem", "ipsum", "dolor", "sit", "amet,", "consectetur"]


def _openai(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, int]:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        messages: Any = [{"role": "user", "content": PROMPT.format(tag=tag)}]
        if stream:
            chunks = list(client.chat.completions.create(model=model, messages=messages,
                                                         stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = chunks[-1].usage
            assert usage is not None
            return text, usage.completion_tokens
        answer = client.chat.completions.create(model=model, messages=messages)
        assert answer.usage is not None
        return answer.choices[0].message.content or "", answer.usage.completion_tokens


def _anthropic(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, int]:
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    with client:
        messages: Any = [{"role": "user", "content": PROMPT.format(tag=tag)}]
        if stream:
            with client.messages.stream(model=model, max_tokens=64,
                                        messages=messages) as events:
                text = "".join(events.text_stream)
                final = events.get_final_message()
            return text, final.usage.output_tokens
        message = client.messages.create(model=model, max_tokens=64, messages=messages)
        block = message.content[0]
        assert block.type == "text"
        return block.text, message.usage.output_tokens


def _genai(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, int]:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    contents = PROMPT.format(tag=tag)
    if stream:
        chunks = list(client.models.generate_content_stream(model=model, contents=contents))
        text = "".join(chunk.text or "" for chunk in chunks)
        usage = chunks[-1].usage_metadata
    else:
        response = client.models.generate_content(model=model, contents=contents)
        text, usage = response.text or "", response.usage_metadata
    assert usage is not None and usage.candidates_token_count is not None
    return text, usage.candidates_token_count


CLIENTS = {"openai": _openai, "anthropic": _anthropic, "genai": _genai}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_every_client_through_every_upstream(
    gw: Gw, sim: Sim, client: str, upstream: str, stream: bool
) -> None:
    tag = f"{client}-{upstream}-{stream}"
    model = f"{UPSTREAMS[upstream]}/lorem"
    text, completion_tokens = await trio.to_thread.run_sync(
        CLIENTS[client], gw, model, tag, stream
    )
    assert text.split() == WORDS
    assert completion_tokens == 6
    [record] = sim.records(tag)
    assert record.dialect == upstream
    assert record.outcome == "completed"
    assert record.saw_authorization == FAKE_PROVIDER_KEY[:8]
    [row] = await gw.wait_records(1)
    assert (row.status, row.client_dialect, row.stream) == ("ok", _dialect(client), stream)


def _dialect(client: str) -> str:
    return "gemini" if client == "genai" else client


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_google_generativeai_exactly_as_the_spec_configures_it(
    gw: Gw, sim: Sim, upstream: str
) -> None:
    """The spec's snippet: transport="rest", client_options={"api_endpoint": ...}, stream."""

    def use_old_sdk() -> str:
        import google.generativeai as old_genai

        old_genai.configure(api_key=gw.key, transport="rest",
                            client_options={"api_endpoint": gw.url})
        # The old SDK's path template refuses a "/" in the model: a catalog alias instead.
        model = old_genai.GenerativeModel(f"{upstream}-lorem")
        response = model.generate_content(PROMPT.format(tag=f"old-{upstream}"), stream=True)
        return "".join(chunk.text for chunk in response)

    text = await trio.to_thread.run_sync(use_old_sdk)
    assert text.split() == WORDS
    [record] = sim.records(f"old-{upstream}")
    assert record.dialect == upstream and record.outcome == "completed"


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_anthropic_tool_call_round_trip(gw: Gw, sim: Sim, upstream: str) -> None:
    """A tool definition goes upstream, and a tool_result comes back as a tool message."""
    tools: Any = [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}}]

    def round_trip() -> tuple[str, int]:
        with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
            messages: Any = [
                {"role": "user", "content": "#sim tokens=3\nWeather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                     "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "#sim tokens=3\nThanks"}]},
            ]
            message = client.messages.create(model=f"{UPSTREAMS[upstream]}/lorem",
                                             max_tokens=32, messages=messages, tools=tools)
            block = message.content[0]
            assert block.type == "text"
            return block.text, message.usage.output_tokens

    text, tokens = await trio.to_thread.run_sync(round_trip)
    assert text.split() == WORDS[:3] and tokens == 3
    [record] = [r for r in sim.records() if r.dialect == upstream]
    assert record.outcome == "completed"


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "check"),
    [
        # FAULTS A18: no max_tokens on the Anthropic route, answered in Anthropic's shape.
        ("/v1/messages", {}, {"model": "fake/lorem", "messages": [
            {"role": "user", "content": "hi"}]}, 400,
         lambda j: j["type"] == "error" and j["error"]["type"] == "invalid_request_error"),
        ("/v1/messages", {}, {"model": "nope/x", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}]}, 400,
         lambda j: j["error"]["message"].endswith("Invalid model specified")),
        ("/v1/messages", {"x-api-key": "wrong"}, {}, 401,
         lambda j: j["error"]["type"] == "authentication_error"),
        ("/v1beta/models/nope/x:generateContent", {}, {"contents": [
            {"parts": [{"text": "hi"}]}]}, 400,
         lambda j: j["error"]["code"] == 400 and j["error"]["status"] == "INVALID_ARGUMENT"),
        ("/v1beta/models/fake/lorem:generateContent", {"x-goog-api-key": "wrong"}, {}, 401,
         lambda j: j["error"]["status"] == "UNAUTHENTICATED"),
        ("/v1beta/models/fake/lorem:explode", {}, {}, 404,
         lambda j: j["error"]["code"] == 404),
    ],
)
async def test_errors_come_in_the_route_s_own_dialect(
    gw: Gw, sim: Sim, path: str, headers: dict[str, str], body: dict[str, Any], status: int,
    check: Any,
) -> None:
    import httpx

    sent = {"x-api-key" if path.startswith("/v1/messages") else "x-goog-api-key": gw.key}
    sent.update(headers)
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}{path}", json=body, headers=sent)
    assert response.status_code == status, response.text
    assert check(response.json())
    assert sim.records() == []


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
async def test_mid_stream_death_is_the_dialect_s_error_event(gw: Gw, route: str) -> None:
    import httpx

    from gateway.wire import sse

    prompt = "#sim scenario=cut tokens=8\nhi"
    if route == "anthropic":
        url, headers = f"{gw.url}/v1/messages", {"x-api-key": gw.key}
        body: dict[str, Any] = {"model": "fake/lorem", "max_tokens": 50, "stream": True,
                                "messages": [{"role": "user", "content": prompt}]}
    else:
        url = f"{gw.url}/v1beta/models/fake/lorem:streamGenerateContent?alt=sse"
        headers = {"x-goog-api-key": gw.key}
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 200
    events = sse.Decoder().feed(response.content)
    last = json.loads(events[-1].data)
    if route == "anthropic":
        assert events[-1].event == "error" and last["type"] == "error"
        assert "message_stop" not in {e.event for e in events}  # never a clean end
    else:
        assert last["error"]["message"] == "upstream connection closed unexpectedly"
        assert not any('"finishReason"' in e.data for e in events)
    assert '" Lorem"' in response.text or "Lorem" in response.text


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
async def test_client_abort_closes_the_upstream_on_every_route(
    start_gateway: Any, sim: Sim, route: str
) -> None:
    import time

    import httpx

    async with start_gateway(commit_grace=0.05) as gw:
        prompt = f"#sim tokens=100000 interval_ms=2 tag=abort-{route}\nhi"
        if route == "anthropic":
            url, headers = f"{gw.url}/v1/messages", {"x-api-key": gw.key}
            body: dict[str, Any] = {"model": "fake-gemini/lorem", "max_tokens": 100000,
                                    "stream": True,
                                    "messages": [{"role": "user", "content": prompt}]}
        else:
            url = f"{gw.url}/v1beta/models/fake-anthropic/lorem:streamGenerateContent?alt=sse"
            headers = {"x-goog-api-key": gw.key}
            body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        async with httpx.AsyncClient() as client, client.stream(
            "POST", url, json=body, headers=headers
        ) as response:
            assert response.status_code == 200
            seen = 0
            async for block in response.aiter_raw():
                seen += block.count(b"Lorem") + block.count(b"ipsum")
                if seen >= 2:
                    break
            await response.aclose()
            closed = time.monotonic()
        record = await sim.wait_record(f"abort-{route}", lambda r: r.client_gone_at is not None)
        assert record.client_gone_at - closed < 0.05
        [row] = await gw.wait_records(1)
        assert row.status == "client_abort"


async def test_anthropic_keepalive_is_a_ping_event(start_gateway: Any, sim: Sim) -> None:
    import httpx

    async with start_gateway(commit_grace=0.01, keepalive=0.05) as gw:
        body = {"model": "fake/lorem", "max_tokens": 50, "stream": True, "messages": [
            {"role": "user", "content": "#sim scenario=slow_first_token first_token_ms=300 "
                                        "tokens=2\nhi"}]}
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{gw.url}/v1/messages", json=body,
                                         headers={"x-api-key": gw.key})
    assert response.text.count("event: ping\n") >= 2
    assert response.text.rstrip().endswith('data: {"type":"message_stop"}') or \
        "message_stop" in response.text.splitlines()[-2]


async def test_gemini_model_listing(gw: Gw) -> None:
    def listed() -> list[str]:
        client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url,
                                                            "api_version": "v1beta"})
        return [model.name or "" for model in client.models.list()]

    names = await trio.to_thread.run_sync(listed)
    assert "models/gemini-lorem" in names and "models/sim/lorem" in names
