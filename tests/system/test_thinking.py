"""Multi-turn tool use with thinking: reasoning signatures reach the client and come back.

An Anthropic model that thinks before a tool call signs its thinking; a Gemini model signs
its function call (``thoughtSignature``). The provider refuses the next turn unless the
client sends those signatures back with the history. Here each official SDK talks to an
upstream of its own dialect through the gateway, streaming and not: the first answer must
carry the signature the fake upstream wrote, and the second request the upstream receives
must carry it back, unchanged, where the provider wants it.
"""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import pytest
import trio
from google import genai
from google.genai import types as genai_types

from tests.support.gateways import Gw, Sim

PROMPT = "#sim scenario=tool_call interval_ms=0\nWeather in Paris?"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def _anthropic_turns(gw: Gw, stream: bool, model: str = "anthropic-lorem") -> Any:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        asked: Any = dict(
            model=model, max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 2048},
            tools=[{"name": "weather", "input_schema": SCHEMA}])
        history: list[Any] = [{"role": "user", "content": PROMPT}]
        if stream:
            with client.messages.stream(messages=history, **asked) as events:
                first = events.get_final_message()
        else:
            first = client.messages.create(messages=history, **asked)
        call = next(b for b in first.content if b.type == "tool_use")
        history += [{"role": "assistant", "content": first.content},
                    {"role": "user", "content": [{"type": "tool_result",
                                                  "tool_use_id": call.id, "content": "sunny"}]}]
        client.messages.create(messages=history, **asked)
        return first


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_anthropic_thinking_signatures_make_the_round_trip(
        gw: Gw, sim: Sim, stream: bool) -> None:
    first = await trio.to_thread.run_sync(_anthropic_turns, gw, stream)
    asked, followed = sim.records()
    signature = f"EqSim{asked.id}"  # what the fake upstream signed its thinking with
    thinking = [b for b in first.content if b.type == "thinking"]
    assert [b.signature for b in thinking] == [signature]
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    # The next turn reaches the upstream with the thinking block, signature and all.
    assert followed.body["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": thinking[0].thinking, "signature": signature}


def _genai_turns(gw: Gw, stream: bool) -> Any:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    config = genai_types.GenerateContentConfig(
        thinking_config=genai_types.ThinkingConfig(thinking_budget=1024),
        tools=[genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(
            name="weather", parameters_json_schema=SCHEMA)])],
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True))
    history: list[Any] = [genai_types.Content(role="user", parts=[
        genai_types.Part(text=PROMPT)])]
    if stream:
        chunks = list(client.models.generate_content_stream(
            model="gemini-lorem", contents=history, config=config))
        parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])
                 if p.function_call is not None or p.thought_signature is not None]
        answer = genai_types.Content(role="model", parts=parts)
    else:
        response = client.models.generate_content(model="gemini-lorem", contents=history,
                                                  config=config)
        answer = response.candidates[0].content
    call = next(p.function_call for p in answer.parts if p.function_call is not None)
    history += [answer, genai_types.Content(role="user", parts=[
        genai_types.Part.from_function_response(name=call.name, response={"sky": "sunny"})])]
    client.models.generate_content(model="gemini-lorem", contents=history, config=config)
    return answer


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_gemini_thought_signatures_make_the_round_trip(
        gw: Gw, sim: Sim, stream: bool) -> None:
    answer = await trio.to_thread.run_sync(_genai_turns, gw, stream)
    asked, followed = sim.records()
    signature = base64.b64encode(f"sig-sim-{asked.id}".encode()).decode()
    [call_part] = [p for p in answer.parts if p.function_call is not None]
    # The signature is on the function call's part, as Gemini put it.
    assert call_part.thought_signature == base64.b64decode(signature)
    model_turn = followed.body["contents"][1]
    [sent] = [p for p in model_turn["parts"] if "functionCall" in p]
    assert sent["thoughtSignature"] == signature


def _openai_turns(gw: Gw) -> Any:
    import openai

    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        asked: Any = dict(model="anthropic-lorem", max_tokens=4096, reasoning_effort="low",
                          tools=[{"type": "function", "function": {
                              "name": "weather", "parameters": SCHEMA}}])
        history: list[Any] = [{"role": "user", "content": PROMPT}]
        first = client.chat.completions.create(messages=history, **asked).choices[0].message
        call = first.tool_calls[0]
        history += [first.to_dict(),
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
        client.chat.completions.create(messages=history, **asked)
        return first.to_dict()


async def test_an_openai_client_carries_anthropic_signatures_as_reasoning_details(
        gw: Gw, sim: Sim) -> None:
    first = await trio.to_thread.run_sync(_openai_turns, gw)
    asked, followed = sim.records()
    signature = f"EqSim{asked.id}"
    assert first["reasoning_details"] == [{
        "type": "reasoning.text", "signature": signature, "index": 0,
        "text": "Which tool answers this best?", "format": "anthropic-claude-v1"}]
    # Sent back as OpenRouter's clients do, it reaches Anthropic as a signed thinking block.
    assert followed.body["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "Which tool answers this best?",
        "signature": signature}


async def test_a_gemini_signature_held_by_an_anthropic_client_goes_back_to_gemini(
        gw: Gw, sim: Sim) -> None:
    first = await trio.to_thread.run_sync(_anthropic_turns, gw, False, "gemini-lorem")
    asked, followed = sim.records()
    signature = base64.b64encode(f"sig-sim-{asked.id}".encode()).decode()
    [thinking] = [b for b in first.content if b.type == "thinking"]
    # Whose it is travels inside the opaque value the client keeps.
    assert thinking.signature == f"arouter.gemini.{signature}"
    [sent] = [p for p in followed.body["contents"][1]["parts"] if "functionCall" in p]
    assert sent["thoughtSignature"] == signature
