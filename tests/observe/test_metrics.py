"""``GET /metrics`` parsed by the official prometheus_client parser, moving as requests,
aborts and errors happen."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateways import GatewayFactory, Gw, Sim


async def _scrape(gw: Gw) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{gw.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _body(content: str, stream: bool = True) -> dict[str, object]:
    return {"model": "fake/lorem", "stream": stream,
            "messages": [{"role": "user", "content": content}]}


async def test_counters_move_with_requests_aborts_and_errors(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    async with start_gateway(commit_grace=0.01) as gw:
        before = await _scrape(gw)
        assert _get(before, "arouter_open_streams") == 0
        async with httpx.AsyncClient() as client:
            url = f"{gw.url}/v1/chat/completions"
            ok = await client.post(url, json=_body("#sim tokens=5\nhi"), headers=gw.headers)
            assert ok.status_code == 200
            bad = await client.post(url, json={"model": "nope"}, headers=gw.headers)
            assert bad.status_code == 400
            # Not streamed: a stream would commit (200) during the retries' backoff.
            failed = await client.post(url, json=_body("#sim scenario=status_500\nhi", False),
                                       headers=gw.headers)
            assert failed.status_code == 502
            cut = await client.post(url, json=_body("#sim scenario=cut tokens=6\nhi"),
                                    headers=gw.headers)
            assert b'"finish_reason":"error"' in cut.content
            # A client that leaves mid-stream, while the open-streams gauge is up.
            async with client.stream("POST", url, headers=gw.headers, json=_body(
                    "#sim tokens=100000 interval_ms=2 tag=gone\nhi")) as response:
                async for _ in response.aiter_bytes():
                    during = await _scrape(gw)
                    break
        await sim.wait_record("gone", lambda r: r.client_gone_at is not None)
        await gw.wait_records(4)
        for _ in range(100):  # the abort settles asynchronously
            after = await _scrape(gw)
            if _get(after, "arouter_cancellations_total", phase="streaming"):
                break
            await trio.sleep(0.01)

    route = {"route": "chat_completions", "dialect": "openai"}
    assert _get(during, "arouter_open_streams") == 1
    assert _get(after, "arouter_open_streams") == 0
    assert _get(after, "arouter_requests_total", **route, status="200") == 3  # ok, cut, gone
    assert _get(after, "arouter_requests_total", **route, status="502") == 1
    assert _get(after, "arouter_rejections_total", route="chat_completions", status="400") == 1
    assert _get(after, "arouter_request_outcomes_total", outcome="ok") == 1
    assert _get(after, "arouter_request_outcomes_total", outcome="partial") == 1
    assert _get(after, "arouter_request_outcomes_total", outcome="upstream_error") == 1
    assert _get(after, "arouter_request_outcomes_total", outcome="client_abort") == 1
    assert _get(after, "arouter_cancellations_total", phase="streaming") == 1
    assert _get(after, "arouter_cancel_propagation_seconds_count") == 1
    assert _get(after, "arouter_cancel_propagation_seconds_sum") < 0.05
    assert _get(after, "arouter_upstream_errors_total", deployment="fake/lorem",
                type="upstream_error") == 2
    assert _get(after, "arouter_tokens_total", model="fake/lorem", kind="completion") >= 5 + 3
    assert _get(after, "arouter_time_to_first_token_seconds_count",
                route="chat_completions") == 3
    assert _get(after, "arouter_request_duration_seconds_count", route="chat_completions",
                stream="true") == 3
    assert _get(after, "arouter_request_duration_seconds_count", route="chat_completions",
                stream="false") == 1


async def test_health_and_readiness(gw: Gw) -> None:
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{gw.url}/healthz")
        ready = await client.get(f"{gw.url}/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
