"""What one event of a stream says, read without parsing its JSON: an OpenAI chat chunk
(``classify``), or an event of the Anthropic Messages, Gemini or OpenAI Responses streams
(``CLASSIFIERS``).

The client classifies every event of every stream, so this runs per token: a C-level
substring test and one regular-expression search decide the common cases, and JSON is parsed
only for an event that may carry an error.

Rules:
- Pure: ``str`` in (an SSE event's data), a kind out. No I/O, no clock.
- ``CONTENT`` means a non-empty ``content`` string somewhere in the event (a first chunk with
  ``"content":""`` is not content). In valid JSON every unescaped ``"content"`` followed by a
  colon is a key, because quotes inside strings are escaped; so the search cannot be fooled by
  content text.
- ``ERROR`` means a JSON object with a non-null top-level ``error`` (OpenAI's mid-stream error
  shape, and arouter's terminal event); ``DONE`` is ``[DONE]``. ``MALFORMED`` means data that
  is not a JSON object: judged by its first and last characters only (``{...}``), unless it
  may be an error, which is parsed whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["CLASSIFIERS", "CONTENT", "DONE", "ERROR", "MALFORMED", "OTHER", "classify"]

# Flags: one Gemini chunk may carry the last text and the finish reason both.
OTHER: Final = 0
CONTENT: Final = 1
DONE: Final = 2
ERROR: Final = 4
MALFORMED: Final = 8

_CONTENT: Final = re.compile(r'"content"\s*:\s*"[^"]')


def classify(data: str) -> int:
    """The kind of one event's data: ``OTHER``, ``CONTENT``, ``DONE``, ``ERROR`` or
    ``MALFORMED``."""
    if data == "[DONE]":
        return DONE
    bad = _error_or_malformed(data, lambda parsed: parsed.get("error") is not None)
    if bad is not None:
        return bad
    return CONTENT if _CONTENT.search(data) else OTHER


_TEXT: Final = re.compile(r'"text"\s*:\s*"[^"]')
_DELTA: Final = re.compile(r'"delta"\s*:\s*"[^"]')


def _error_or_malformed(data: str, is_error: Callable[[dict[str, Any]], bool]) -> int | None:
    """ERROR or MALFORMED for data that may be an error or is not an object; else None."""
    if '"error"' in data or '"response.failed"' in data:
        try:
            parsed = json.loads(data)
        except ValueError:
            return MALFORMED
        if not isinstance(parsed, dict):
            return MALFORMED
        return ERROR if is_error(parsed) else None
    if data.startswith("{") and data.endswith("}"):
        return None  # the common case, without a copy
    stripped = data.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return MALFORMED
    return None


def classify_messages(data: str) -> int:
    """An Anthropic Messages event: text deltas are content; ``message_stop`` ends it."""
    bad = _error_or_malformed(data, lambda p: p.get("type") == "error")
    if bad is not None:
        return bad
    if '"message_stop"' in data:
        return DONE
    return CONTENT if '"text_delta"' in data and _TEXT.search(data) else OTHER


def classify_gemini(data: str) -> int:
    """A Gemini chunk: text parts are content; a finish reason ends it (it may come with
    the last text)."""
    bad = _error_or_malformed(data, lambda p: p.get("error") is not None)
    if bad is not None:
        return bad
    kind = CONTENT if _TEXT.search(data) else OTHER
    return kind | DONE if '"finishReason"' in data else kind


def classify_responses(data: str) -> int:
    """An OpenAI Responses event: text deltas are content; the response's completion (or
    its incomplete end) ends it."""
    bad = _error_or_malformed(
        data, lambda p: p.get("type") in ("error", "response.failed"))
    if bad is not None:
        return bad
    if '"response.completed"' in data or '"response.incomplete"' in data:
        return DONE
    return CONTENT if '"response.output_text.delta"' in data and _DELTA.search(data) else OTHER


CLASSIFIERS: Final[dict[str, Callable[[str], int]]] = {
    "chat": classify,
    "messages": classify_messages,
    "gemini": classify_gemini,
    "responses": classify_responses,
}
