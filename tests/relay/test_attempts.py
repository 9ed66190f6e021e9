"""Routing through real sockets: fallbacks, retries, hedging and circuit breaking.

Deployments are fake upstreams on loopback whose *default* plan differs (a ``#sim`` line
with only a tag keeps each server's default), so one request can meet a failing deployment
and a healthy one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from gateway.config import Deployment, ModelRoute, ProviderConfig, Routing
from gateway.sim.scenarios import Plan
from gateway.sim.server import SimServer
from gateway.wire import sse
from tests.support.clocks import FakeClock
from tests.support.gateways import GatewayFactory, Gw, Sim
from tests.support.streams import check_done_rule


async def start_sim(nursery: trio.Nursery, **plan: Any) -> Sim:
    server = SimServer(defaults=Plan(**{"tokens": 10, "interval": 0.002, **plan}))
    port = await nursery.start(server.serve)
    return Sim(server, f"http://127.0.0.1:{port}")


def provider(name: str, sim: Sim) -> ProviderConfig:
    return ProviderConfig(name=name, dialect="openai", base_url=f"{sim.url}/v1",
                          api_key_env="AROUTER_TEST_FAKE_KEY")


def route(name: str, *deployments: Deployment, hedge_after: float | None = None) -> ModelRoute:
    first = deployments[0]
    return ModelRoute(name, first.provider, first.model, deployments=deployments,
                      hedge_after=hedge_after)


async def chat(gw: Gw, model: str, tag: str, stream: bool = True,
               **extra: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    body = {"model": model, "stream": stream,
            "messages": [{"role": "user", "content": f"#sim tag={tag}\nhello"}], **extra}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{gw.url}/v1/chat/completions", json=body,
                                     headers=gw.headers)
    chunks = []
    if stream and response.status_code == 200:
        check_done_rule(response.content)
        chunks = [json.loads(e.data) for e in sse.Decoder().feed(response.content)
                  if e.data != "[DONE]"]
    return response, chunks


def text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c.get("choices"))


async def test_a_failing_deployment_falls_back_invisibly(
    start_gateway: GatewayFactory, sim: Sim, nursery: trio.Nursery
) -> None:
    bad = await start_sim(nursery, scenario="status_503")
    models = {"fb": route("fb", Deployment("bad", "lorem"),
                          Deployment("fake", "lorem", priority=1))}
    async with start_gateway(models=models, providers={"bad": provider("bad", bad)}) as gw:
        for stream in (True, False):
            response, chunks = await chat(gw, "fb", f"fb-{stream}", stream)
            assert response.status_code == 200
            if stream:
                assert text(chunks) and chunks[-1]["usage"]["completion_tokens"] == 10
        rows = await gw.wait_records(2)
    assert {r.attempts for r in rows} == {"bad/lorem=service_unavailable;fake/lorem=ok"}
    assert {r.deployment for r in rows} == {"fake/lorem"}
    assert all(r.ended_at is not None for r in bad.records())


async def test_after_the_first_token_there_is_no_silent_switch(
    start_gateway: GatewayFactory, nursery: trio.Nursery, sim: Sim
) -> None:
    cut = await start_sim(nursery, scenario="cut", tokens=8)
    models = {"cf": route("cf", Deployment("cutter", "lorem"),
                          Deployment("fake", "lorem", priority=1))}
    async with start_gateway(models=models, providers={"cutter": provider("cutter", cut)},
                             commit_grace=0.01) as gw:
        response, _ = await chat(gw, "cf", "cf")
        [row] = await gw.wait_records(1)
    events = sse.Decoder().feed(response.content)
    assert json.loads(events[-1].data)["choices"][0]["finish_reason"] == "error"
    assert (row.status, row.deployment, row.attempts) == (
        "partial", "cutter/lorem", "cutter/lorem=upstream_error")
    assert not sim.records("cf")  # the other deployment was never called


async def test_a_429_cools_the_deployment_down_for_its_retry_after(
    start_gateway: GatewayFactory, nursery: trio.Nursery, sim: Sim
) -> None:
    limited = await start_sim(nursery, scenario="status_429", retry_after=20)
    models = {
        "rl": route("rl", Deployment("limited", "lorem"), Deployment("fake", "lorem", priority=1)),
        "only": route("only", Deployment("limited", "lorem")),
    }
    async with start_gateway(models=models, providers={"limited": provider("limited", limited)}
                             ) as gw:
        first, _ = await chat(gw, "rl", "rl1")
        second, _ = await chat(gw, "rl", "rl2")
        alone, _ = await chat(gw, "only", "only1", stream=False)
        health = {d["deployment"]: d for d in gw.running.gateway.circuits.snapshot()}
        rows = await gw.wait_records(3)
    assert first.status_code == second.status_code == 200
    # The second request went straight to the fallback: the limited one was cooling down.
    attempts = {r.generation_id: r.attempts for r in rows}
    assert sorted(attempts.values()) == sorted([
        "limited/lorem=rate_limit_error;fake/lorem=ok", "fake/lorem=ok", ""])
    assert len(limited.records()) == 1
    # With nowhere else to go: 503 "no available providers", with the wait as Retry-After.
    assert alone.status_code == 503
    assert 18 <= int(alone.headers["retry-after"]) <= 20
    assert health["limited/lorem"]["state"] == "open"
    assert health["limited/lorem"]["open_for_seconds"] > 18


async def test_consecutive_failures_open_the_circuit_and_a_failed_probe_opens_it_again(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    models = {"cb": route("cb", Deployment("dead", "x"), Deployment("fake", "lorem", priority=1))}
    routing = Routing(failure_threshold=3, cooldown=30, backoff=0.01)
    clock = FakeClock()
    async with start_gateway(models=models, routing=routing, clock=clock) as gw:
        for n in range(3):
            assert (await chat(gw, "cb", f"cb{n}"))[0].status_code == 200
        health = {d["deployment"]: d for d in gw.running.gateway.circuits.snapshot()}
        assert health["dead/x"]["state"] == "open"
        assert (await chat(gw, "cb", "cb-open"))[0].status_code == 200
        clock.advance(29)
        assert (await chat(gw, "cb", "cb-still-open"))[0].status_code == 200
        clock.advance(1)  # the cooldown passes: one half-open probe may go
        assert (await chat(gw, "cb", "cb-probe"))[0].status_code == 200
        rows = {r.generation_id: r.attempts for r in await gw.wait_records(6)}
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{gw.url}/metrics")).text
    # Three failures open the circuit; while open (twice) the dead deployment is skipped;
    # the probe after the cooldown tries it once more, fails, and the circuit opens again.
    assert sorted(rows.values()) == sorted(
        ["dead/x=upstream_error;fake/lorem=ok"] * 3 + ["fake/lorem=ok"] * 2
        + ["dead/x=upstream_error;fake/lorem=ok"])
    assert 'arouter_deployment_circuit{deployment="dead/x"} 1.0' in metrics


async def test_a_long_stream_as_the_half_open_probe_closes_the_circuit_at_its_first_token(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    """FAULTS F10: the probe need not finish for the deployment to serve again."""
    routing = Routing(failure_threshold=1, cooldown=30, max_attempts=1)
    clock = FakeClock()
    async with (start_gateway(routing=routing, clock=clock) as gw,
                httpx.AsyncClient(timeout=30) as client):
        async def post(directive: str) -> httpx.Response:
            return await client.post(f"{gw.url}/v1/chat/completions", headers=gw.headers,
                                     json={"model": "fast", "stream": True, "messages": [
                                         {"role": "user", "content": f"#sim {directive}\nhi"}]})

        assert (await post("scenario=status_500")).status_code == 502  # the circuit opens
        assert (await post("tokens=1")).status_code == 503  # while open: none available
        clock.advance(30)  # the cooldown passes: one half-open probe may go
        async with client.stream(
            "POST", f"{gw.url}/v1/chat/completions", headers=gw.headers,
            json={"model": "fast", "stream": True, "messages": [
                {"role": "user", "content": "#sim tokens=200 interval_ms=20\nprobe"}]},
        ) as probe:
            lines = probe.aiter_lines()
            async for line in lines:
                if line.startswith("data: {"):
                    break  # the probe's first token has come; it streams on for 4 s
            states = {d["deployment"]: d["state"] for d in gw.running.gateway.circuits.snapshot()}
            assert states["fake/lorem"] == "closed"
            others = [await post("tokens=2") for _ in range(3)]
            assert [r.status_code for r in others] == [200, 200, 200]


async def test_hedging_cancels_the_slow_deployment_at_the_winners_first_token(
    start_gateway: GatewayFactory, nursery: trio.Nursery, sim: Sim
) -> None:
    slow = await start_sim(nursery, first_token_delay=5.0)
    # Priority orders the first call: slow first, then the hedge goes to fake.
    models = {"hedged": route("hedged", Deployment("slow", "lorem"),
                             Deployment("fake", "lorem", priority=1), hedge_after=0.2)}
    async with start_gateway(models=models, providers={"slow": provider("slow", slow)}) as gw:
        response, chunks = await chat(gw, "hedged", "hedge")
        [row] = await gw.wait_records(1)
    assert response.status_code == 200
    assert chunks[-1]["usage"]["completion_tokens"] == 10  # one clean stream
    assert row.attempts == "slow/lorem=hedge_lost;fake/lorem=ok"
    [loser] = slow.records("hedge")
    [winner] = sim.records("hedge")
    assert loser.first_token_at is None and winner.first_token_at is not None
    await slow.wait_record("hedge", lambda r: r.client_gone_at is not None)
    assert loser.client_gone_at is not None
    # The loser's upstream connection closed within 50 ms of the winner's first token
    # (both fake upstreams share this process's monotonic clock).
    assert 0 <= loser.client_gone_at - winner.first_token_at < 0.05
    health = {d["deployment"]: d for d in gw.running.gateway.circuits.snapshot()}
    assert health["slow/lorem"]["state"] == "closed"  # losing a race is not a failure


async def test_the_answer_names_the_model_that_answered(gw: Gw, sim: Sim) -> None:
    _, chunks = await chat(gw, "dead/x", "mine", models=["fake/lorem"])
    assert chunks and {c["model"] for c in chunks} == {"fake/lorem"}
    whole, _ = await chat(gw, "dead/x", "whole", stream=False, models=["fake/lorem"])
    assert whole.json()["model"] == "fake/lorem"
    _, chunks = await chat(gw, "fast", "asked")  # no fallback: the name asked for
    assert chunks and {c["model"] for c in chunks} == {"fast"}


async def test_the_clients_own_fallbacks_and_provider_order(gw: Gw, sim: Sim) -> None:
    response, _ = await chat(gw, "dead/x", "mine", models=["fake/lorem"])
    assert response.status_code == 200
    ordered, _ = await chat(gw, "dead/x", "order", models=["fake/lorem"],
                            provider={"order": ["fake"]})
    only, _ = await chat(gw, "dead/x", "only", models=["fake/lorem"],
                         provider={"only": ["dead"]})
    nowhere, _ = await chat(gw, "fake/lorem", "none", provider={"ignore": ["fake"]})
    # Three rows: the 503 had nowhere to go, so it was refused before admission.
    rows = sorted(r.attempts for r in await gw.wait_records(3))
    assert ordered.status_code == 200
    assert only.status_code == 502
    assert nowhere.status_code == 503
    assert rows == [
        "dead/x=upstream_error;dead/x=upstream_error;dead/x=upstream_error",  # only dead
        "dead/x=upstream_error;fake/lorem=ok",
        "fake/lorem=ok",  # provider.order put fake first
    ]
    unknown, _ = await chat(gw, "fake/lorem", "bad", models=["nope"])
    assert unknown.status_code == 400



async def test_provider_sort_latency_sends_the_client_to_the_fastest_deployment(
    start_gateway: GatewayFactory, sim: Sim, nursery: trio.Nursery
) -> None:
    # "slow" comes first in the route and answers its first token 150 ms late.
    slow = await start_sim(nursery, first_token_delay=0.15)
    models = {"two": route("two", Deployment("slow", "lorem"), Deployment("fake", "lorem"))}
    async with start_gateway(models=models, providers={"slow": provider("slow", slow)},
                             routing=Routing(strategy="least_busy")) as gw:
        # Without a sort, least_busy at rest takes the route's first: the slow one,
        # until a client's fallback list makes the fast one answer once too.
        for n in range(2):
            plain, _ = await chat(gw, "two", f"plain{n}")
            assert plain.status_code == 200
        fast_once, _ = await chat(gw, "fake/lorem", "fast-once")
        assert fast_once.status_code == 200
        sorted_ = [await chat(gw, "two", f"sorted{n}", provider={"sort": "latency"})
                   for n in range(3)]
        assert all(response.status_code == 200 for response, _ in sorted_)
        rows = {r.attempts for r in await gw.wait_records(6)}
    assert [r for r in rows if r.startswith("slow/")] == ["slow/lorem=ok"]  # plain ones
    assert len(slow.records()) == 2
    assert [r.tag for r in sim.records() if r.tag and r.tag.startswith("sorted")] == [
        "sorted0", "sorted1", "sorted2"]


async def test_a_deployment_that_cannot_honour_the_request_is_skipped_with_the_reason(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    # Anthropic first by priority, but it has no logit_bias: the OpenAI deployment serves.
    models = {"mixed": route("mixed", Deployment("fake-anthropic", "lorem"),
                             Deployment("fake", "lorem", priority=1))}
    async with start_gateway(models=models) as gw:
        response, chunks = await chat(gw, "mixed", "skip", logit_bias={"50256": -100})
        [row] = await gw.wait_records(1)
    assert response.status_code == 200 and text(chunks)
    assert row.attempts == ("fake-anthropic/lorem=skipped: cannot honour 'logit_bias';"
                            "fake/lorem=ok")
    assert row.deployment == "fake/lorem" and row.dropped == ""
    [record] = sim.records("skip")
    assert record.dialect == "openai" and record.body["logit_bias"] == {"50256": -100}
