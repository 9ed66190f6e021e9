"""The fake upstream's HTTP core over real loopback: connections, keep-alive, pipelining,
protocol errors, control routes, redaction, the command line and Trio's clock."""

from __future__ import annotations

import functools
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from gateway.sim.scenarios import SCENARIOS
from gateway.sim.server import main
from tests.support.sim_clients import SPEAKERS, SimAt, assert_gone_promptly, receive_until

REPO = Path(__file__).resolve().parents[2]
OPENAI = SPEAKERS["openai"]


def chat(directive: str = "", *, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = OPENAI.request(directive, stream=stream)["json"]
    return body


async def test_keep_alive_reuses_the_connection_across_dialects(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    for tag, speaker in zip(("k1", "k2", "k3"), SPEAKERS.values(), strict=True):
        response = await client.post(**speaker.request(f"tag={tag}", stream=False))
        assert response.status_code == 200
    records = [sim.record(tag) for tag in ("k1", "k2", "k3")]
    assert [r.dialect for r in records] == ["openai", "anthropic", "gemini"]
    assert len({r.connection_id for r in records}) == 1


async def test_control_routes(sim: SimAt, client: httpx.AsyncClient) -> None:
    for tag in ("a", "b", "a"):
        await client.post("/v1/chat/completions", json=chat(f"tag={tag} tokens=1", stream=False))
    listed = (await client.get("/_sim/requests", params={"tag": "a"})).json()
    assert [(r["tag"], r["outcome"]) for r in listed] == [("a", "completed")] * 2
    assert len((await client.get("/_sim/requests")).json()) == 3
    assert (await client.delete("/_sim/requests")).status_code == 200
    assert (await client.get("/_sim/requests")).json() == [] == sim.server.records
    scenarios = (await client.get("/_sim/scenarios")).json()
    assert [s["name"] for s in scenarios] == list(SCENARIOS)
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/nope")).status_code == 404
    wrong = await client.get("/v1/chat/completions")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")


async def test_records_keep_only_a_prefix_of_any_credential(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    key = "secret-CANARY-0123456789"
    cases: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("o", "openai", {"authorization": f"Bearer {key}"}, {}),
        ("a", "anthropic", {"x-api-key": key}, {}),
        ("b", "anthropic", {"authorization": f"Bearer {key}"}, {}),  # as SDK 2.x sends it
        ("g", "gemini", {"x-goog-api-key": key}, {}),
        ("q", "gemini", {}, {"key": key}),
    ]
    for tag, dialect, headers, params in cases:
        request = SPEAKERS[dialect].request(f"tag={tag}", stream=False)
        request["headers"] = {**headers, "cookie": f"session={key}"}
        request["params"] = params
        response = await client.post(**request)
        assert response.status_code == 200
        assert key not in response.text
        record = sim.record(tag)
        assert record.saw_authorization == key[:8]
        assert "authorization" not in record.request_headers
    dumped = json.dumps([r.to_json() for r in sim.server.records])
    assert "CANARY" not in dumped


def raw_post(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@pytest.mark.usefixtures("no_gc_pauses")
async def test_client_reset_mid_stream_is_seen(sim: SimAt) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    await stream.send_all(raw_post(chat("tokens=100000 tag=rst")))
    await receive_until(stream, lambda got: got.count(b'"content":" ') >= 3)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closed_at = time.monotonic()
    await stream.aclose()
    await assert_gone_promptly(sim.record("rst"), closed_at)


async def test_pipelined_requests_are_answered_in_order(sim: SimAt) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", sim.port) as stream:
        await stream.send_all(
            raw_post(chat("tag=p1 tokens=2", stream=False))
            + raw_post(chat("tag=p2 tokens=3", stream=False))
        )
        received = await receive_until(stream, lambda got: got.count(b"chat.completion") == 2)
    assert received.index(b"sim-1") < received.index(b"sim-2")
    first, second = sim.record("p1"), sim.record("p2")
    assert (first.outcome, second.outcome) == ("completed", "completed")
    assert first.connection_id == second.connection_id


async def test_garbage_gets_a_400_and_a_close(sim: SimAt) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", sim.port) as stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        received = await receive_until(stream, lambda got: b"\r\n\r\n" in got)
        with trio.fail_after(2):
            while await stream.receive_some():
                pass  # the server closes after answering
    assert received.startswith(b"HTTP/1.1 400 ")
    assert sim.server.records == []


async def test_cli_serves_until_sigterm() -> None:
    command = [sys.executable, "-m", "gateway.sim.server", "--port", "0", "--tokens", "2"]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(trio.run_process, command, cwd=REPO, stdout=subprocess.PIPE)
        )
        assert process.stdout is not None
        banner = await receive_until(process.stdout, lambda got: got.endswith(b"\n"))
        url = banner.decode().split()[-1]
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200
            completion = await client.post("/v1/chat/completions", json=chat(stream=False))
            assert completion.json()["usage"]["completion_tokens"] == 2
        process.send_signal(signal.SIGTERM)
    assert process.returncode == 0


def test_cli_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--tokens", "many"])
    assert exit_.value.code == 2
    assert "expected a whole number" in capsys.readouterr().err


async def test_scenario_waits_follow_trios_clock(
    sim: SimAt, client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    # slow_first_token's default 30 s pass in virtual time: gateway tests of long deadlines
    # can run against this server under a MockClock.
    started = trio.current_time()
    body = chat("scenario=slow_first_token tokens=2 tag=v", stream=False)
    response = await client.post("/v1/chat/completions", json=body, timeout=60)
    assert response.json()["choices"][0]["message"]["content"] == " one two"
    assert trio.current_time() - started >= 30.0
    assert sim.record("v").outcome == "completed"
