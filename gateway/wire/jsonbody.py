"""Strict JSON for untrusted request bodies.

Pure: bytes in, a Python value or a ``RequestError`` out.

Rules (FAULTS.md A1, A2, A12, A13, A16, S8, S12):
- The body must be strict UTF-8; invalid bytes are a 400, never a 500 later on re-encode.
- Duplicate object keys are rejected, so the gateway and the upstream can never read two
  different values of ``model`` or ``stream`` from one body.
- ``NaN``/``Infinity`` (and floats that overflow to it) are rejected, and integers are
  bounded in digits.
- Nesting beyond the interpreter's recursion limit is a 400, found by the C scanner in
  microseconds rather than by a pre-scan.
- A lone surrogate escape (``"\\ud800"``) is a 400: it would fail later, on re-encoding
  the body for the upstream, as a 500.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from gateway.errors import RequestError, UpstreamProtocolError

MAX_INT_DIGITS = 40


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Invalid(f"duplicate key {key!r} in JSON object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _Invalid(f"{name} is not valid JSON")


def _int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _Invalid("integer too large")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: JSON has no infinity, and re-serialising it is invalid
        raise _Invalid("number out of range")
    return value


class _Invalid(ValueError):
    pass


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float
)


def parse(body: bytes) -> Any:
    """Parse a request body; every failure is a ``RequestError`` (400) with a clear message."""
    if not body.strip():
        raise RequestError("request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _decoder.decode(text)
    except _Invalid as exc:
        raise RequestError(f"invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise RequestError("invalid JSON: nesting too deep") from None
    # Decoded UTF-8 holds no surrogates; only a \\uD8xx-\\uDFxx escape can produce one.
    if _SURROGATE_ESCAPE.search(text) and _holds_surrogate(value):
        raise RequestError("invalid JSON: lone surrogate in a string (not encodable as UTF-8)")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _holds_surrogate(value: Any) -> bool:
    stack = [value]  # iterative: the body may be nested close to the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if has_surrogate(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def without_surrogates(text: str) -> str:
    """``text`` with any lone surrogate replaced by U+FFFD (for untrusted upstream text)."""
    if text.isascii() or not has_surrogate(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def has_surrogate(text: str) -> bool:
    """True if ``text`` holds a lone surrogate, which cannot be encoded as UTF-8."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# -- small helpers every wire module uses ---------------------------------------------------


def is_int(value: Any) -> TypeGuard[int]:
    """A JSON integer (``bool`` is an ``int`` to Python, never to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def compact(value: Any) -> str:
    """JSON as the wire modules write it: no spaces, UTF-8 kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def relayed(answer: Mapping[str, Any], ours: Mapping[str, Any], usage_key: str,
            usage: Any) -> bytes:
    """An upstream's whole answer for a client of its own dialect: every field as sent but
    ``ours`` (the gateway's id and the model the client named), and ``usage`` under
    ``usage_key`` where the upstream sent none. Escaped ASCII, so text the upstream escaped
    (lone surrogates included) reaches the client exactly as escaped."""
    out = {**answer, **ours}
    if not out.get(usage_key):
        out[usage_key] = usage
    return json.dumps(out, separators=(",", ":")).encode()


def upstream_object(data: str | bytes | dict[str, Any], what: str) -> dict[str, Any]:
    """A JSON object an upstream sent (``what``: "an event", "a body", ...), or
    ``UpstreamProtocolError``: upstream bytes are untrusted too. An object parsed already
    (by ``upstream_object``) is returned as it is."""
    if isinstance(data, dict):
        return data
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise UpstreamProtocolError(f"upstream sent {what} that is not JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"upstream sent {what} that is not a JSON object")
    return value
