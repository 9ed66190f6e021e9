"""Server-Sent Events, both directions, sans-I/O.

``Decoder`` turns the bytes of an upstream ``text/event-stream`` into ``Event`` values;
``encode``, ``comment`` and ``KEEPALIVE`` render the bytes we send to clients. Parsing follows
the WHATWG HTML "event stream interpretation" rules; the decoder sits on the relay's hot path,
so it works on whole buffers and never loops in Python over single bytes.

Rules:
- Pure: no sockets, no clock, no globals but constants. Feed bytes, get events.
- Lines end in CRLF, LF or CR, and nothing else. U+2028, U+2029, NEL and friends are data:
  splitting on them (as ``str.splitlines`` and httpx's ``aiter_lines`` do) corrupts JSON.
  A CR that ends one feed and an LF that starts the next are one line ending, not two.
- Bytes are decoded as UTF-8 with ``errors="replace"``, and only once a line is complete, so
  a code point split across feeds decodes whole. One UTF-8 BOM at the start of the stream is
  dropped.
- A blank line dispatches the event. An event without any ``data`` line is not dispatched,
  even if it had ``event``/``id``/``retry`` fields (the spec's rule, kept on purpose).
- ``field:value`` loses exactly one space after the colon; a line without a colon is a field
  with an empty value; a line starting with ``:`` is a comment (only counted). ``data``
  lines join with "\\n"; ``id`` containing NUL is ignored; ``retry`` counts only if it is all
  ASCII digits; unknown fields are ignored.
- The byte stream is untrusted: an event that grows beyond ``max_event_bytes`` without a
  blank line raises ``SSEError`` rather than buffering without bound, and the decoder
  stays failed. An event's size is the bytes of all its lines, comments and the unfinished
  line included, line endings excluded.
- Split points never change the outcome: feeding one byte at a time yields the same events
  and the same errors as feeding everything at once.
- An event not ended by a blank line at end of input is discarded (spec). ``pending`` tells
  such a truncated stream from a clean end.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

__all__ = [
    "KEEPALIVE",
    "MAX_EVENT_BYTES",
    "Decoder",
    "Event",
    "SSEError",
    "comment",
    "encode",
]

#: Far above any real LLM stream event (a chunk is a few hundred bytes), far below what
#: hurts a process that relays thousands of streams.
MAX_EVENT_BYTES: Final = 8 * 1024 * 1024

KEEPALIVE: Final = b": keepalive\n\n"

_BOM: Final = b"\xef\xbb\xbf"

# A line ending followed by a blank line. A compiled pattern splits about twice as fast as
# ``str.split("\n\n")`` on CPython 3.11 (measured on 5 kB of OpenAI chunks).
_BLANK_LINE: Final = re.compile("\n\n")


class SSEError(ValueError):
    """The upstream byte stream breaks a limit of the decoder."""


@attrs.frozen
class Event:
    """One dispatched event.

    ``id`` and ``retry`` are the fields as they appeared in *this* event (``None`` if absent);
    the spec's sticky "last event ID" is ``Decoder.last_event_id``.
    """

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class Decoder:
    """Incremental decoder: bytes in, complete Events out.

    State between feeds: the bytes of an unfinished line (kept as a list of chunks so a long
    line arriving in many reads is joined once, not once per read), the fields of the event
    being built, and whether a CR ended the previous feed.
    """

    __slots__ = (
        "_at_start",
        "_comments",
        "_data",
        "_event",
        "_event_bytes",
        "_failed",
        "_id",
        "_last_event_id",
        "_max",
        "_partial",
        "_partial_len",
        "_retry",
        "_skip_lf",
        "_started",
        "_stream_retry",
    )

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self._at_start = True  # until the first 3 bytes decide whether there is a BOM
        self._skip_lf = False  # the previous feed ended in CR: a leading LF completes CRLF
        self._partial: list[bytes] = []
        self._partial_len = 0
        # Bytes of the event being built, line endings excluded, so that the limit check
        # gives the same answer wherever the feeds split (CRLF vs LF does not count either).
        self._event_bytes = 0
        self._failed: str | None = None
        self._comments = 0
        self._last_event_id = ""
        self._stream_retry: int | None = None
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False  # a field line of the current event has been seen

    @property
    def pending(self) -> bool:
        """True if an incomplete line or event is buffered.

        At end of input this means the stream was truncated mid-event. Comment lines alone
        do not make an event pending.
        """
        return self._started or bool(self._partial)

    @property
    def comments(self) -> int:
        """Number of comment lines (``:...``) seen so far."""
        return self._comments

    @property
    def last_event_id(self) -> str:
        """The spec's last event ID buffer: the latest valid ``id`` field, "" if none yet."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The latest valid ``retry`` field, even one in an event that was not dispatched."""
        return self._stream_retry

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data``; return the events it completes, in order.

        Raises ``SSEError`` if an event exceeds ``max_event_bytes``; the decoder then stays
        failed and every later ``feed`` raises the same error.
        """
        if self._failed is not None:
            raise SSEError(self._failed)
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if self._at_start:
            data = self._strip_bom(data)
        if b"\n" not in data and b"\r" not in data:
            # No line ends here: remember the bytes, touch nothing else.
            if data:
                self._partial.append(data)
                self._partial_len += len(data)
                if self._event_bytes + self._partial_len > self._max:
                    self._fail()
            return []
        if self._partial:
            self._partial.append(data)
            data = b"".join(self._partial)
            self._partial = []
            self._partial_len = 0
        if b"\r" in data:
            # CR only appears here, so LF-only streams never pay for the two replaces.
            self._skip_lf = data[-1] == 0x0D
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = data.rfind(b"\n") + 1
        body = data[:end]
        if end < len(data):
            tail = data[end:]
            self._partial = [tail]
            self._partial_len = len(tail)
        if self._event_bytes + len(data) > self._max:
            # Only a feed that could break the limit pays for the exact line-by-line count.
            self._check_limit(body)
        if body.endswith(b"\n\n"):
            self._event_bytes = 0  # the feed ends at an event boundary, as it usually does
        else:
            self._count_event_bytes(body)
        return self._parse(body.decode("utf-8", "replace"))

    def close(self) -> list[Event]:
        """End of input. Always returns ``[]``.

        Per the spec an event not ended by a blank line is discarded at end of input, so
        there is nothing left to return; the method exists so callers can treat EOF like a
        feed. It does not clear ``pending``: read it to tell a clean end from a truncated
        stream.
        """
        return []

    # -- internals -------------------------------------------------------------------------

    def _strip_bom(self, data: bytes) -> bytes:
        # At most 2 bytes can be held back here, so joining them is free.
        head = b"".join(self._partial) + data if self._partial else data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._partial = [head] if head else []
            self._partial_len = len(head)
            return b""
        self._at_start = False
        self._partial = []
        self._partial_len = 0
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _fail(self) -> None:
        self._failed = f"SSE event exceeds {self._max} bytes without a blank line"
        raise SSEError(self._failed)

    def _check_limit(self, body: bytes) -> None:
        size = self._event_bytes
        for line in body.split(b"\n")[:-1]:
            size = size + len(line) if line else 0
            if size > self._max:
                self._fail()
        if size + self._partial_len > self._max:
            self._fail()

    def _count_event_bytes(self, body: bytes) -> None:
        # ``body`` is whole lines ending in LF. Only the lines after its last blank line
        # belong to the event still being built.
        last_blank = body.rfind(b"\n\n")
        if last_blank >= 0:
            start = last_blank + 2
        elif body[0] == 0x0A:
            start = 1
        else:
            self._event_bytes += len(body) - body.count(b"\n")
            return
        self._event_bytes = len(body) - start - body.count(b"\n", start)

    def _parse(self, text: str) -> list[Event]:
        # ``text`` is whole lines, each ending in LF. Splitting at "\n\n" cuts it into blocks
        # at blank lines; each block but the last is then a whole event (plus, at most, a
        # leading blank line, whose dispatch is harmless because dispatching nothing is a
        # no-op). The last piece is the start of an event that a later feed will end.
        events: list[Event] = []
        blocks = _BLANK_LINE.split(text)
        rest = blocks.pop()
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block and not self._started:
                # The common case, one ``data: {...}`` line per event, as OpenAI sends.
                events.append(Event(block[6:]))
            else:
                self._lines(block, events)
                self._dispatch(events)
        if rest:
            self._lines(rest[:-1], events)
        return events

    def _lines(self, block: str, events: list[Event]) -> None:
        for line in block.split("\n"):
            if not line:
                self._dispatch(events)
                continue
            colon = line.find(":")
            if colon == 0:
                self._comments += 1
                continue
            if colon < 0:
                name, value = line, ""
            else:
                start = colon + 2 if line.startswith(" ", colon + 1) else colon + 1
                name, value = line[:colon], line[start:]
            self._started = True
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self._id = value
                    self._last_event_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                try:
                    retry = int(value)
                except ValueError:  # beyond Python's int-from-str digit limit: ignore
                    continue
                self._retry = retry
                self._stream_retry = retry

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            events.append(Event("\n".join(self._data), self._event, self._id, self._retry))
            self._data = []
        self._event = None
        self._id = None
        self._retry = None
        self._started = False


def encode(data: str, *, event: str | None = None) -> bytes:
    """Render one event: an optional ``event:`` line, one ``data:`` line per line of ``data``.

    SSE cannot carry a CR inside data, so CRLF and CR in ``data`` become line breaks like LF
    (the client sees "\\n"). ``event`` must not contain CR or LF.
    """
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body = "data: " + "\ndata: ".join(lines) + "\n\n"
    else:
        body = "data: " + data + "\n\n"
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("SSE event name must not contain CR or LF")
        body = "event: " + event + "\n" + body
    return body.encode()


def comment(text: str = "") -> bytes:
    """Render a comment line and a blank line; clients ignore it (used for keepalives)."""
    if "\n" in text or "\r" in text:
        raise ValueError("SSE comment must not contain CR or LF")
    return (": " + text + "\n\n").encode()
