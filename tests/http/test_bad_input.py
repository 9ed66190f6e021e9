"""FAULTS.md section A on ``POST /v1/chat/completions``: clear errors, no upstream call.

Each row goes through real sockets (httpx, or a raw socket where a client library would
refuse to send it) and asserts the status, the spec's error body, the blamed ``param``
where there is one, and that the fake upstream and the record store saw nothing.
"""

from __future__ import annotations

import json
import time
from functools import partial

import httpx
import pytest
import trio

from tests.support.gateways import GatewayFactory, Gw, Sim

MSGS = [{"role": "user", "content": "hi"}]


def ok(**changes: object) -> bytes:
    body: dict[str, object] = {"model": "fake/lorem", "messages": MSGS}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not DROP}).encode()


DROP = object()

# (row id, raw body, expected status, expected param or None)
CASES: list[tuple[str, bytes, int, str | None]] = [
    ("A1 not json", b"hello", 400, None),
    ("A1 empty", b"", 400, None),
    ("A1 truncated", b'{"model":', 400, None),
    ("A2 array", b"[]", 400, None),
    ("A2 scalar", b"1", 400, None),
    ("A2 null", b"null", 400, None),
    ("A4 missing model", ok(model=DROP), 400, "model"),
    ("A4 empty model", ok(model=""), 400, "model"),
    ("A4 numeric model", ok(model=123), 400, "model"),
    ("A5 unknown model", ok(model="nope/gpt-9"), 400, "model"),
    ("A5 unknown provider-less", ok(model="gpt-9"), 400, "model"),
    ("A7 missing messages", ok(messages=DROP), 400, "messages"),
    ("A7 empty messages", ok(messages=[]), 400, "messages"),
    ("A7 string messages", ok(messages="hi"), 400, "messages"),
    ("A7 bad role", ok(messages=[{"role": "wizard", "content": "hi"}]), 400,
     "messages.0.role"),
    ("A7 numeric content", ok(messages=[{"role": "user", "content": 5}]), 400,
     "messages.0.content"),
    ("A8 stream string", ok(stream="true"), 400, "stream"),
    ("A8 stream int", ok(stream=1), 400, "stream"),
    ("A8 stream null", ok(stream=None), 400, "stream"),
    ("A9 max_tokens -1", ok(max_tokens=-1), 400, "max_tokens"),
    ("A9 max_tokens 0", ok(max_tokens=0), 400, "max_tokens"),
    ("A9 max_tokens float", ok(max_tokens=1.5), 400, "max_tokens"),
    ("A9 max_tokens string", ok(max_tokens="100"), 400, "max_tokens"),
    ("A9 max_tokens huge", ok(max_tokens=10**30), 400, "max_tokens"),
    ("A12 duplicate model", b'{"model":"fake/lorem","model":"fake/echo","messages":[]}', 400,
     None),
    ("A12 duplicate stream", b'{"model":"fake/lorem","stream":false,"stream":true,'
     b'"messages":[{"role":"user","content":"hi"}]}', 400, None),
    ("A13 deep nesting", b"[" * 100_000, 400, None),
    ("A16 invalid utf-8", b'{"model":"fake/lorem","messages":[{"role":"user","content":"\xff"}]}',
     400, None),
    ("A16 overlong encoding", b'{"model":"fake/lorem","messages":[{"role":"user",'
     b'"content":"\xc0\xaf"}]}', 400, None),
    ("A16 lone surrogate", b'{"model":"fake/lorem","messages":[{"role":"user",'
     b'"content":"\\ud800"}]}', 400, None),
    ("A17 api_base", ok(api_base="http://127.0.0.1:1"), 400, "api_base"),
    ("A17 base_url", ok(base_url="http://127.0.0.1:1"), 400, "base_url"),
    ("A17 api_key", ok(api_key="sk-x"), 400, "api_key"),
    ("A17 extra_headers", ok(extra_headers={"x": "y"}), 400, "extra_headers"),
    ("S6 custom_llm_provider", ok(custom_llm_provider="openai"), 400, "custom_llm_provider"),
    ("n > 1 on a stream", ok(n=2, stream=True), 400, "n"),
    ("NaN temperature", b'{"model":"fake/lorem","messages":[],"temperature":NaN}', 400, None),
]


@pytest.mark.parametrize(("row", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_bad_body(
    gw: Gw, sim: Sim, row: str, body: bytes, status: int, param: str | None
) -> None:
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await client.post(
            f"{gw.url}/v1/chat/completions",
            content=body,
            headers={**gw.headers, "content-type": "application/json"},
        )
        elapsed = time.monotonic() - started
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert isinstance(error["message"], str) and len(error["message"]) > 5
    assert error.get("param") == param
    if row.startswith("A5"):
        assert error["message"].startswith("Invalid model specified")  # the spec's words
    if row.startswith("A13"):
        assert elapsed < 1.0  # found by the C scanner, not by a slow walk
    assert sim.records() == []
    assert await gw.records() == []


@pytest.mark.parametrize(
    "content_type", [b"text/plain", b"multipart/form-data; boundary=x",
                     b"application/x-www-form-urlencoded"]
)
async def test_wrong_content_type_is_415(gw: Gw, sim: Sim, content_type: bytes) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{gw.url}/v1/chat/completions", content=ok(),
            headers={**gw.headers, "content-type": content_type.decode()},
        )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == 415
    assert sim.records() == []


async def test_attacker_host_receives_nothing(gw: Gw) -> None:
    """S6: routing fields in a body never make the gateway connect anywhere."""
    connections = 0

    async def count(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, count, 0, host="127.0.0.1"))
        attacker = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        async with httpx.AsyncClient() as client:
            for field in ("api_base", "base_url"):
                response = await client.post(
                    f"{gw.url}/v1/chat/completions",
                    json={"model": "fake/lorem", "messages": MSGS, field: attacker},
                    headers=gw.headers,
                )
                assert response.status_code == 400
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert connections == 0


