"""Strict HTTP/1.1 request framing, ahead of hypercorn's h11 parser (RFC 9112 §5.2, §6.1, §6.3).

h11 (0.16) reads a request that carries both ``Content-Length`` and ``Transfer-Encoding`` by
its Transfer-Encoding, and unfolds an obsolete line fold (``Transfer-Encoding:\\r\\n chunked``)
into a header like any other. Behind a proxy that frames the same bytes differently, either
lets a second request ride inside the first one's body (request smuggling). The RFC allows a
server to process such a request by TE and then close, or to reject it; this gateway rejects
it, and closes the connection, before a byte of the body is read.

Rules:
- A request head with an obs-fold continuation line, or with both framing headers, is a
  protocol error: 400, ``Connection: close``, and nothing after the head is ever read.
- Every error h11 finds in a request head is answered in JSON (the OpenAI error shape, the
  only one the gateway can pick before a route is known), never as an empty body.
- Installed once per process (``install``) into h11's reader table for the *client* side
  (requests); how h11 reads responses is untouched.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import h11
from h11._readers import READERS, maybe_read_from_IDLE_client
from h11._receivebuffer import ReceiveBuffer
from hypercorn.protocol.h11 import H11Protocol

_FRAMING = (b"content-length", b"transfer-encoding")


def read_request_head(buf: ReceiveBuffer) -> h11.Request | None:
    """h11's request-head reader, refusing obs-folds and double framing first."""
    lines = buf.maybe_extract_lines()
    if lines is None:
        if buf.is_next_line_obviously_invalid_request_line():
            raise h11.LocalProtocolError("illegal request line")
        return None
    names = set()
    for line in lines[1:]:
        if bytes(line[:1]) in (b" ", b"\t"):
            raise h11.LocalProtocolError("obsolete line folding in a request header")
        names.add(bytes(line.split(b":", 1)[0]).strip().lower())
    if names.issuperset(_FRAMING):
        raise h11.LocalProtocolError("both Content-Length and Transfer-Encoding")
    # h11 parses the same head from a buffer of its own: its own rules, nothing re-written.
    head = ReceiveBuffer()
    head += b"".join(bytes(line) + b"\r\n" for line in lines) + b"\r\n"
    request: h11.Request | None = maybe_read_from_IDLE_client(head)
    return request


async def _send_error_response(self: Any, status_code: int) -> None:
    """hypercorn's answer to a malformed request, with a JSON body saying so."""
    body = json.dumps({"error": {
        "code": status_code, "type": "invalid_request_error",
        "message": "malformed HTTP request (framing, request line or headers); the "
                   "connection is closed"}}).encode()
    await self._send_h11_event(h11.Response(
        status_code=status_code,
        headers=list(chain(
            [(b"content-type", b"application/json"),
             (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
            self.config.response_headers("h11"),
        )),
    ))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make every h11 server in this process read request heads strictly, and hypercorn
    answer malformed ones in JSON (idempotent)."""
    READERS[(h11.CLIENT, h11.IDLE)] = read_request_head
    H11Protocol._send_error_response = _send_error_response  # type: ignore[method-assign]
