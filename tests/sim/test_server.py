"""The fake upstream over real loopback HTTP, driven by httpx and the official OpenAI SDK."""

from __future__ import annotations

import functools
import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest
import trio
import trio.testing

from gateway.sim.scenarios import SCENARIOS, Plan, token_texts
from gateway.sim.server import Record, SimServer, main

# Small and fast: 10 tokens 2 ms apart unless a directive says otherwise.
DEFAULTS = Plan(tokens=10, interval=0.002)
PROMPT = "one two three"
CLIENT_KEY = "sk-test-client-key"
REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN = 0.05  # seconds from the client's close to client_gone_at

# Leaving a stream early (httpx) or at [DONE] / an error event (the OpenAI SDK, which breaks
# out of its SSE iterator without closing it) leaves the clients' inner async generators
# suspended; under Trio their garbage collection warns, and warnings are errors here.
# The clients' quirk, not the server's: ignored by name, for the tests that need it.
CLIENT_GENERATORS_LEFT_OPEN = pytest.mark.filterwarnings(
    "ignore:Async generator '(openai|httpx2?|httpcore2?)[.]:ResourceWarning"
)


@attrs.frozen
class Sim:
    server: SimServer
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, tag: str) -> Record:
        (record,) = self.server.find(tag)
        return record


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Sim:
    server = SimServer(defaults=DEFAULTS)
    port = await nursery.start(server.serve)
    return Sim(server, port)


@pytest.fixture
async def client(sim: Sim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5) as client:
        yield client


@pytest.fixture
async def sdk(sim: Sim) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{sim.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=5
    ) as sdk:
        yield sdk


def chat(
    directive: str = "",
    *,
    stream: bool = True,
    usage: bool = False,
    model: str = "sim-echo",
    prompt: str = PROMPT,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"{prompt}\n#sim {directive}"},
        ],
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def data_of(raw: bytes) -> list[str]:
    """The data fields of a complete SSE body (our server writes one data line per event)."""
    events = raw.decode().split("\n\n")
    assert events[-1] == "", "the body must end with a complete event"
    assert all(event.startswith("data: ") for event in events[:-1])
    return [event.removeprefix("data: ") for event in events[:-1]]


def contents(events: list[str]) -> str:
    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    return "".join(
        choice["delta"].get("content", "") for chunk in chunks for choice in chunk["choices"]
    )


async def poll(predicate: Callable[[], object], within: float = 1.0) -> None:
    """Wait until ``predicate()`` holds, looking every millisecond, for ``within`` seconds.
    Records carry their own timestamps, so the polling step never blurs a measurement."""
    for _ in range(int(within / 0.001)):
        if predicate():
            return
        await trio.sleep(0.001)
    raise AssertionError(f"not true within {within} s")


async def read_then_leave(
    client: httpx.AsyncClient, body: dict[str, Any], count: int, linger: float = 0.0
) -> float:
    """Stream ``body``, read ``count`` content tokens, wait ``linger``, then leave the
    ``client.stream`` block early (which closes the connection); returns when it left."""
    seen = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        # Keep a reference: a dropped iterator is finalised at once, and httpx's finaliser
        # chain would close the connection before the moment this function reports.
        chunks = response.aiter_raw()
        async for chunk in chunks:
            seen += chunk.count(b'"content":" ')
            if seen >= count:
                break
        assert seen >= count, f"stream ended after {seen} tokens"
        await trio.sleep(linger)
        closed_at = time.monotonic()
    return closed_at


