"""The bench's HTTP/1.1 parser: framing, keep-alive, errors, and split-independence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bench.http1 import Endpoint, ProtocolError, ResponseParser, render_request

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"f\r\ndata: {\"a\":1}\n\n\r\n"
    b"E;ext=1\r\ndata: [DONE]\n\n\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\nhello world"
TO_EOF = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH
RESPONSES = {"chunked": CHUNKED, "length": LENGTH, "to-eof": TO_EOF, "interim": INTERIM}


def parse(data: bytes, cuts: list[int] | None = None) -> tuple[ResponseParser, bytes]:
    parser = ResponseParser()
    body = b""
    start = 0
    for cut in [*sorted(cuts or []), len(data)]:
        body += parser.feed(data[start:cut])
        start = max(start, cut)
    if not parser.done:
        parser.feed_eof()
    return parser, body


def test_chunked_body_and_trailers() -> None:
    parser, body = parse(CHUNKED)
    assert body == b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert parser.head is not None and parser.head.status == 200
    assert parser.head.get("content-type") == "text/event-stream"
    assert parser.done and parser.reusable


def test_content_length_body() -> None:
    parser, body = parse(LENGTH)
    assert body == b"hello world" and parser.reusable


def test_body_to_eof_cannot_keep_the_connection() -> None:
    parser, body = parse(TO_EOF)
    assert body == b"until the end" and parser.done and not parser.reusable


def test_interim_head_is_skipped() -> None:
    parser, body = parse(INTERIM)
    assert parser.head is not None and parser.head.status == 200 and body == b"hello world"


@pytest.mark.parametrize("name", list(RESPONSES))
def test_one_byte_at_a_time_gives_the_same_result(name: str) -> None:
    data = RESPONSES[name]
    whole, body = parse(data)
    split, split_body = parse(data, list(range(len(data))))
    assert (split.head, split_body, split.reusable) == (whole.head, body, whole.reusable)


def test_one_whole_chunk_per_feed_takes_the_fast_path_to_the_same_result() -> None:
    head = CHUNKED.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    pieces = [head, b"f\r\ndata: {\"a\":1}\n\n\r\n", b"E;ext=1\r\ndata: [DONE]\n\n\r\n",
              b"3\r\nabc\r\n", b"0\r\nX-Trailer: yes\r\n\r\n"]
    parser = ResponseParser()
    body = b"".join(parser.feed(piece) for piece in pieces)
    assert body == b'data: {"a":1}\n\ndata: [DONE]\n\nabc' and parser.done and parser.reusable
    bad = ResponseParser()
    bad.feed(pieces[0])
    with pytest.raises(ProtocolError):  # the fast path leaves a bad chunk to the slow one
        bad.feed(b"3\r\nabcXY")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(RESPONSES)), st.lists(st.integers(0, 400), max_size=12))
def test_any_split_gives_the_same_result(name: str, cuts: list[int]) -> None:
    data = RESPONSES[name]
    whole, body = parse(data)
    split, split_body = parse(data, [min(c, len(data)) for c in cuts])
    assert (split.head, split_body) == (whole.head, body)


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
    ],
)
def test_keep_alive_rules(head: bytes, keep: bool) -> None:
    parser, _ = parse(head)
    assert parser.done and parser.reusable is keep


def test_bytes_after_the_response_forbid_reuse() -> None:
    parser, _ = parse(LENGTH + b"HTTP/1.1 200 OK\r\n")
    assert parser.leftover == b"HTTP/1.1 200 OK\r\n" and not parser.reusable


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_malformed_responses_raise_and_stay_failed(data: bytes) -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError):
        parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.feed(b"more")


def test_early_eof_is_an_error() -> None:
    parser = ResponseParser()
    parser.feed(LENGTH[:-3])
    with pytest.raises(ProtocolError, match="closed before"):
        parser.feed_eof()


def test_oversized_head_is_refused() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="too large"):
        for _ in range(100):
            parser.feed(b"X-Filler: " + b"x" * 1000 + b"\r\n")


def test_request_rendering() -> None:
    data = render_request("POST", "/v1/chat/completions", "127.0.0.1:8080",
                          [("Content-Type", "application/json")], b"{}")
    assert data == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    ("url", "target", "host"),
    [
        ("http://127.0.0.1:8080", "/v1/chat/completions", "127.0.0.1:8080"),
        ("http://localhost:8080/", "/v1/chat/completions", "localhost:8080"),
        ("http://127.0.0.1/v1", "/v1/chat/completions", "127.0.0.1"),
        ("http://[::1]:9/proxy/v1/chat/completions", "/proxy/v1/chat/completions", "[::1]:9"),
        ("http://example.test/api", "/api/v1/chat/completions", "example.test"),
    ],
)
def test_endpoint_parsing(url: str, target: str, host: str) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.chat_target, endpoint.host_header) == (target, host)


@pytest.mark.parametrize("url", ["ftp://x", "http://", "127.0.0.1:8080", "http://h:99999",
                                 "http://h/?q=1", "https://example.test"])
def test_bad_endpoints(url: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(url)
