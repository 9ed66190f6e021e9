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

from tests.support.gateways import FAKE_PROVIDER_KEY, Gw, Sim

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
         lambda j: "Invalid model specified: 'nope/x'." in j["error"]["message"]),
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


def _streamed(
    gw: Gw, route: str, model: str, prompt: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) of a raw streamed request on the Anthropic or Gemini route."""
    if route == "anthropic":
        return f"{gw.url}/v1/messages", {"x-api-key": gw.key}, {
            "model": model, "max_tokens": 100000, "stream": True,
            "messages": [{"role": "user", "content": prompt}]}
    return (f"{gw.url}/v1beta/models/{model}:streamGenerateContent?alt=sse",
            {"x-goog-api-key": gw.key},
            {"contents": [{"role": "user", "parts": [{"text": prompt}]}]})


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
async def test_mid_stream_death_is_the_dialect_s_error_event(gw: Gw, route: str) -> None:
    import httpx

    from gateway.wire import sse

    prompt = "#sim scenario=cut tokens=8\nhi"
    url, headers, body = _streamed(gw, route, "fake/lorem", prompt)
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
    # The tokens before the cut reached the client first (half of eight).
    assert response.text.count("Lorem") == 1 and response.text.count("sit") == 1


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
async def test_client_abort_closes_the_upstream_on_every_route(
    start_gateway: Any, sim: Sim, route: str
) -> None:
    import time

    import httpx

    async with start_gateway(commit_grace=0.05) as gw:
        prompt = f"#sim tokens=100000 interval_ms=2 tag=abort-{route}\nhi"
        # Each route against the other dialect's upstream.
        model = "fake-gemini/lorem" if route == "anthropic" else "fake-anthropic/lorem"
        url, headers, body = _streamed(gw, route, model, prompt)
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
    assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_gemini_model_listing(gw: Gw) -> None:
    def listed() -> list[str]:
        client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url,
                                                            "api_version": "v1beta"})
        return [model.name or "" for model in client.models.list()]

    names = await trio.to_thread.run_sync(listed)
    assert "models/gemini-lorem" in names and "models/sim/lorem" in names


# -- A tool-call round trip: every client SDK, every upstream dialect ----------------------

TOOL_PROMPT = "#sim scenario=tool_call tokens=3 tag={tag}\nWhat is the weather in Paris?"
WEATHER_SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}
PARIS = {"city": "Paris"}


def _openai_tools(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, Any, str]:
    """(tool name, arguments, text after the tool result)."""
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_SCHEMA}}]
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        messages: Any = [{"role": "user", "content": TOOL_PROMPT.format(tag=tag)}]
        if stream:
            chunks = list(client.chat.completions.create(model=model, messages=messages,
                                                         tools=tools, stream=True))
            calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls
                     or ()]
            finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert finishes[-1] == "tool_calls", finishes
            call_id, name = calls[0].id, calls[0].function and calls[0].function.name
            arguments = "".join(c.function.arguments or "" for c in calls if c.function)
        else:
            answer = client.chat.completions.create(model=model, messages=messages, tools=tools)
            assert answer.choices[0].finish_reason == "tool_calls"
            [call] = answer.choices[0].message.tool_calls or []
            assert call.type == "function"
            call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert call_id and name
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"},
        ]
        second = client.chat.completions.create(model=model, messages=messages, tools=tools)
        assert second.choices[0].finish_reason == "stop"
        return name, json.loads(arguments), second.choices[0].message.content or ""


def _anthropic_tools(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, Any, str]:
    tools: Any = [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": WEATHER_SCHEMA}]
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        messages: Any = [{"role": "user", "content": TOOL_PROMPT.format(tag=tag)}]
        first: anthropic.types.Message
        if stream:
            with client.messages.stream(model=model, max_tokens=64, messages=messages,
                                        tools=tools) as events:
                first = events.get_final_message()
        else:
            first = client.messages.create(model=model, max_tokens=64, messages=messages,
                                           tools=tools)
        assert first.stop_reason == "tool_use", first
        [block] = [b for b in first.content if b.type == "tool_use"]
        assert block.id
        messages += [
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "sunny, 21 C"}]},
        ]
        second = client.messages.create(model=model, max_tokens=64, messages=messages,
                                        tools=tools)
        assert second.stop_reason == "end_turn"
        text = "".join(b.text for b in second.content if b.type == "text")
        return block.name, block.input, text


def _genai_tools(gw: Gw, model: str, tag: str, stream: bool) -> tuple[str, Any, str]:
    from google.genai import types

    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="get_weather", description="Weather for a city",
            parameters_json_schema=WEATHER_SCHEMA)])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents: list[Any] = [
        types.Content(role="user", parts=[types.Part(text=TOOL_PROMPT.format(tag=tag))])]
    finish: types.FinishReason | None
    if stream:
        chunks = list(client.models.generate_content_stream(model=model, contents=contents,
                                                            config=config))
        calls = [call for chunk in chunks for call in chunk.function_calls or ()]
        candidates = [c for chunk in chunks for c in chunk.candidates or ()]
        finish = [c.finish_reason for c in candidates if c.finish_reason][-1]
    else:
        response = client.models.generate_content(model=model, contents=contents, config=config)
        calls = response.function_calls or []
        finish = response.candidates[0].finish_reason if response.candidates else None
    assert finish == types.FinishReason.STOP
    [call] = calls
    assert call.name
    contents += [
        types.Content(role="model", parts=[types.Part(function_call=call)]),
        types.Content(role="user", parts=[types.Part.from_function_response(
            name=call.name, response={"result": "sunny, 21 C"})]),
    ]
    second = client.models.generate_content(model=model, contents=contents, config=config)
    return call.name, call.args, second.text or ""


TOOL_CLIENTS = {"openai": _openai_tools, "anthropic": _anthropic_tools, "genai": _genai_tools}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@pytest.mark.parametrize("client", list(TOOL_CLIENTS))
async def test_tool_call_round_trip_through_every_upstream(
    gw: Gw, sim: Sim, client: str, upstream: str, stream: bool
) -> None:
    """Turn 1 declares get_weather and gets a call to it; turn 2 returns the result in the
    client's own dialect and gets the text."""
    tag = f"tool-{client}-{upstream}-{stream}"
    model = f"{UPSTREAMS[upstream]}/lorem"
    name, arguments, text = await trio.to_thread.run_sync(
        TOOL_CLIENTS[client], gw, model, tag, stream
    )
    assert (name, arguments) == ("get_weather", PARIS)
    assert text.split() == WORDS[:3]
    first, second = sim.records(tag)
    assert first.dialect == second.dialect == upstream
    assert first.outcome == second.outcome == "completed"
    assert (first.stream, second.stream) == (stream, False)


async def test_anthropic_message_start_reports_the_prompt_size(gw: Gw) -> None:
    """Anthropic clients read the prompt's size from message_start (an estimate there; the
    provider's own count arrives in message_delta)."""
    import httpx

    from gateway.wire import sse

    body = {"model": "fake/lorem", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "#sim tokens=2\n" + "word " * 40}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{gw.url}/v1/messages", json=body,
                                     headers={"x-api-key": gw.key})
    events = {e.event: json.loads(e.data) for e in sse.Decoder().feed(response.content)}
    estimated = events["message_start"]["message"]["usage"]["input_tokens"]
    reported = events["message_delta"]["usage"]["input_tokens"]
    assert estimated > 40 and reported > 40