@CLIENT_GENERATORS_LEFT_OPEN
async def test_sdk_stream_with_include_usage_ends_with_a_usage_chunk(
    sim: Sim, sdk: openai.AsyncOpenAI
) -> None:
    stream = await sdk.chat.completions.create(
        model="sim-echo",
        messages=[{"role": "user", "content": f"{PROMPT}\n#sim tokens=5 tag=u"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " one two three one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    usage = last.usage
    assert (usage.completion_tokens, usage.total_tokens) == (5, 5 + usage.prompt_tokens)
    record = sim.record("u")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 5, True)
    assert record.started_at < record.first_token_at < record.ended_at  # type: ignore[operator]
    assert record.saw_authorization == CLIENT_KEY[:8]
    assert "authorization" not in record.request_headers
    assert CLIENT_KEY not in json.dumps(record.to_json())


async def test_raw_stream_without_include_usage_has_no_usage(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=chat("tag=r")) as response:
        raw = await response.aread()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    events = data_of(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk" and first["model"] == "sim-echo"
    assert first["id"].startswith("chatcmpl-")
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert contents(events) == "".join(token_texts("echo", PROMPT, 10))
    assert len(chunks) == 1 + 10 + 1  # role, tokens, finish
    assert sim.record("r").tokens_sent == 10


async def test_max_tokens_cuts_the_stream_with_finish_reason_length(
    client: httpx.AsyncClient,
) -> None:
    body = {**chat(usage=True), "max_tokens": 3}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = data_of(await response.aread())
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert contents(events) == " one two three"


async def test_sdk_non_stream_returns_a_completion_with_usage(
    sim: Sim, sdk: openai.AsyncOpenAI
) -> None:
    completion = await sdk.chat.completions.create(
        model="gpt-lorem", messages=[{"role": "user", "content": "hi\n#sim tokens=4 tag=n"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "".join(token_texts("lorem", "", 4))
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    record = sim.record("n")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 4, False)
    # It answers when the stream would have ended: 3 intervals after the first token.
    assert record.ended_at - record.started_at >= 0.006  # type: ignore[operator]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("status", [401, 429, 500, 502, 503])
async def test_status_scenarios_answer_with_openai_error_bodies(
    sim: Sim, client: httpx.AsyncClient, status: int, stream: bool
) -> None:
    body = chat(f"scenario=status_{status} tag=s", stream=stream)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert response.headers.get("retry-after") == ("20" if status == 429 else None)
    record = sim.record("s")
    assert (record.outcome, record.headers_sent, record.tokens_sent) == ("error_status", True, 0)


async def test_retry_after_comes_from_the_directive(client: httpx.AsyncClient) -> None:
    body = chat("scenario=status_503 retry_after=3", stream=False)
    response = await client.post("/v1/chat/completions", json=body)
    assert (response.status_code, response.headers["retry-after"]) == (503, "3")


async def test_sdk_maps_status_scenarios_to_its_exceptions(sdk: openai.AsyncOpenAI) -> None:
    for scenario, exception in [
        ("status_429", openai.RateLimitError),
        ("status_401", openai.AuthenticationError),
        ("status_503", openai.InternalServerError),
    ]:
        with pytest.raises(exception, match="simulated"):
            await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"#sim scenario={scenario}"}]
            )


async def test_cut_ends_the_connection_mid_body(sim: Sim, client: httpx.AsyncClient) -> None:
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("scenario=cut tag=c", usage=True)
        ) as response:
            async for chunk in response.aiter_raw():
                received += chunk
    assert contents(data_of(bytes(received))) == "".join(token_texts("echo", PROMPT, 5))
    assert b"[DONE]" not in received and b'"usage":{' not in received
    record = sim.record("c")
    assert (record.outcome, record.tokens_sent, record.client_gone_at) == ("cut", 5, None)


async def test_non_stream_cut_delivers_half_the_announced_body(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/v1/chat/completions", json=chat("scenario=cut tag=c", stream=False))
    assert sim.record("c").outcome == "cut"


async def test_reset_ends_the_connection_with_an_rst(sim: Sim, client: httpx.AsyncClient) -> None:
    received = bytearray()
    with pytest.raises(httpx.ReadError, match="reset"):  # ECONNRESET, not a clean EOF
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat("scenario=reset tag=x")
        ) as response:
            async for chunk in response.aiter_raw():
                received += chunk
    # Bytes that reached the client before the RST are still delivered.
    assert received.count(b'"content":" ') == 5
    record = sim.record("x")
    assert (record.outcome, record.tokens_sent) == ("reset", 5)


@CLIENT_GENERATORS_LEFT_OPEN
async def test_midstream_error_sends_an_error_event_and_ends(
    sim: Sim, client: httpx.AsyncClient, sdk: openai.AsyncOpenAI
) -> None:
    body = chat("scenario=midstream_error tag=e", usage=True)
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = data_of(await response.aread())
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert contents(events[:-1]) == "".join(token_texts("echo", PROMPT, 5))
    assert "[DONE]" not in events
    record = sim.record("e")
    assert (record.outcome, record.tokens_sent) == ("error_event", 5)

    stream = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "#sim scenario=midstream_error"}],
        stream=True,
    )
    with pytest.raises(openai.APIError, match="simulated"):
        async for _ in stream:
            pass


async def test_malformed_sends_a_broken_event_after_half(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=malformed")
    ) as response:
        events = data_of(await response.aread())
    assert events[-1] == "{not json"
    assert contents(events[:-1]) == "".join(token_texts("echo", PROMPT, 5))


async def test_invalid_json_breaks_both_shapes_from_the_start(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    body = chat("scenario=invalid_json", stream=False)
    whole = await client.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        whole.json()
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=invalid_json tag=i")
    ) as response:
        events = data_of(await response.aread())
    assert events == ["{not json"]
    assert sim.record("i").outcome == "error_event"


async def test_no_usage_completes_without_the_usage_chunk(client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", "/v1/chat/completions", json=chat("scenario=no_usage", usage=True)
    ) as response:
        events = data_of(await response.aread())
    assert events[-1] == "[DONE]"
    assert all(json.loads(event).get("usage") is None for event in events[:-1])
    whole = await client.post("/v1/chat/completions", json=chat("scenario=no_usage", stream=False))
    assert "usage" not in whole.json()


