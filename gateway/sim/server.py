"""The fake upstream: an OpenAI-compatible chat-completions server that plays scenarios.

Raw HTTP/1.1 on ``trio.serve_tcp`` and h11, so every byte is ours to control: cuts, resets
and one-byte writes happen exactly where the scenario table says. Each chat request leaves
a ``Record`` saying what was sent and when the client went away; tests and the load tester
read them in-process (``SimServer.records``) or over HTTP (``GET /_sim/requests``).

Routes: ``POST /v1/chat/completions``; ``GET``/``DELETE /_sim/requests`` (``?tag=`` filters);
``GET /_sim/scenarios``; ``GET /healthz``.

Rules:
- One task per connection, reading requests in turn (keep-alive). While a response is being
  played, a sibling task in the exchange's nursery keeps reading the socket: EOF or a reset
  means the client left, so it stamps ``client_gone_at`` at once and cancels the response
  wherever it is waiting (before headers, between tokens, in a stall). Writes are never
  relied on to notice a departed client.
- No task outlives its exchange or connection; every wait is cancellable; ``trio.Cancelled``
  is never caught. A client can break its own connection but never the server: protocol
  errors get a 400 and a close, broken sockets end the connection quietly.
- Scenario behaviour comes from the fields of ``SCENARIOS`` rows, never from names.
- Timing uses Trio's clock (so a ``MockClock`` drives it); records use ``time.monotonic()``
  so they compare with timestamps taken in other processes on the same machine.
- A record is updated just before the bytes it describes are written, so whatever a client
  has received, its record already shows (tests need not wait for the server to catch up).
- The hot path is one ``send_all`` per token: chunk JSON is pre-rendered per stream and only
  the token text is escaped per token.

Non-streaming requests play the same scenarios: the answer comes when the stream would
have ended; ``stall``/``cut``/``reset`` send the headers and half the body first;
``midstream_error`` becomes a 500 and ``malformed``/``invalid_json`` a 200 that is not JSON.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, Final, Literal
from urllib.parse import parse_qs

import attrs
import h11
import trio

from gateway.sim.scenarios import (
    SCENARIOS,
    Plan,
    Scenario,
    parse_plan,
    plan_from,
    prompt_tokens,
    token_texts,
)

__all__ = ["Outcome", "Record", "SimServer", "main", "run"]

Outcome = Literal[
    "running", "completed", "client_gone", "cut", "reset", "error_status", "error_event"
]
# What the connection does once an exchange is over.
_Disposition = Literal["keep", "close", "reset"]

RECEIVE_SIZE: Final = 65536
MAX_BODY: Final = 32 * 1024 * 1024
# Pipelined bytes buffered while a response plays; past this the watcher stops reading
# (and so stops watching) rather than buffer a misbehaving client without bound.
PIPELINE_LIMIT: Final = 65536
# Header values kept only as their first 8 characters: enough to tell which key was sent.
_SECRET_HEADERS: Final = frozenset(
    {"x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie"}
)
_SECRET_PREFIX: Final = 8

# OpenAI's error (type, code, message) per status.
_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", None, "Not found."),
    405: ("invalid_request_error", None, "Method not allowed."),
    413: ("invalid_request_error", None, "Request body too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_SSE_HEADERS: Final = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("transfer-encoding", "chunked"),
]
# path -> allowed methods
_ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "/v1/chat/completions": ("POST",),
    "/_sim/requests": ("GET", "DELETE"),
    "/_sim/scenarios": ("GET",),
    "/healthz": ("GET",),
}
_DONE: Final = b"data: [DONE]\n\n"
_MALFORMED_EVENT: Final = b"data: {not json\n\n"
_MALFORMED_BODY: Final = b"{not json"


@attrs.define(kw_only=True)
class Record:
    """What the server saw and did for one chat request. Times are ``time.monotonic()``."""

    id: int
    connection_id: int  # the TCP connection it came on: tells keep-alive reuse apart
    tag: str | None = None
    model: str = ""
    scenario: str = ""  # empty when the request was rejected before a plan existed
    stream: bool = False
    started_at: float
    first_token_at: float | None = None
    ended_at: float | None = None
    client_gone_at: float | None = None
    tokens_sent: int = 0
    # "running" with ended_at set means the server was shut down mid-response.
    outcome: Outcome = "running"
    headers_sent: bool = False
    request_headers: dict[str, str] = attrs.field(factory=dict)  # never the Authorization
    saw_authorization: str | None = None  # first 8 characters of the credential, if any

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class _Request:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@attrs.frozen
class _Chat:
    """The parts of a chat-completions body the simulation needs."""

    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt: str  # the last user message: the directive's home and what ``echo`` repeats
    prompt_tokens: int
    plan: Plan


class _BadRequest(Exception):
    pass


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts carry words
        return "".join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _read_chat(body: bytes, defaults: Plan) -> _Chat:
    try:
        data = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise _BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(data, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("'model' must be a non-empty string.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _BadRequest("'messages' must be a list of objects.")
    stream = data.get("stream", False)
    options = data.get("stream_options")
    limits = [data.get(k) for k in ("max_tokens", "max_completion_tokens")]
    if not isinstance(stream, bool) or not isinstance(options, dict | None) or not all(
        limit is None or (type(limit) is int and limit >= 0) for limit in limits
    ):
        raise _BadRequest("'stream', 'stream_options' or 'max_tokens' has the wrong type.")
    users = [m for m in messages if m.get("role") == "user"]
    prompt = _text(users[-1].get("content")) if users else ""
    try:
        plan = parse_plan(prompt, defaults)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None
    given = [limit for limit in limits if limit is not None]
    return _Chat(
        model=model,
        stream=stream,
        include_usage=bool(options and options.get("include_usage") is True),
        max_tokens=min(given) if given else None,
        prompt=prompt,
        prompt_tokens=prompt_tokens("".join(_text(m.get("content")) for m in messages)),
        plan=plan,
    )


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _ERRORS.get(status, ("server_error", None, "Error."))
    text = f"{message or default} (simulated by arouter sim)"
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> bytes:
    try:  # raw UTF-8 like OpenAI, so byte splitting can land inside a code point
        return json.dumps(text, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate from the prompt: \ud800 escapes are valid
        return json.dumps(text).encode()


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


@attrs.frozen
class _Chunks:
    """The SSE events of one stream, pre-rendered so a token costs one escape and a join."""

    head: bytes  # 'data: {"id":..,"object":..,"created":..,"model":..,'
    tail: bytes  # '}\n\n', after '"usage":null' when usage was asked for (as OpenAI does)
    token_open: bytes
    token_close: bytes
    role: bytes

    @classmethod
    def render(cls, completion_id: str, model: str, include_usage: bool) -> _Chunks:
        head = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":'
        ).encode() + _json_string(model) + b","
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        role = b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        return cls(
            head=head,
            tail=tail,
            token_open=head + b'"choices":[{"index":0,"delta":{"content":',
            token_close=b'},"finish_reason":null}]' + tail,
            role=head + role + b'"finish_reason":null}]' + tail,
        )

    def token(self, text: str) -> bytes:
        return self.token_open + _json_string(text) + self.token_close

    def finish(self, reason: str) -> bytes:
        choice = f'"choices":[{{"index":0,"delta":{{}},"finish_reason":"{reason}"}}]'
        return self.head + choice.encode() + self.tail

    def usage(self, prompt: int, completion: int) -> bytes:
        usage = json.dumps(_usage(prompt, completion), separators=(",", ":"))
        return self.head + b'"choices":[],"usage":' + usage.encode() + b"}\n\n"


@attrs.define
class _Exchange:
    """One chat request being answered: the socket, h11's state and the record to keep."""

    stream: trio.SocketStream
    conn: h11.Connection
    record: Record
    chat: _Chat
    scenario: Scenario
    start: float  # trio.current_time() when the request was read

    async def _write(self, data: bytes) -> None:
        if not self.scenario.byte_split:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        for i in range(len(view)):
            await self.stream.send_all(view[i : i + 1])

    async def _send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        headers = [*headers, ("x-request-id", f"sim-{self.record.id}")]
        self.record.headers_sent = True
        await self._write(self.conn.send(h11.Response(status_code=status, headers=headers)))

    def _finish(self, outcome: Outcome) -> None:
        """Settle the record *before* the last write, so a client that has seen the end of
        the response always finds its record final. A failed write turns it into
        ``client_gone`` (see ``SimServer._chat``); a watcher that got there first wins."""
        if self.record.outcome == "running":
            self.record.outcome = outcome
            self.record.ended_at = time.monotonic()

    async def _send_body(self, data: bytes, *, end_with: Outcome | None = None) -> None:
        out = self.conn.send(h11.Data(data=data)) or b""
        if end_with is not None:
            out += self.conn.send(h11.EndOfMessage()) or b""
            self._finish(end_with)
        await self._write(out)

    async def _send_whole(
        self, status: int, body: bytes, headers: list[tuple[str, str]], outcome: Outcome
    ) -> _Disposition:
        await self._send_head(status, [*headers, ("content-length", str(len(body)))])
        await self._send_body(body, end_with=outcome)
        return "keep"

    async def _send_error(self, status: int) -> _Disposition:
        headers = [("content-type", "application/json")]
        if self.chat.plan.retry_after is not None:
            headers.append(("retry-after", str(self.chat.plan.retry_after)))
        body = json.dumps(_error_body(status)).encode()
        return await self._send_whole(status, body, headers, "error_status")

    def _budget(self) -> tuple[int, str]:
        """Tokens to produce and the finish reason: ``max_tokens`` cuts the plan short."""
        wanted, limit = self.chat.plan.tokens, self.chat.max_tokens
        if limit is not None and limit < wanted:
            return limit, "length"
        return wanted, "stop"

    def _stop(self, n: int) -> int:
        """Tokens sent before the scenario's ending."""
        fraction = self.scenario.stop_after
        return n if fraction is None else math.floor(n * fraction)

    def _slot(self, i: int) -> float:
        """When token ``i`` is due: absolute times, so slow writes never add up to drift."""
        plan = self.chat.plan
        return self.start + plan.first_token_delay + i * plan.interval

    async def play(self) -> _Disposition:
        """Answer the request as the scenario says; cancellable at every wait."""
        if not self.scenario.answers:
            await trio.sleep_forever()
        if self.scenario.status is not None:
            await trio.sleep_until(self._slot(0))
            return await self._send_error(self.scenario.status)
        return await (self._play_stream() if self.chat.stream else self._play_whole())

    async def _play_stream(self) -> _Disposition:
        record, chat = self.record, self.chat
        n, reason = self._budget()
        stop = self._stop(n)
        chunks = _Chunks.render(f"chatcmpl-sim{record.id}", chat.model, chat.include_usage)
        await self._send_head(200, _SSE_HEADERS)
        # The role chunk travels with the first token, as providers send it when generation
        # starts: a gateway must not take headers-then-role for a first token.
        pending = chunks.role
        for i, text in enumerate(token_texts(self._kind(), chat.prompt, stop)):
            due = self._slot(i)
            if due > trio.current_time():
                await trio.sleep_until(due)
            # Behind schedule (interval 0, or a loaded machine), the timer is skipped: a cancel
            # scope per token doubled the cost, and send_all still checkpoints.
            record.tokens_sent += 1
            if record.first_token_at is None:
                record.first_token_at = time.monotonic()
            await self._send_body(pending + chunks.token(text))
            pending = b""
        ending = self.scenario.ending
        if ending == "complete":
            tail = pending + chunks.finish(reason)
            if chat.include_usage and self.scenario.usage:
                tail += chunks.usage(chat.prompt_tokens, n)
            await self._send_body(tail + _DONE, end_with="completed")
            return "keep"
        await trio.sleep_until(self._slot(stop))
        if ending == "error_event":
            error = json.dumps(_error_body(500)).encode()
            await self._send_body(b"data: " + error + b"\n\n", end_with="error_event")
            return "keep"
        if ending == "malformed":
            await self._send_body(_MALFORMED_EVENT, end_with="error_event")
            return "keep"
        return await self._break_off(ending)

    async def _play_whole(self) -> _Disposition:
        record, chat = self.record, self.chat
        n, reason = self._budget()
        ending = self.scenario.ending
        stop = n if ending == "complete" else self._stop(n)
        await trio.sleep_until(self._slot(max(stop - 1, 0) if ending == "complete" else stop))
        if ending == "error_event":
            return await self._send_error(500)
        if ending == "malformed":
            headers = [("content-type", "application/json")]
            return await self._send_whole(200, _MALFORMED_BODY, headers, "error_event")
        body: dict[str, Any] = {
            "id": f"chatcmpl-sim{record.id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(token_texts(self._kind(), chat.prompt, n)),
                },
                "finish_reason": reason,
            }],
        }
        if self.scenario.usage:
            body["usage"] = _usage(chat.prompt_tokens, n)
        data = json.dumps(body).encode()
        headers = [("content-type", "application/json")]
        if ending == "complete":
            record.tokens_sent = n
            return await self._send_whole(200, data, headers, "completed")
        # Announce the whole body, deliver half, then stall or break off.
        await self._send_head(200, [*headers, ("content-length", str(len(data)))])
        await self._send_body(data[: len(data) // 2])
        return await self._break_off(ending)

    async def _break_off(self, ending: str) -> _Disposition:
        if ending == "stall":
            await trio.sleep_forever()  # until the watcher sees the client leave
        # The connection handler closes the socket once this exchange's nursery is done.
        if ending == "cut":
            self._finish("cut")
            return "close"
        if ending == "reset":
            self._finish("reset")
            return "reset"
        raise AssertionError(f"unhandled ending {ending!r}")

    def _kind(self) -> str:
        return "echo" if self.chat.model.endswith("echo") else "lorem"


def _client_gone(record: Record, *, write_failed: bool = False) -> None:
    """Stamp the departure; it decides the outcome unless the response already ended, or
    unless a write failed, which means the client never saw the end."""
    if record.client_gone_at is None:
        record.client_gone_at = time.monotonic()
    if record.outcome == "running" or write_failed:
        record.outcome = "client_gone"


async def _watch_client(
    stream: trio.SocketStream, conn: h11.Connection, record: Record, scope: trio.CancelScope
) -> None:
    """Read the socket while a response plays; on EOF or reset, stamp and cancel ``scope``.

    A half-close (FIN while still reading) counts as leaving: HTTP/1.1 clients do not
    half-close while waiting for a response, and proxies that do mean the same thing."""
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:  # ECONNRESET: gone just the same
            data = b""
        if not data:
            _client_gone(record)
            scope.cancel()
            return
        # A pipelining client: h11 keeps the bytes for the next cycle.
        conn.receive_data(data)
        if len(conn.trailing_data[0]) > PIPELINE_LIMIT:
            await trio.sleep_forever()


def _split_headers(headers: list[tuple[str, str]]) -> tuple[dict[str, str], str | None]:
    """Request headers fit to keep in a record, and the redacted Authorization credential."""
    kept: dict[str, str] = {}
    authorization = None
    for name, value in headers:
        if name == "authorization":
            credential = value.split(None, 1)[-1] if value.strip() else ""
            authorization = credential[:_SECRET_PREFIX]
            continue
        if name in _SECRET_HEADERS:
            value = value[:_SECRET_PREFIX]
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept, authorization


@attrs.define
class SimServer:
    """The fake upstream: its default plan, the records it keeps, and ``serve``.

    ``records`` holds the newest ``max_records`` records (oldest dropped in batches), in
    arrival order; ``find(tag)`` selects one test's records. ``idle_timeout`` closes a
    keep-alive connection that brings no request for that long.
    """

    defaults: Plan = attrs.field(factory=Plan)
    max_records: int = 100_000
    idle_timeout: float = 300.0
    records: list[Record] = attrs.field(factory=list)
    _ids: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))
    _connection_ids: itertools.count[int] = attrs.field(
        init=False, factory=lambda: itertools.count(1)
    )

    def find(self, tag: str | None) -> list[Record]:
        return [record for record in self.records if record.tag == tag]

    def clear(self) -> None:
        self.records.clear()

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started`` gets the bound port.

        Give a literal address: with a name that resolves to several addresses and port 0,
        each listener would get its own port, and only the first is reported.
        """
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._serve_connection, port, host=host)
            )
            task_status.started(listeners[0].socket.getsockname()[1])

    def _add(self, record: Record) -> None:
        self.records.append(record)
        if len(self.records) > self.max_records:  # batches keep appends amortised O(1)
            del self.records[: len(self.records) - self.max_records * 9 // 10]

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection_id = next(self._connection_ids)
        conn = h11.Connection(h11.SERVER)
        disposition: _Disposition = "close"
        try:
            while True:
                request = None  # stays None when the idle timeout passes
                with trio.move_on_after(self.idle_timeout):
                    request = await self._receive(stream, conn)
                if request is None:
                    break
                disposition = await self._route(stream, conn, request, connection_id)
                if disposition != "keep" or conn.our_state is not h11.DONE:
                    break
                if conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._reject(stream, conn, exc.error_status_hint)
        except trio.BrokenResourceError:
            pass  # the client broke the connection between exchanges: nothing to record
        finally:
            if disposition == "reset":
                # SO_LINGER 0 turns close() into an RST instead of a FIN.
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()

    async def _receive(self, stream: trio.SocketStream, conn: h11.Connection) -> _Request | None:
        """The next whole request, or None when the client closed between requests."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    continue_ = h11.InformationalResponse(status_code=100, headers=[])
                    await stream.send_all(conn.send(continue_) or b"")
                conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None  # h11 never ends a message it did not start
                path, _, query = head.target.decode("ascii", "replace").partition("?")
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers]
                return _Request(head.method.decode("ascii"), path, query, headers, bytes(body))
            else:  # ConnectionClosed; PAUSED cannot happen before start_next_cycle
                return None

    async def _route(
        self, stream: trio.SocketStream, conn: h11.Connection, request: _Request, connection_id: int
    ) -> _Disposition:
        allowed = _ROUTES.get(request.path)
        if allowed is None:
            return await _send_json(stream, conn, 404, _error_body(404))
        if request.method not in allowed:
            extra = [("allow", ", ".join(allowed))]
            return await _send_json(stream, conn, 405, _error_body(405), extra)
        if request.path == "/v1/chat/completions":
            return await self._chat(stream, conn, request, connection_id)
        if request.path == "/_sim/requests":
            if request.method == "DELETE":
                self.clear()
                return await _send_json(stream, conn, 200, {"cleared": True})
            tags = parse_qs(request.query).get("tag")
            records = self.find(tags[0]) if tags else self.records
            return await _send_json(stream, conn, 200, [r.to_json() for r in records])
        if request.path == "/_sim/scenarios":
            table = [attrs.asdict(scenario) for scenario in SCENARIOS.values()]
            return await _send_json(stream, conn, 200, table)
        return await _send_json(stream, conn, 200, {"status": "ok"})

    async def _chat(
        self, stream: trio.SocketStream, conn: h11.Connection, request: _Request, connection_id: int
    ) -> _Disposition:
        headers, authorization = _split_headers(request.headers)
        record = Record(
            id=next(self._ids),
            connection_id=connection_id,
            started_at=time.monotonic(),
            request_headers=headers,
            saw_authorization=authorization,
        )
        self._add(record)
        try:
            chat = _read_chat(request.body, self.defaults)
        except _BadRequest as exc:
            record.outcome = "error_status"
            record.ended_at = time.monotonic()
            return await _send_json(stream, conn, 400, _error_body(400, str(exc)))
        record.tag, record.model, record.stream = chat.plan.tag, chat.model, chat.stream
        record.scenario = chat.plan.scenario
        exchange = _Exchange(
            stream, conn, record, chat, SCENARIOS[chat.plan.scenario], trio.current_time()
        )
        disposition: _Disposition = "close"  # unless the exchange finishes
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_client, stream, conn, record, nursery.cancel_scope)
                try:
                    disposition = await exchange.play()
                except trio.BrokenResourceError:  # a write found it first
                    _client_gone(record, write_failed=True)
                nursery.cancel_scope.cancel()
        finally:
            if record.ended_at is None:
                record.ended_at = time.monotonic()
        return disposition

    async def _reject(self, stream: trio.SocketStream, conn: h11.Connection, status: int) -> None:
        """Answer a request h11 refused, if the connection still allows an answer."""
        if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return
        try:
            await _send_json(stream, conn, status, _error_body(status), [("connection", "close")])
        except (trio.BrokenResourceError, h11.LocalProtocolError):
            pass  # the client is gone or the state forbids it: closing says enough


