"""One simulated answer, played on the socket: the same scenario in every dialect.

The play decides what happens and when (how many tokens, when each is due, how the answer
ends) from the request's ``Plan`` and its row of ``SCENARIOS``; the request's ``Rendering``
says how each step looks in its dialect. So a scenario behaves alike whether the client
spoke OpenAI, Anthropic or Gemini, and its behaviour is declared once, here.

Rules:
- Scenario behaviour comes from the fields of ``SCENARIOS`` rows, never from names.
- Every wait is cancellable and ``trio.Cancelled`` is never caught: the server's watcher
  cancels a play wherever it waits when the client leaves.
- Timing uses Trio's clock (so a ``MockClock`` drives it); records use ``time.monotonic()``
  so they compare with timestamps taken in other processes on the same machine.
- A record is updated just before the bytes it describes are written, so whatever a client
  has received, its record already shows (tests need not wait for the server to catch up).
- The hot path is one ``send_all`` per token (one per byte when the scenario splits bytes).

Non-streaming requests play the same scenarios: the answer comes when the stream would
have ended; ``stall``/``cut``/``reset`` send the headers and half the body first; a
mid-stream error becomes the dialect's error status and ``malformed``/``invalid_json`` a
200 that is not JSON.

A scenario with ``tool_arguments`` answers a request that declares a tool, and holds no tool
result yet, with a call to its first tool instead of text: the dialect renders the pieces of
that stream (argument fragments where the dialect streams them), sent at the token slots.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import attrs
import h11
import trio

from gateway.sim import schemas
from gateway.sim.dialect import (
    MALFORMED_BODY,
    Answer,
    Asked,
    Counted,
    DialectName,
    Finish,
    Headers,
    Rendering,
)
from gateway.sim.scenarios import Scenario, token_texts

__all__ = ["Answering", "Disposition", "Outcome", "Record"]

Outcome = Literal[
    "running", "completed", "client_gone", "cut", "reset", "error_status", "error_event",
    "count",  # a token count answered
]
# What the connection does once an exchange is over.
Disposition = Literal["keep", "close", "reset"]


@attrs.define(kw_only=True)
class Record:
    """What the server saw and did for one model request. Times are ``time.monotonic()``."""

    id: int
    connection_id: int  # the TCP connection it came on: tells keep-alive reuse apart
    dialect: DialectName = "openai"  # the API shape the request came in
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
    # The request body as JSON (None if it was not): what a test checks reached the upstream.
    body: Any = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class Answering:
    """One request being answered: the socket, h11's state, the record to keep, and the
    call with its rendering."""

    stream: trio.SocketStream
    conn: h11.Connection
    record: Record
    call: Asked
    rendering: Rendering
    scenario: Scenario
    start: float  # trio.current_time() when the request was read

    async def play(self) -> Disposition:
        """Answer the request as the scenario says; cancellable at every wait."""
        if not self.scenario.answers:
            await trio.sleep_forever()
        if self.scenario.status is not None:
            await trio.sleep_until(self._slot(0))
            return await self._send_answer(
                self.rendering.error(self.scenario.status, self.call.plan.retry_after),
                "error_status",
            )
        fragments = self._tool_arguments()
        if fragments is not None:
            return await (
                self._play_tool_stream(fragments) if self.call.stream
                else self._play_tool_whole(fragments)
            )
        return await (self._play_stream() if self.call.stream else self._play_whole())

    def _tool_arguments(self) -> tuple[str, ...] | None:
        """The argument fragments of the tool call to make instead of text, if any: the
        scenario makes one while the request declares a tool and holds no tool result."""
        fragments, call = self.scenario.tool_arguments, self.call
        if fragments is None or not call.tools or call.tool_result:
            return None
        return fragments

    async def _play_tool_stream(self, fragments: tuple[str, ...]) -> Disposition:
        """A call to the first declared tool, its pieces due like tokens."""
        record, rendering = self.record, self.rendering
        await self._send_head(200, rendering.stream_headers)
        pieces = rendering.tool_stream(self.call.tools[0], fragments, self._usage(len(fragments)))
        for i, piece in enumerate(pieces):
            due = self._slot(i)
            if due > trio.current_time():
                await trio.sleep_until(due)
            if record.first_token_at is None:
                record.first_token_at = time.monotonic()
            last = i == len(pieces) - 1
            if last:
                record.tokens_sent = len(fragments)
            await self._send_body(piece, end_with="completed" if last else None)
        return "keep"

    async def _play_tool_whole(self, fragments: tuple[str, ...]) -> Disposition:
        await trio.sleep_until(self._slot(max(len(fragments) - 1, 0)))
        answer = self.rendering.tool_whole(
            self.call.tools[0], fragments, self._usage(len(fragments))
        )
        self.record.tokens_sent = len(fragments)
        return await self._send_answer(answer, "completed")

    async def _play_stream(self) -> Disposition:
        record, call, rendering = self.record, self.call, self.rendering
        n, finish = self._budget()
        stop = self._stop(n)
        await self._send_head(200, rendering.stream_headers)
        # The opening (role chunk, message_start) travels with the first token, as providers
        # send it when generation starts: a gateway must not take headers-then-opening for a
        # first token.
        pending = rendering.opening()
        texts = self._texts(stop)
        if call.schema is not None:
            n, finish = len(texts), "stop"
            stop = self._stop(n)
            texts = texts[:stop]
        for i, text in enumerate(texts):
            due = self._slot(i)
            if due > trio.current_time():
                await trio.sleep_until(due)
            # Behind schedule (interval 0, or a loaded machine), the timer is skipped: a cancel
            # scope per token doubled the cost, and send_all still checkpoints.
            record.tokens_sent += 1
            if record.first_token_at is None:
                record.first_token_at = time.monotonic()
            await self._send_body(pending + rendering.token(text))
            pending = b""
        ending = self.scenario.ending
        if ending == "complete":
            tail = pending + rendering.closing(finish, self._usage(n))
            await self._send_body(tail, end_with="completed")
            return "keep"
        await trio.sleep_until(self._slot(stop))
        if ending == "error_event":
            await self._send_body(rendering.error_event(), end_with="error_event")
            return "keep"
        if ending == "malformed":
            await self._send_body(rendering.malformed_event(), end_with="error_event")
            return "keep"
        return await self._break_off(ending)

    async def _play_whole(self) -> Disposition:
        call, rendering = self.call, self.rendering
        n, finish = self._budget()
        ending = self.scenario.ending
        stop = n if ending == "complete" else self._stop(n)
        await trio.sleep_until(self._slot(max(stop - 1, 0) if ending == "complete" else stop))
        if ending == "error_event":
            error = rendering.error(rendering.midstream_status, call.plan.retry_after)
            return await self._send_answer(error, "error_event")
        if ending == "malformed":
            return await self._send_answer(Answer(200, MALFORMED_BODY), "error_event")
        texts = self._texts(n)
        if call.schema is not None:
            n, finish = len(texts), "stop"
        answer = rendering.whole("".join(texts), finish, self._usage(n))
        if ending == "complete":
            self.record.tokens_sent = n
            return await self._send_answer(answer, "completed")
        # Announce the whole body, deliver half, then stall or break off.
        await self._send_head(200, [*answer.headers, ("content-length", str(len(answer.body)))])
        await self._send_body(answer.body[: len(answer.body) // 2])
        return await self._break_off(ending)

    async def _break_off(self, ending: str) -> Disposition:
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

    def _texts(self, n: int) -> list[str]:
        """The answer's tokens: a structured output's JSON whole (a cut one would not
        parse), else ``n`` words."""
        if self.call.schema is not None:
            return schemas.pieces(self.call.schema)
        return token_texts(self._kind(), self.call.prompt, n)

    def _budget(self) -> tuple[int, Finish]:
        """Tokens to produce and why they stop: the client's cap cuts the plan short."""
        wanted, limit = self.call.plan.tokens, self.call.max_tokens
        if limit is not None and limit < wanted:
            return limit, "length"
        return wanted, "stop"

    def _stop(self, n: int) -> int:
        """Tokens sent before the scenario's ending."""
        fraction = self.scenario.stop_after
        return n if fraction is None else math.floor(n * fraction)

    def _slot(self, i: int) -> float:
        """When token ``i`` is due: absolute times, so slow writes never add up to drift."""
        plan = self.call.plan
        return self.start + plan.first_token_delay + i * plan.interval

    def _usage(self, completion: int) -> Counted:
        return Counted(self.call.prompt_tokens, completion)

    def _kind(self) -> str:
        return "echo" if self.call.model.endswith("echo") else "lorem"

    async def _write(self, data: bytes) -> None:
        if not self.scenario.byte_split:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        for i in range(len(view)):
            await self.stream.send_all(view[i : i + 1])

    async def _send_head(self, status: int, headers: Headers) -> None:
        headers = [*headers, ("x-request-id", f"sim-{self.record.id}")]
        self.record.headers_sent = True
        await self._write(self.conn.send(h11.Response(status_code=status, headers=headers)))

    def _finish(self, outcome: Outcome) -> None:
        """Settle the record *before* the last write, so a client that has seen the end of
        the response always finds its record final. A failed write turns it into
        ``client_gone`` (see ``SimServer``); a watcher that got there first wins."""
        if self.record.outcome == "running":
            self.record.outcome = outcome
            self.record.ended_at = time.monotonic()

    async def _send_body(self, data: bytes, *, end_with: Outcome | None = None) -> None:
        out = self.conn.send(h11.Data(data=data)) or b""
        if end_with is not None:
            out += self.conn.send(h11.EndOfMessage()) or b""
            self._finish(end_with)
        await self._write(out)

    async def _send_answer(self, answer: Answer, outcome: Outcome) -> Disposition:
        length = ("content-length", str(len(answer.body)))
        await self._send_head(answer.status, [*answer.headers, length])
        await self._send_body(answer.body, end_with=outcome)
        return "keep"