async def test_byte_split_stream_decodes_like_a_normal_one(client: httpx.AsyncClient) -> None:
    prompt = "héllo wörld ✓ 漢字 \u2028line"
    async with client.stream(
        "POST", "/v1/chat/completions",
        json=chat("scenario=byte_split tokens=6", usage=True, prompt=prompt),
    ) as response:
        raw = await response.aread()
    events = data_of(raw)
    assert contents(events) == "".join(token_texts("echo", prompt, 6))
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 6
    assert events[-1] == "[DONE]"


async def test_slow_first_token_sends_headers_then_waits(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    body = chat("scenario=slow_first_token first_token_ms=60 tokens=2 tag=f")
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        record = sim.record("f")
        assert record.headers_sent and record.first_token_at is None
        await response.aread()
    assert record.first_token_at - record.started_at >= 0.06  # type: ignore[operator]
    assert record.outcome == "completed"


async def test_keep_alive_reuses_the_connection(sim: Sim, client: httpx.AsyncClient) -> None:
    for tag in ("k1", "k2"):
        response = await client.post("/v1/chat/completions", json=chat(f"tag={tag}", stream=False))
        assert response.status_code == 200
    assert sim.record("k1").connection_id == sim.record("k2").connection_id


async def assert_gone_promptly(record: Record, closed_at: float) -> None:
    await poll(lambda: record.client_gone_at is not None)
    assert record.client_gone_at is not None
    assert 0 <= record.client_gone_at - closed_at < GONE_WITHIN
    assert record.outcome == "client_gone"
    sent = record.tokens_sent
    await trio.sleep(0.02)  # ten intervals: no token may follow
    assert record.tokens_sent == sent
    assert record.ended_at is not None


@CLIENT_GENERATORS_LEFT_OPEN
async def test_client_closing_mid_stream_is_seen_at_once(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    closed_at = await read_then_leave(client, chat("tokens=100000 tag=g"), 3)
    record = sim.record("g")
    await assert_gone_promptly(record, closed_at)
    assert 3 <= record.tokens_sent < 100


@CLIENT_GENERATORS_LEFT_OPEN
async def test_client_leaving_before_headers_is_seen(sim: Sim, client: httpx.AsyncClient) -> None:
    cancel = trio.CancelScope()

    async def wait_for_headers() -> None:
        with cancel:
            await client.post("/v1/chat/completions", json=chat("scenario=no_headers tag=h"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_headers)
        await poll(lambda: sim.server.find("h"))
        closed_at = time.monotonic()
        cancel.cancel()
    record = sim.record("h")
    await assert_gone_promptly(record, closed_at)
    assert not record.headers_sent


@CLIENT_GENERATORS_LEFT_OPEN
async def test_client_leaving_a_stall_is_seen(sim: Sim, client: httpx.AsyncClient) -> None:
    closed_at = await read_then_leave(client, chat("scenario=stall tag=st"), 5, linger=0.01)
    record = sim.record("st")
    assert record.tokens_sent == 5
    await assert_gone_promptly(record, closed_at)


async def test_bad_requests_get_openai_400s_and_a_record(
    sim: Sim, client: httpx.AsyncClient
) -> None:
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        (b"hello", "parse the JSON"),
        (b"[1]", "JSON object"),
        ({"messages": []}, "'model'"),
        (chat("tokens=lots"), "expected a whole number"),
        (chat("flavour=mint"), "unknown key"),
    ]
    for body, message in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await client.post("/v1/chat/completions", content=content)
        assert response.status_code == 400
        error = response.json()["error"]
        assert message in error["message"] and error["type"] == "invalid_request_error"
    assert [r.outcome for r in sim.server.records] == ["error_status"] * len(cases)


async def test_control_routes(sim: Sim, client: httpx.AsyncClient) -> None:
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


def raw_post(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def receive_until(stream: trio.abc.ReceiveStream, done: Callable[[bytes], bool]) -> bytes:
    received = b""
    with trio.fail_after(2):
        while not done(received):
            data = await stream.receive_some()
            assert data, f"connection closed after {received!r}"
            received += data
    return received


async def test_client_reset_mid_stream_is_seen(sim: Sim) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    await stream.send_all(raw_post(chat("tokens=100000 tag=rst")))
    await receive_until(stream, lambda got: got.count(b'"content":" ') >= 3)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    closed_at = time.monotonic()
    await stream.aclose()
    await assert_gone_promptly(sim.record("rst"), closed_at)


async def test_pipelined_requests_are_answered_in_order(sim: Sim) -> None:
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


async def test_garbage_gets_a_400_and_a_close(sim: Sim) -> None:
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
    sim: Sim, client: httpx.AsyncClient, autojump_clock: trio.testing.MockClock
) -> None:
    # slow_first_token's default 30 s pass in virtual time: gateway tests of long deadlines
    # can run against this server under a MockClock.
    started = trio.current_time()
    body = chat("scenario=slow_first_token tokens=2 tag=v", stream=False)
    response = await client.post("/v1/chat/completions", json=body, timeout=60)
    assert response.json()["choices"][0]["message"]["content"] == " one two"
    assert trio.current_time() - started >= 30.0
    assert sim.record("v").outcome == "completed"
