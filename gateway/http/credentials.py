"""Where a client presents its API key: one finder for every route.

    Authorization: Bearer <key>     every route (the OpenAI form)
    x-api-key: <key>                the Anthropic route and the small routes
    x-goog-api-key: <key>, ?key=    the Gemini routes

Rules: a route names the key header its clients use (``own``); only when none of those is
present does ``Authorization: Bearer`` count. One key per request: two values (two
headers, a header and ``?key=``) are a 401, as is anything not shaped like a key. The
answer is always the one uniform ``AuthenticationError`` (``accounts/keys.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.accounts.keys import parse_bearer, parse_key
from gateway.errors import AuthenticationError

Headers = Sequence[tuple[bytes, bytes]]


def presented_key(headers: Headers, own: bytes | None = None,
                  query_key: str | None = None) -> tuple[str, str]:
    """(key id, key) from a request's headers (lowercase names) and its ``?key=``."""
    values = [value for name, value in headers if own is not None and name == own]
    if query_key is not None:
        values.append(query_key.encode("latin-1"))
    if not values:
        return parse_bearer([value for name, value in headers if name == b"authorization"])
    if len(values) != 1:
        raise AuthenticationError()
    return parse_key(values[0].decode("latin-1"))
