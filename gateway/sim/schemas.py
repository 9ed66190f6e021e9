"""Structured outputs in the fake upstream: the least JSON instance of a requested schema.

A request that asks for JSON (OpenAI ``response_format``, Anthropic ``output_config.format``,
Gemini ``responseMimeType: application/json`` with ``responseJsonSchema`` or
``responseSchema``) is answered with ``instance(schema)`` as text, cut into pieces that
stream as tokens, so a client's parser (``client.beta.chat.completions.parse`` and the
like) has something real to validate.

Rules: pure; every property of an object is filled (strict schemas require them all);
``$ref`` is followed within the schema's own ``$defs``/``definitions``; Gemini's upper-case
type names read as JSON Schema's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PIECE = 8  # characters per streamed piece of the JSON text
MAX_DEPTH = 16


def instance(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
             depth: int = 0) -> Any:
    """A value that ``schema`` accepts (for the schemas generators of structured outputs
    write: objects, arrays, scalars, enums, ``anyOf``, ``$ref``)."""
    root = schema if root is None else root
    if depth > MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return instance(target, root, depth + 1)
    for key in ("enum", "const"):
        if key in schema:
            value = schema[key]
            return value[0] if key == "enum" and isinstance(value, list) and value else value
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return instance(options[0], root, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: instance(sub, root, depth + 1) for name, sub in properties.items()
                if isinstance(sub, Mapping)}
    if kind == "array":
        items = schema.get("items")
        return [instance(items, root, depth + 1)] if isinstance(items, Mapping) else []
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def pieces(schema: Mapping[str, Any]) -> list[str]:
    """The instance's JSON text in streamable pieces."""
    text = json.dumps(instance(schema), separators=(",", ":"))
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
