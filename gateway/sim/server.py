"""The fake upstream: a server that plays scenarios in the OpenAI, Anthropic and Gemini APIs.

Raw HTTP/1.1 on ``trio.serve_tcp`` and h11, so every byte is ours to control: cuts, resets
and one-byte writes happen exactly where the scenario table says. Each model request leaves
a ``Record`` saying what was sent and when the client went away; tests and the load tester
read them in-process (``SimServer.records``) or over HTTP (``GET /_sim/requests``).

Routes: ``POST /v1/chat/completions`` (OpenAI, ``gateway.sim.openai``); ``POST /v1/messages``
(Anthropic, ``gateway.sim.anthropic``); ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent``, also under ``/v1/`` (Gemini, ``gateway.sim.gemini``);
``GET``/``DELETE /_sim/requests`` (``?tag=`` filters); ``GET /_sim/scenarios``;
``GET /healthz``. What a request does is played by ``gateway.sim.play``, the same for every
dialect; this module holds connections, routing, records and the command line.

Rules:
- One task per connection, reading requests in turn (keep-alive). While a response is being
  played, a sibling task in the exchange's nursery keeps reading the socket: EOF or a reset
  means the client left, so it stamps ``client_gone_at`` at once and cancels the response
  wherever it is waiting (before headers, between tokens, in a stall). Writes are never
  relied on to notice a departed client.
- No task outlives its exchange or connection; every wait is cancellable; ``trio.Cancelled``
  is never caught. A client can break its own connection but never the server: protocol
  errors get a 400 and a close, broken sockets end the connection quietly.
- Credentials are never stored: a record keeps the first 8 characters of the one the
  request's dialect reads (``Authorization``, ``x-api-key``, ``x-goog-api-key`` or ``?key=``)
  and of any other secret header.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs

import attrs
import h11
import trio

from gateway.sim import anthropic, gemini, openai
from gateway.sim.dialect import Answer, BadRequest, Dialect, DialectName, Request
from gateway.sim.play import Answering, Disposition, Outcome, Record
from gateway.sim.scenarios import SCENARIOS, Plan, plan_from

__all__ = ["Outcome", "Record", "SimServer", "main", "run"]

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
_DIALECTS: Final[tuple[Dialect, ...]] = (openai.DIALECT, openai.COMPLETIONS, openai.RESPONSES,
                                         anthropic.DIALECT, gemini.DIALECT)


def _counter(path: str) -> tuple[DialectName, Callable[[Request], Answer]] | None:
    """The endpoint answered at once at ``path`` (a token count, embeddings), if it is one:
    (dialect, how to answer)."""
    if path == anthropic.COUNT_PATH:
        return "anthropic", anthropic.count
    if gemini.counts(path):
        return "gemini", gemini.count
    if path == openai.EMBEDDINGS_PATH:
        return "openai", openai.embed
    if gemini.embeds(path):
        return "gemini", gemini.embed
    return None
# control path -> allowed methods
_CONTROL: Final[dict[str, tuple[str, ...]]] = {
    "/_sim/requests": ("GET", "DELETE"),
    "/_sim/scenarios": ("GET",),
    "/healthz": ("GET",),
}


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
            scope.cancel("client disconnected")
            return
        # A pipelining client: h11 keeps the bytes for the next cycle.
        conn.receive_data(data)
        if len(conn.trailing_data[0]) > PIPELINE_LIMIT:
            await trio.sleep_forever()


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _kept_headers(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Request headers fit to keep in a record: never ``Authorization``, and other secrets
    cut to their first 8 characters."""
    kept: dict[str, str] = {}
    for name, value in headers:
        if name == "authorization":
            continue
        if name in _SECRET_HEADERS:
            value = value[:_SECRET_PREFIX]
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


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
        disposition: Disposition = "close"
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

    async def _receive(self, stream: trio.SocketStream, conn: h11.Connection) -> Request | None:
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
                return Request(head.method.decode("ascii"), path, query, headers, bytes(body))
            else:  # ConnectionClosed; PAUSED cannot happen before start_next_cycle
                return None

    async def _route(
        self, stream: trio.SocketStream, conn: h11.Connection, request: Request, connection_id: int
    ) -> Disposition:
        counter = _counter(request.path)
        if counter is not None and request.method == "POST":
            return await self._count(stream, conn, request, connection_id, counter)
        dialect = next((d for d in _DIALECTS if d.serves(request.path)), None)
        allowed = ("POST",) if dialect is not None else _CONTROL.get(request.path)
        # Errors outside any dialect's paths come in OpenAI's shape.
        answer_error = (dialect or openai.DIALECT).error
        if allowed is None:
            return await _send(stream, conn, answer_error(404, None))
        if request.method not in allowed:
            extra = [("allow", ", ".join(allowed))]
            return await _send(stream, conn, answer_error(405, None), extra)
        if dialect is not None:
            return await self._answer(stream, conn, request, connection_id, dialect)
        if request.path == "/_sim/requests":
            if request.method == "DELETE":
                self.clear()
                return await _send_json(stream, conn, {"cleared": True})
            tags = parse_qs(request.query).get("tag")
            records = self.find(tags[0]) if tags else self.records
            return await _send_json(stream, conn, [r.to_json() for r in records])
        if request.path == "/_sim/scenarios":
            table = [attrs.asdict(scenario) for scenario in SCENARIOS.values()]
            return await _send_json(stream, conn, table)
        return await _send_json(stream, conn, {"status": "ok"})

    async def _count(self, stream: trio.SocketStream, conn: h11.Connection, request: Request,
                     connection_id: int,
                     counter: tuple[DialectName, Callable[[Request], Answer]],
                     ) -> Disposition:
        """A token count: recorded like any call (its dialect, body, credential)."""
        name, count = counter
        now = time.monotonic()
        self._add(Record(id=next(self._ids), connection_id=connection_id, dialect=name,
                         started_at=now, ended_at=now, outcome="count",
                         request_headers=_kept_headers(request.headers),
                         body=_json_or_none(request.body)))
        return await _send(stream, conn, count(request))

    async def _answer(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        request: Request,
        connection_id: int,
        dialect: Dialect,
    ) -> Disposition:
        credential = dialect.credential(request)
        record = Record(
            id=next(self._ids),
            connection_id=connection_id,
            dialect=dialect.name,
            started_at=time.monotonic(),
            request_headers=_kept_headers(request.headers),
            saw_authorization=None if credential is None else credential[:_SECRET_PREFIX],
            body=_json_or_none(request.body),
        )
        self._add(record)
        try:
            call, render = dialect.read(request, self.defaults)
        except BadRequest as exc:
            record.outcome = "error_status"
            record.ended_at = time.monotonic()
            return await _send(stream, conn, dialect.error(exc.status, str(exc)))
        plan = call.plan
        record.tag, record.model, record.stream = plan.tag, call.model, call.stream
        record.scenario = plan.scenario
        scenario = SCENARIOS[plan.scenario]
        rendering = render(record.id, scenario.usage)
        exchange = Answering(stream, conn, record, call, rendering, scenario, trio.current_time())
        disposition: Disposition = "close"  # unless the exchange finishes
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_client, stream, conn, record, nursery.cancel_scope)
                try:
                    disposition = await exchange.play()
                except trio.BrokenResourceError:  # a write found it first
                    _client_gone(record, write_failed=True)
                nursery.cancel_scope.cancel("answer played")
        finally:
            if record.ended_at is None:
                record.ended_at = time.monotonic()
        return disposition

    async def _reject(self, stream: trio.SocketStream, conn: h11.Connection, status: int) -> None:
        """Answer a request h11 refused, if the connection still allows an answer."""
        if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return
        try:
            await _send(stream, conn, openai.error(status), [("connection", "close")])
        except (trio.BrokenResourceError, h11.LocalProtocolError):
            pass  # the client is gone or the state forbids it: closing says enough


async def _send(
    stream: trio.SocketStream,
    conn: h11.Connection,
    answer: Answer,
    headers: Sequence[tuple[str, str]] = (),
) -> Disposition:
    length = ("content-length", str(len(answer.body)))
    head = h11.Response(status_code=answer.status, headers=[*answer.headers, length, *headers])
    out = conn.send(head) or b""
    out += conn.send(h11.Data(data=answer.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
    return "keep"


async def _send_json(
    stream: trio.SocketStream, conn: h11.Connection, payload: object
) -> Disposition:
    return await _send(stream, conn, Answer(200, json.dumps(payload).encode()))


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
            nursery.cancel_scope.cancel("signalled to stop")


def run(host: str = "127.0.0.1", port: int = 9100, defaults: Plan | None = None) -> None:
    """Serve until SIGINT or SIGTERM, printing the bound address first. Main thread only."""
    trio.run(_serve_until_signalled, host, port, defaults or Plan())


def main(argv: Sequence[str] | None = None) -> int:
    """``arouter sim``: command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="arouter sim",
        description="Fake OpenAI, Anthropic and Gemini upstream. Per request: a '#sim key=value' "
        "line in the last user message; the options below set the defaults.",
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
