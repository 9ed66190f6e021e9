"""Upstream faults, before and after the commit point, through real sockets.

Before the commit point a failure is an HTTP error with the spec's JSON body; after it, the
spec's terminal error event (``finish_reason: "error"``), never a clean end and never a
fake ``[DONE]``. Every case leaves exactly one record and no upstream connection open.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from gateway.wire import sse
from tests.support.gateways import GatewayFactory, Gw, Sim


def _body(tag: str, directive: str, *, stream: bool = True, model: str = "fake/lorem") -> dict:
    return {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhello"}],
    }


async def _post(gw: Gw, body: dict) -> tuple[httpx.Response, list[sse.Event], bytes]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{gw.url}/v1/chat/completions", json=body,
                                     headers=gw.headers)
    events = sse.Decoder().feed(response.content) if response.status_code == 200 else []
    return response, events, response.content


@pytest.mark.parametrize(
    ("scenario", "status", "retry_after"),
    [
        ("status_429", 429, "7"),
        ("status_500", 502, None),
        ("status_502", 502, None),
        ("status_503", 503, "7"),
        ("status_401", 502, None),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_status_before_commit_is_an_http_error(
    gw: Gw, sim: Sim, scenario: str, status: int, retry_after: str | None, stream: bool
) -> None:
    tag = f"{scenario}-{stream}"
    response, _, _ = await _post(gw, _body(tag, f"scenario={scenario} retry_after=7",
                                           stream=stream))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("retry-after") == retry_after
    error = response.json()["error"]
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    if scenario == "status_401":
        # The provider's own auth failure is ours to fix, not the client's: no detail leaks.
        assert error["message"] == "upstream authentication failed"
    [row] = await gw.wait_records(1)
    assert (row.status, row.http_status, row.completion_tokens) == ("upstream_error", status, 0)


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("cut", "upstream connection closed unexpectedly"),
        ("reset", "upstream connection closed unexpectedly"),
        ("midstream_error", "upstream reported an error"),
        ("malformed", "upstream sent an event that is not JSON"),
    ],
)
async def test_mid_stream_death_ends_with_the_error_event(
    start_gateway: GatewayFactory, sim: Sim, scenario: str, message: str
) -> None:
    async with start_gateway(commit_grace=0.001) as gw:
        response, events, raw = await _post(gw, _body(scenario, f"scenario={scenario} tokens=8"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert b"[DONE]" not in raw  # never a fake clean end
        chunks = [json.loads(e.data) for e in events]
        texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
        assert texts == [" Lorem", " ipsum", " dolor", " sit"]
        last = chunks[-1]
        assert last["choices"] == [
            {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        ]
        assert last["error"]["message"].startswith(message)
        assert last["usage"]["completion_tokens"] > 0
        [row] = await gw.wait_records(1)
        assert (row.status, row.http_status) == ("partial", 200)
        assert row.usage_estimated
    assert all(r.outcome != "running" for r in sim.records())


async def test_openai_sdk_raises_on_the_mid_stream_error(gw: Gw) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="upstream connection closed"):
        async with client, await client.chat.completions.create(
            model="fake/lorem", stream=True,
            messages=[{"role": "user", "content": "#sim scenario=cut tokens=6\nhi"}],
        ) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert received  # tokens came first, then the error


async def test_stall_past_the_idle_deadline(start_gateway: GatewayFactory, sim: Sim) -> None:
    async with start_gateway(commit_grace=0.001, idle=0.3, keepalive=0.1) as gw:
        response, events, raw = await _post(gw, _body("idle", "scenario=stall tokens=4"))
        assert response.status_code == 200
        assert raw.count(b": keepalive\n\n") >= 1  # silence was filled while waiting
        last = json.loads(events[-1].data)
        assert last["error"]["code"] == "timeout"
        assert "silent" in last["error"]["message"]
        record = await sim.wait_record("idle", lambda r: r.client_gone_at is not None)
        assert record.outcome == "client_gone"  # the gateway closed the upstream
        [row] = await gw.wait_records(1)
        assert (row.status, row.error_type) == ("partial", "timeout")


async def test_no_first_token_before_commit_is_a_504(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    async with start_gateway(commit_grace=5, first_token=0.2) as gw:
        response, _, _ = await _post(gw, _body("ft", "scenario=no_headers"))
        assert response.status_code == 504
        assert response.json()["error"]["code"] == 504
        await sim.wait_record("ft", lambda r: r.client_gone_at is not None)


@pytest.mark.parametrize("stream", [True, False])
async def test_connect_refused_is_a_fast_502(gw: Gw, stream: bool) -> None:
    response, _, _ = await _post(gw, _body("dead", "", stream=stream, model="dead/any"))
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "could not connect to the upstream"
    [row] = await gw.wait_records(1)
    assert row.status == "upstream_error" and row.deployment == "dead/any"


async def test_endless_stream_stops_at_the_total_deadline(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    """C10: a lively stream that never ends is ended by ``total``, with the terminal event."""
    async with start_gateway(commit_grace=0.001, total=0.5) as gw:
        response, events, raw = await _post(gw, _body("endless", "tokens=1000000 interval_ms=5"))
        assert response.status_code == 200
        last = json.loads(events[-1].data)
        assert last["error"]["code"] == "timeout"
        assert "total" in last["error"]["message"]
        assert last["usage"]["completion_tokens"] > 10
        assert b"[DONE]" not in raw
        await sim.wait_record("endless", lambda r: r.outcome == "client_gone")


async def test_non_stream_invalid_json_is_a_502(gw: Gw) -> None:
    response, _, _ = await _post(gw, _body("bad", "scenario=invalid_json", stream=False))
    assert response.status_code == 502
    assert "not JSON" in response.json()["error"]["message"]
    assert b"{not json" not in response.content  # the upstream body is never relayed raw


async def test_missing_usage_is_estimated_and_flagged(gw: Gw) -> None:
    _, events, raw = await _post(gw, _body("nousage", "scenario=no_usage tokens=8"))
    assert raw.endswith(b"data: [DONE]\n\n")
    usage = json.loads(events[-2].data)["usage"]  # the usage chunk is always sent
    assert usage["completion_tokens"] > 0
    [row] = await gw.wait_records(1)
    assert row.status == "ok" and row.usage_estimated


async def test_byte_split_upstream_gives_the_same_stream(gw: Gw) -> None:
    _, whole, _ = await _post(gw, _body("whole", "tokens=8"))
    _, split, _ = await _post(gw, _body("split", "scenario=byte_split tokens=8"))

    def content(events: list[sse.Event]) -> list[object]:
        return [json.loads(e.data).get("choices") for e in events if e.data != "[DONE]"]

    assert content(split) == content(whole)


async def test_a_non_streamed_answer_past_max_answer_bytes_is_cut_and_not_retried(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    """FAULTS F12: the whole answer is never held past the cap (it was 64 MiB), and another
    call would only cost as much again."""
    async with start_gateway(max_answer_bytes=64 * 1024) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{gw.url}/v1/chat/completions", headers=gw.headers,
                json={"model": "fast", "max_tokens": 100_000, "messages": [
                    {"role": "user", "content": "#sim tag=huge tokens=30000 interval_ms=0\nhi"}]})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "output_limit" and "65536 bytes" in error["message"]
        [row] = await gw.wait_records(1)
        assert (row.attempts, row.cost) == ("fake/lorem=output_limit", 0)
        assert len(sim.records("huge")) == 1  # not retried