async def _raw(gw: Gw, request: bytes, read_limit: int = 65536) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.move_on_after(5):
            while b"\r\n\r\n" not in received or len(received) < read_limit:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received


async def test_oversized_body_with_content_length_is_413_before_reading(gw: Gw) -> None:
    """A14: a 33 MB Content-Length is refused on its headers; the connection closes."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + gw.key.encode() + b"\r\ncontent-length: 34603008\r\n\r\n"
    )
    answer = await _raw(gw, head + b"{" * 1024)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in answer.lower()
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["error"]["code"] == 413


async def test_oversized_chunked_body_is_413_once_over(start_gateway: GatewayFactory) -> None:
    """A15: without Content-Length the limit is enforced while reading."""
    async with start_gateway() as gw:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + gw.key.encode() + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        host, port = gw.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        answer = b""
        async with stream:
            await stream.send_all(head)
            chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
            with trio.move_on_after(10):
                try:
                    for _ in range(40):  # 40 MiB at most, well past the limit
                        await stream.send_all(chunk)
                except trio.BrokenResourceError:
                    pass  # the gateway stopped reading and closed: expected
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    answer += data
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


AUTH_VARIANTS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("missing", []),
    ("bearer only", [(b"authorization", b"Bearer")]),
    ("double space", [(b"authorization", b"bearer  {key}")]),
    ("two headers", [(b"authorization", b"Bearer {key}"), (b"authorization", b"Bearer {key}")]),
    ("wrong secret", [(b"authorization", b"Bearer {wrong}")]),
    ("unknown id", [(b"authorization", b"Bearer lr_live_000000000000_" + b"0" * 48)]),
    ("sql injection", [(b"authorization", b"Bearer ' OR 1=1; --")]),
    ("sql union", [(b"authorization", b"Bearer lr_live_' UNION SELECT hash FROM api_keys--")]),
    ("pg_sleep", [(b"authorization", b"Bearer x'; SELECT pg_sleep(5)--")]),
    ("basic scheme", [(b"authorization", b"Basic {key}")]),
    ("x-api-key only", [(b"x-api-key", b"{key}")]),
]


@pytest.mark.parametrize("variant", AUTH_VARIANTS, ids=[v[0] for v in AUTH_VARIANTS])
async def test_auth_failures_are_uniform_401s(
    gw: Gw, sim: Sim, variant: tuple[str, list[tuple[bytes, bytes]]]
) -> None:
    key = gw.key.encode()
    wrong = key[:-4] + (b"0000" if not key.endswith(b"0000") else b"1111")
    headers = [
        (name, value.replace(b"{key}", key).replace(b"{wrong}", wrong))
        for name, value in variant[1]
    ]
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        response = await client.post(
            f"{gw.url}/v1/chat/completions", content=ok(),
            headers=[(b"content-type", b"application/json"), *headers],
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["message"], error["type"]) == (
        401, "Invalid API key", "authentication_error")
    assert response.headers["www-authenticate"] == "Bearer"
    # S3: nothing of the key (any 8-character piece of it) is echoed.
    text = response.text
    assert not any(key[i:i + 8].decode() in text for i in range(len(key) - 8))
    assert elapsed < 1.0
    assert sim.records() == []


async def test_header_with_nul_is_refused_before_the_app(gw: Gw) -> None:
    answer = await _raw(
        gw,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer a\x00b\r\n"
        b"content-length: 2\r\n\r\n{}",
    )
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 401"))


async def test_unknown_route_and_wrong_method(gw: Gw) -> None:
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"{gw.url}/v1/nope", headers=gw.headers)
        wrong = await client.get(f"{gw.url}/v1/chat/completions", headers=gw.headers)
        case = await client.post(f"{gw.url}/V1/Chat/Completions", content=ok(),
                                 headers=gw.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert case.status_code == 404  # routes match the exact path, never a variant of it


@pytest.mark.parametrize(("model", "says"), [
    ("gpt-4o", "openai/gpt-4o (the provider 'openai' is not enabled: set OPENAI_API_KEY)"),
    ("openai/gpt-4o", "The provider 'openai' is not enabled: set OPENAI_API_KEY"),
    ("sim/lorme", "Close to: sim/lorem"),  # a provider that lists its models
])
async def test_an_unknown_model_says_which_and_what_to_do(gw: Gw, model: str, says: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{gw.url}/v1/chat/completions", headers=gw.headers,
                                     json={"model": model, "messages": [
                                         {"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"Invalid model specified: {model!r}.")
    assert says in message and "GET /v1/models" in message
