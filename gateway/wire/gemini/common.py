"""What more than one module of the Gemini ``generateContent`` dialect needs, sans-I/O.

``STATUS_NAMES`` (google.rpc status names by HTTP status) names the errors we send to
clients (``render``) and bounds the ones an upstream may name (``upstream``);
``loads_object`` reads a JSON object out of tool-call text. ``request``,
``render`` and ``upstream`` import from here, never the reverse.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.wire.jsonbody import compact, has_surrogate, without_surrogates

# google.rpc status names for the HTTP statuses the gateway answers with. The Gemini docs
# list 400 INVALID_ARGUMENT/FAILED_PRECONDITION, 403, 404, 429, 500, 503 and 504; the rest
# follow google.rpc.Code's HTTP mapping. 402 (out of credits) is FAILED_PRECONDITION, as
# Gemini answers a project without billing; 502 (the provider failed us) is UNAVAILABLE, a
# transient condition the SDKs retry. Other 4xx read INVALID_ARGUMENT, other 5xx INTERNAL.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# generationConfig fields without a canonical field: validated, kept in ``extra`` and
# forwarded only to Gemini upstreams. ``safetySettings`` travels the same way at top level.


def loads_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, or None; escaped lone surrogates become U+FFFD."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if "\\u" in text:
        dumped = compact(value)
        if has_surrogate(dumped):
            fixed = json.loads(without_surrogates(dumped))
            assert isinstance(fixed, dict)
            return fixed
    return value
