"""The values that pass between the bench's modules.

Rules:
- attrs only; ``RequestResult`` is built once per request by ``client`` and never changed.
- Every timestamp is ``time.monotonic()`` seconds, so it compares with the fake upstream's
  records (same clock, same machine); durations are seconds too.
- ``UpstreamRecord.from_json`` is the one place the fake upstream's JSON is read: it is
  untrusted input, so wrong types raise ``ValueError``.
"""

from __future__ import annotations

from array import array
from typing import Any, Final, Literal

import attrs

__all__ = ["OUTCOMES", "Outcome", "RequestResult", "UpstreamRecord"]

# ok            the whole response arrived (a stream ended with [DONE]) and was not an error
# aborted       the client closed the connection at its planned abort time
# http_error    a non-2xx status (``error_kind`` says which)
# stream_error  a mid-stream error event (OpenAI's ``{"error": ...}``)
# truncated     the body ended cleanly but a stream had no [DONE]
# protocol      the bytes broke HTTP/1.1 or SSE, or a JSON answer was not JSON
# connect       the TCP connect failed
# connection    the connection broke (EOF or reset) in the middle of a response
# timeout       the per-request timeout passed first
Outcome = Literal[
    "ok", "aborted", "http_error", "stream_error", "truncated", "protocol", "connect",
    "connection", "timeout",
]
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "ok", "aborted", "http_error", "stream_error", "truncated", "protocol", "connect",
    "connection", "timeout",
)


@attrs.define(kw_only=True)
class RequestResult:
    """What the client saw of one request. Filled in by ``client`` while it runs."""

    index: int
    target: str  # the label of the endpoint: "A", or "B" under --compare
    tag: str  # the ``#sim tag=`` value: finds this request's upstream record
    stream: bool
    started_at: float  # just before the request's first byte (or the connect) was sent
    outcome: Outcome = "ok"
    error_kind: str | None = None  # e.g. "http 502", "stream error event", "timeout"
    status: int | None = None
    headers_at: float | None = None  # the response head was complete
    first_token_at: float | None = None  # the first content delta arrived (streams)
    ended_at: float = 0.0  # the response ended, or the client gave up (after its close)
    tokens: int = 0  # content deltas received; with the fake upstream one per token
    gaps: array[float] = attrs.field(factory=lambda: array("d"))  # between content deltas
    abort_after: float | None = None  # planned: seconds after ``started_at``
    aborted_at: float | None = None  # just after the socket was closed, if it was aborted
    abort_began_at: float | None = None  # just before that close
    reused_connection: bool = False

    @property
    def total(self) -> float:
        return self.ended_at - self.started_at

    @property
    def time_to_headers(self) -> float | None:
        return None if self.headers_at is None else self.headers_at - self.started_at

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        """A compact row for the JSON result (durations in ms, rounded to 1 µs)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "index": self.index,
            "target": self.target,
            "tag": self.tag,
            "outcome": self.outcome,
            "error_kind": self.error_kind,
            "status": self.status,
            "headers_ms": ms(self.time_to_headers),
            "first_token_ms": ms(self.time_to_first_token),
            "total_ms": ms(self.total),
            "tokens": self.tokens,
            "abort_after_ms": ms(self.abort_after),
            "aborted_at": self.aborted_at,
            "abort_close_us": (
                None if self.aborted_at is None or self.abort_began_at is None
                else round((self.aborted_at - self.abort_began_at) * 1e6, 1)
            ),
            "reused_connection": self.reused_connection,
        }


def _optional_float(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"upstream record: {key!r} is not a number")
    return float(value)


@attrs.frozen
class UpstreamRecord:
    """The parts of a fake-upstream record (``GET /_sim/requests``) the bench reads."""

    tag: str | None
    started_at: float
    first_token_at: float | None
    ended_at: float | None
    client_gone_at: float | None
    tokens_sent: int
    outcome: str  # "running", "completed", "client_gone", "cut", "reset", ...

    @classmethod
    def from_json(cls, raw: object) -> UpstreamRecord:
        if not isinstance(raw, dict):
            raise ValueError("upstream record: not an object")
        tag, outcome, tokens = raw.get("tag"), raw.get("outcome"), raw.get("tokens_sent", 0)
        started = _optional_float(raw, "started_at")
        if not isinstance(tag, str | None) or not isinstance(outcome, str) or started is None:
            raise ValueError("upstream record: 'tag', 'outcome' or 'started_at' is missing")
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise ValueError("upstream record: 'tokens_sent' is not an integer")
        return cls(
            tag=tag,
            started_at=started,
            first_token_at=_optional_float(raw, "first_token_at"),
            ended_at=_optional_float(raw, "ended_at"),
            client_gone_at=_optional_float(raw, "client_gone_at"),
            tokens_sent=tokens,
            outcome=outcome,
        )
