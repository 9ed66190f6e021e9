"""What one event of an OpenAI chat-completions stream says, read without parsing its JSON.

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
from typing import Final

__all__ = ["CONTENT", "DONE", "ERROR", "MALFORMED", "OTHER", "classify"]

OTHER: Final = 0
CONTENT: Final = 1
DONE: Final = 2
ERROR: Final = 3
MALFORMED: Final = 4

_CONTENT: Final = re.compile(r'"content"\s*:\s*"[^"]')


def classify(data: str) -> int:
    """The kind of one event's data: ``OTHER``, ``CONTENT``, ``DONE``, ``ERROR`` or
    ``MALFORMED``."""
    if data == "[DONE]":
        return DONE
    if '"error"' in data:
        try:
            parsed = json.loads(data)
        except ValueError:
            return MALFORMED
        if not isinstance(parsed, dict):
            return MALFORMED
        if parsed.get("error") is not None:
            return ERROR
    elif not (data.startswith("{") and data.endswith("}")):
        stripped = data.strip()
        if not (stripped.startswith("{") and stripped.endswith("}")):
            return MALFORMED
    return CONTENT if _CONTENT.search(data) else OTHER
