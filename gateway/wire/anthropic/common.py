"""What the client and upstream sides of the Anthropic Messages dialect share, sans-I/O.

``ERROR_TYPES`` (Anthropic's error type for each HTTP status) names the errors we send to
clients (``render``) and bounds the ones an upstream may name to them (``upstream``);
``tool_input`` turns a tool call's arguments into the object Anthropic requires.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Imports no other module of ``wire.anthropic`` (no cycles).
"""

from __future__ import annotations

import json
from typing import Any

# Anthropic's error types by HTTP status (docs "HTTP errors"; 502/504/503 as the SDK names
# them). Another 4xx is an invalid_request_error, another 5xx an api_error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic requires ({} if they are not one)."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