async def _send_json(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    payload: object,
    headers: Sequence[tuple[str, str]] = (),
) -> _Disposition:
    body = json.dumps(payload).encode()
    head = [("content-type", "application/json"), ("content-length", str(len(body))), *headers]
    out = conn.send(h11.Response(status_code=status, headers=head)) or b""
    out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
    return "keep"


async def _serve_until_signalled(host: str, port: int, defaults: Plan) -> None:
    server = SimServer(defaults=defaults)
    # Ctrl-C and SIGTERM (docker stop, CI teardown) end it cleanly with status 0; left to
    # Trio, SIGINT would surface as a KeyboardInterrupt wrapped in an exception group.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(functools.partial(server.serve, host, port))
            print(f"arouter sim: listening on http://{host}:{bound}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def run(host: str = "127.0.0.1", port: int = 9100, defaults: Plan | None = None) -> None:
    """Serve until SIGINT or SIGTERM, printing the bound address first. Main thread only."""
    trio.run(_serve_until_signalled, host, port, defaults or Plan())


def main(argv: Sequence[str] | None = None) -> int:
    """``arouter sim``: command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="arouter sim",
        description="Fake OpenAI-compatible upstream. Per request: a '#sim key=value' line in "
        "the last user message; the options below set the defaults.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--scenario", choices=list(SCENARIOS))
    parser.add_argument("--tokens")
    parser.add_argument("--interval-ms")
    parser.add_argument("--first-token-ms")
    args = parser.parse_args(argv)
    # The directive's checks apply to options too; an option not given stays out, so a
    # scenario's own defaults still fill in (slow_first_token keeps its 30 s).
    options = {
        "scenario": args.scenario,
        "tokens": args.tokens,
        "interval_ms": args.interval_ms,
        "first_token_ms": args.first_token_ms,
    }
    try:
        defaults = plan_from([(k, v) for k, v in options.items() if v is not None], Plan())
    except ValueError as exc:
        parser.error(str(exc))
    run(args.host, args.port, defaults)
    return 0


if __name__ == "__main__":
    sys.exit(main())
