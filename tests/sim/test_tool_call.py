"""The ``tool_call`` scenario in every dialect, checked with the official SDKs pointed straight
at the fake upstream: a call to the first declared tool while no tool result is in, the text
once one is (or when no tool is declared)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
import trio
from google import genai
from google.genai import types

from gateway.sim.scenarios import SCENARIOS, token_texts
from tests.support.sim_clients import (
    ANTHROPIC_KEY,
    CLIENT_GENERATORS_LEFT_OPEN,
    GEMINI_KEY,
    OPENAI_KEY,
    SimAt,
)

DIRECTIVE = "#sim scenario=tool_call tokens=3"
QUESTION = f"{DIRECTIVE}\nWeather in Paris?"
PARIS = {"city": "Paris"}
TEXT = "".join(token_texts("lorem", "", 3))
SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_the_table_declares_the_arguments_in_fragments() -> None:
    fragments = SCENARIOS["tool_call"].tool_arguments
    assert fragments is not None and len(fragments) > 1
    assert json.loads("".join(fragments)) == PARIS


# -- OpenAI --------------------------------------------------------------------------------

OPENAI_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": SCHEMA}},
]


def _openai(sim: SimAt) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key=OPENAI_KEY, max_retries=0,
                              timeout=5)


@CLIENT_GENERATORS_LEFT_OPEN
async def test_openai_stream_calls_the_first_tool_in_fragments(sim: SimAt) -> None:
    async with _openai(sim) as sdk:
        stream = await sdk.chat.completions.create(
            model="sim-lorem", messages=[{"role": "user", "content": QUESTION}],
            tools=OPENAI_TOOLS, stream=True, stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or ()]
    assert calls[0].id is not None and calls[0].id.startswith("call_")
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    fragments = [call.function.arguments for call in calls if call.function]
    assert len([f for f in fragments if f]) == 2
    assert json.loads("".join(f or "" for f in fragments)) == PARIS
    assert not any(delta.content for delta in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_openai_completion_calls_the_tool_then_answers_the_result(sim: SimAt) -> None:
    async with _openai(sim) as sdk:
        messages: Any = [{"role": "user", "content": QUESTION}]
        first = await sdk.chat.completions.create(model="sim-lorem", messages=messages,
                                                  tools=OPENAI_TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls or []
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == PARIS
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        second = await sdk.chat.completions.create(model="sim-lorem", messages=messages,
                                                   tools=OPENAI_TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == TEXT
    [first_record, second_record] = sim.server.records
    assert first_record.scenario == second_record.scenario == "tool_call"
    assert first_record.outcome == second_record.outcome == "completed"


async def test_openai_without_tools_the_scenario_is_text(sim: SimAt) -> None:
    async with _openai(sim) as sdk:
        answer = await sdk.chat.completions.create(
            model="sim-lorem", messages=[{"role": "user", "content": QUESTION}])
    assert answer.choices[0].message.content == TEXT
    assert answer.choices[0].finish_reason == "stop"


# -- Anthropic -----------------------------------------------------------------------------

ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "input_schema": SCHEMA},
                        {"name": "get_time", "input_schema": SCHEMA}]


def _anthropic(sim: SimAt) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.url, api_key=ANTHROPIC_KEY, max_retries=0,
                                    timeout=5)


@CLIENT_GENERATORS_LEFT_OPEN
async def test_anthropic_stream_ends_with_a_tool_use_block(sim: SimAt) -> None:
    async with _anthropic(sim) as sdk, sdk.messages.stream(
        model="sim-lorem", max_tokens=100, tools=ANTHROPIC_TOOLS,
        messages=[{"role": "user", "content": QUESTION}],
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    partials = [e.delta.partial_json for e in events
                if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len([p for p in partials if p]) == 2
    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert block.name == "get_weather" and block.input == PARIS
    assert final.usage.output_tokens == 2


async def test_anthropic_message_calls_the_tool_then_answers_the_result(sim: SimAt) -> None:
    async with _anthropic(sim) as sdk:
        messages: Any = [{"role": "user", "content": QUESTION}]
        first = await sdk.messages.create(model="sim-lorem", max_tokens=100,
                                          tools=ANTHROPIC_TOOLS, messages=messages)
        assert first.stop_reason == "tool_use"
        [block] = first.content
        assert block.type == "tool_use" and block.name == "get_weather"
        assert block.input == PARIS
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
        ]
        second = await sdk.messages.create(model="sim-lorem", max_tokens=100,
                                           tools=ANTHROPIC_TOOLS, messages=messages)
    assert second.stop_reason == "end_turn"
    [text] = second.content
    assert text.type == "text" and text.text == TEXT


# -- Gemini --------------------------------------------------------------------------------

GEMINI_TOOLS: list[Any] = [types.Tool(function_declarations=[
    types.FunctionDeclaration(name="get_weather", parameters_json_schema=SCHEMA),
    types.FunctionDeclaration(name="get_time", parameters_json_schema=SCHEMA),
])]


def _gemini(sim: SimAt) -> genai.Client:
    return genai.Client(api_key=GEMINI_KEY, http_options={"base_url": sim.url, "timeout": 5000})


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_gemini_calls_the_tool_then_answers_the_result(sim: SimAt, stream: bool) -> None:
    config = types.GenerateContentConfig(
        tools=GEMINI_TOOLS,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    def round_trip() -> tuple[list[types.FunctionCall], str, str | None]:
        client = _gemini(sim)
        try:
            contents: list[Any] = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]
            if stream:
                chunks = list(client.models.generate_content_stream(
                    model="gemini-lorem", contents=contents, config=config))
                calls = [call for chunk in chunks for call in chunk.function_calls or ()]
                candidate = chunks[-1].candidates
            else:
                response = client.models.generate_content(
                    model="gemini-lorem", contents=contents, config=config)
                calls = response.function_calls or []
                candidate = response.candidates
            assert candidate and candidate[0].finish_reason == types.FinishReason.STOP
            contents += [
                types.Content(role="model", parts=[types.Part(function_call=calls[0])]),
                types.Content(role="user", parts=[types.Part.from_function_response(
                    name="get_weather", response={"result": "sunny"})]),
            ]
            second = client.models.generate_content(model="gemini-lorem", contents=contents,
                                                    config=config)
            finish = second.candidates[0].finish_reason if second.candidates else None
            return calls, second.text or "", finish
        finally:
            client.close()

    calls, text, finish = await trio.to_thread.run_sync(round_trip)
    [call] = calls
    assert call.name == "get_weather" and call.args == PARIS
    assert text == TEXT and finish == types.FinishReason.STOP
