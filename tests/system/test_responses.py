"""The Responses API through real sockets, with the official ``openai`` SDK and the OpenAI
Agents SDK, to an upstream of every dialect (the fake upstream speaks each).

Every request here leaves exactly one ledger row; stored answers belong to the key that
made them; a client that leaves stops the upstream at once.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
import trio
from pydantic import BaseModel

from tests.support.gateways import GatewayFactory, Gw, Sim, new_key

UPSTREAMS = ["openai-lorem", "anthropic-lorem", "gemini-lorem"]
PROMPT = "#sim tokens=3 interval_ms=0\nhi"
TOOL_PROMPT = "#sim scenario=tool_call tokens=3\nWhat is the weather in Paris?"
TOOLS: list[Any] = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": True}]


def client(gw: Gw, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or gw.key, max_retries=0)


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_text_whole_and_streamed_from_every_upstream(gw: Gw, model: str) -> None:
    def run() -> tuple[Any, Any, list[str]]:
        with client(gw) as c:
            whole = c.responses.create(model=model, input=PROMPT, instructions="be brief")
            with c.responses.stream(model=model, input=PROMPT) as stream:
                kinds = [event.type for event in stream]
                streamed = stream.get_final_response()
        return whole, streamed, kinds

    whole, streamed, kinds = await trio.to_thread.run_sync(run)
    for response in (whole, streamed):
        assert response.status == "completed" and response.model == model
        assert response.output_text == " Lorem ipsum dolor"
        assert response.usage.output_tokens == 3
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 3 and kinds[-1] == "response.completed"
    rows = await gw.wait_records(2)
    assert {(r.status, r.completion_tokens) for r in rows} == {("ok", 3)}
    assert {r.generation_id.removeprefix("gen-") for r in rows} == {
        whole.id.removeprefix("resp_"), streamed.id.removeprefix("resp_")}


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("chained", [True, False])
async def test_function_calling_over_two_turns(gw: Gw, model: str, chained: bool) -> None:
    def run() -> tuple[Any, Any]:
        with client(gw) as c:
            first = c.responses.create(model=model, input=TOOL_PROMPT, tools=TOOLS)
            [call] = [item for item in first.output if item.type == "function_call"]
            result = {"type": "function_call_output", "call_id": call.call_id,
                      "output": '{"weather": "sunny"}'}
            if chained:  # the gateway holds the conversation
                second = c.responses.create(model=model, tools=TOOLS, input=[result],
                                            previous_response_id=first.id)
            else:  # the client sends it all back, items as they came
                second = c.responses.create(model=model, tools=TOOLS, input=[
                    {"role": "user", "content": TOOL_PROMPT}, *first.output, result])
            return first, second

    first, second = await trio.to_thread.run_sync(run)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments.replace(" ", "") == '{"city":"Paris"}'
    # The fake upstream answers text only once it sees the call's result in the history.
    assert second.output_text == " Lorem ipsum dolor"
    assert second.previous_response_id == (first.id if chained else None)
    assert len(await gw.wait_records(2)) == 2


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("model", UPSTREAMS)
async def test_structured_output_parses_from_every_upstream(gw: Gw, model: str) -> None:
    def run() -> Any:
        with client(gw) as c:
            return c.responses.parse(model=model, input=PROMPT, text_format=Weather)

    response = await trio.to_thread.run_sync(run)
    assert isinstance(response.output_parsed, Weather)


async def test_a_stored_response_is_read_listed_and_deleted_by_its_key_only(
        gw: Gw, sim: Sim) -> None:
    other, _ = await new_key(gw)

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with client(gw) as c, client(gw, other) as stranger:
            made = c.responses.create(model="openai-lorem", input=PROMPT)
            out["got"] = c.responses.retrieve(made.id)
            out["items"] = list(c.responses.input_items.list(made.id))
            for call in (lambda: stranger.responses.retrieve(made.id),
                         lambda: stranger.responses.create(
                             model="openai-lorem", input="x", previous_response_id=made.id),
                         lambda: stranger.responses.delete(made.id)):
                try:
                    call()
                    out.setdefault("stranger", []).append("served")
                except openai.APIStatusError as exc:
                    out.setdefault("stranger", []).append(exc.status_code)
            unstored = c.responses.create(model="openai-lorem", input=PROMPT, store=False)
            try:
                c.responses.retrieve(unstored.id)
            except openai.NotFoundError:
                out["unstored"] = "not found"
            c.responses.delete(made.id)
            try:
                c.responses.retrieve(made.id)
            except openai.NotFoundError:
                out["deleted"] = "not found"
            out["made"] = made
        return out

    out = await trio.to_thread.run_sync(run)
    assert out["got"].id == out["made"].id and out["got"].output_text == " Lorem ipsum dolor"
    [item] = out["items"]
    assert item.type == "message" and item.content[0].text == PROMPT
    assert out["stranger"] == [404, 400, 404]
    assert out["unstored"] == out["deleted"] == "not found"


def _agent(gw: Gw, model: str) -> tuple[str, list[str]]:
    import asyncio

    from agents import (
        Agent,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # no trace export to OpenAI: nothing leaves the machine
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"sunny in {city}"

    async def go() -> str:
        api = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
        agent = Agent(name="weather", instructions="Answer with the weather.",
                      tools=[get_weather],
                      model=OpenAIResponsesModel(model=model, openai_client=api))
        result = await Runner.run(agent, TOOL_PROMPT)
        await api.close()
        return str(result.final_output)

    return asyncio.run(go()), cities


@pytest.mark.parametrize("model", ["anthropic-lorem", "gemini-lorem"])
async def test_an_openai_agents_sdk_agent_runs_its_tool_through_any_upstream(
        gw: Gw, model: str) -> None:
    answer, cities = await trio.to_thread.run_sync(_agent, gw, model)
    assert cities == ["Paris"] and answer == " Lorem ipsum dolor"
    rows = await gw.wait_records(2)  # the call, then the answer with the tool's result
    assert [r.status for r in rows] == ["ok", "ok"]


@pytest.mark.parametrize("first_token", [True, False])
async def test_a_client_that_leaves_closes_the_upstream_at_once(
        start_gateway: GatewayFactory, sim: Sim, first_token: bool) -> None:
    async with start_gateway(commit_grace=0.05) as gw:
        tag = f"leave-{first_token}"
        wait = "" if first_token else " scenario=slow_first_token first_token_ms=5000"
        body = {"model": "anthropic-lorem", "stream": True,
                "input": f"#sim tokens=100000 interval_ms=2 tag={tag}{wait}\nhi"}
        async with httpx.AsyncClient() as http, http.stream(
                "POST", f"{gw.url}/v1/responses", json=body, headers=gw.headers) as response:
            assert response.status_code == 200
            async for block in response.aiter_raw():
                if (b"output_text.delta" in block) if first_token else (
                        b"response.in_progress" in block):
                    break
            await response.aclose()
            closed = time.monotonic()
        record = await sim.wait_record(tag, lambda r: r.client_gone_at is not None)
        assert record.client_gone_at - closed < 0.05
        [row] = await gw.wait_records(1)
        assert row.status == "client_abort"


# -- a provider that serves the Responses API itself ------------------------------------------

def _native(sim: Sim, allow: bool = False) -> dict[str, Any]:
    from gateway.config import ModelRoute, ProviderConfig
    provider = ProviderConfig(name="native", dialect="openai", base_url=f"{sim.url}/v1",
                              api_key_env="AROUTER_TEST_FAKE_KEY", responses="native",
                              allow_surcharges=allow)
    return {"providers": {"native": provider},
            "models": {"native-lorem": ModelRoute("native-lorem", "native", "lorem")}}


async def test_a_native_provider_gets_the_request_and_the_client_its_events_as_sent(
        start_gateway: GatewayFactory, sim: Sim) -> None:
    async with start_gateway(**_native(sim)) as gw:
        def run() -> tuple[Any, Any, list[str], Any, Any]:
            with client(gw) as c:
                whole = c.responses.create(model="native-lorem", input=PROMPT,
                                           metadata={"team": "a"})
                with c.responses.stream(model="native-lorem", input=PROMPT) as stream:
                    kinds = [event.type for event in stream]
                    streamed = stream.get_final_response()
                first = c.responses.create(model="native-lorem", input=TOOL_PROMPT,
                                           tools=TOOLS)
                [call] = [i for i in first.output if i.type == "function_call"]
                second = c.responses.create(
                    model="native-lorem", tools=TOOLS, previous_response_id=first.id,
                    input=[{"type": "function_call_output", "call_id": call.call_id,
                            "output": "sunny"}])
                return whole, streamed, kinds, second, c.responses.retrieve(streamed.id)

        whole, streamed, kinds, second, stored = await trio.to_thread.run_sync(run)
        rows = await gw.wait_records(4)
    for response in (whole, streamed):
        assert response.output_text == " Lorem ipsum dolor" and response.model == "native-lorem"
        assert response.id.startswith("resp_") and "sim" not in response.id
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert stored.output_text == " Lorem ipsum dolor" and stored.id == streamed.id
    assert second.output_text == " Lorem ipsum dolor"
    bodies = [r.body for r in sim.records()]
    assert all(b["model"] == "lorem" and b["store"] is False for b in bodies)
    assert all("reasoning.encrypted_content" in b["include"] for b in bodies)
    # The second turn: our stored conversation written out, no id the upstream never saw.
    assert "previous_response_id" not in bodies[-1]
    assert [i.get("type", "message") for i in bodies[-1]["input"]] == [
        "message", "function_call", "function_call_output"]
    assert {r.upstream_dialect for r in rows} == {"openai"} and all(
        r.status == "ok" and r.completion_tokens > 0 for r in rows)


async def test_built_in_tools_need_a_native_provider_and_its_surcharge_allowed(
        start_gateway: GatewayFactory, sim: Sim) -> None:
    web = {"tools": [{"type": "web_search_preview"}], "model": "native-lorem",
           "input": PROMPT}
    outcomes = []
    for allow in (False, True):
        async with start_gateway(**_native(sim, allow)) as gw, httpx.AsyncClient(
                base_url=gw.url, headers=gw.headers) as http:
            outcomes.append(await http.post("/v1/responses", json=web))
            outcomes.append(await http.post("/v1/responses",
                                            json={**web, "model": "openai-lorem"}))
    refused_paid, refused_translated, served, still_translated = outcomes
    assert refused_paid.status_code == 400 and "allow_surcharges" in refused_paid.text
    for refused in (refused_translated, still_translated):
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools.0.type"
    assert served.status_code == 200, served.text
    [record] = sim.records()
    assert record.body["tools"] == [{"type": "web_search_preview"}]


async def test_file_search_and_mcp_are_never_honoured(gw: Gw) -> None:
    async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers) as http:
        for tool in ({"type": "file_search", "vector_store_ids": ["vs_1"]},
                     {"type": "mcp", "server_label": "x", "server_url": "https://x"}):
            refused = await http.post("/v1/responses", json={
                "model": "openai-lorem", "input": "hi", "tools": [tool]})
            assert refused.status_code == 400 and "account" in refused.text
