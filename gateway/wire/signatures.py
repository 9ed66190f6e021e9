"""Reasoning signatures across dialects: whose they are, carried inside the opaque value.

A signature (Anthropic's thinking ``signature``, Gemini's ``thoughtSignature``) can only be
read by the provider that wrote it, and that provider wants it back with the history for
multi-turn tool use. A client of another dialect holds it for us: ``for_client`` wraps a
foreign signature as ``arouter.<dialect>.<signature>`` (base64 of that for a Gemini client)
so that ``from_client`` can tell,
when the client sends it back, which dialect wrote it. An upstream renderer then returns a
signature to the dialect that wrote it and leaves it out elsewhere, as the providers
themselves require (none reads another's).

Rules: pure; a signature of the client's own dialect travels unchanged.
"""

from __future__ import annotations

import base64

PREFIX = "arouter."
DIALECTS = ("openai", "anthropic", "gemini")


def for_client(signature: str, by: str, client: str) -> str:
    """The value a ``client``-dialect client is given for a signature written by ``by``
    (base64 for a Gemini client: its SDKs decode thought signatures to bytes)."""
    if not by or by == client:
        return signature
    wrapped = f"{PREFIX}{by}.{signature}"
    return base64.b64encode(wrapped.encode()).decode() if client == "gemini" else wrapped


def foreign(value: str, client: str) -> bool:
    """Whether a signature a ``client``-dialect client sent was written by another dialect
    (an upstream of the client's own dialect cannot read it)."""
    return from_client(value, client)[1] != client


def from_client(value: str, client: str) -> tuple[str, str]:
    """(signature, the dialect that wrote it) for a value a ``client``-dialect client sent."""
    text = value
    if client == "gemini":
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return value, client  # Gemini's own: binary
    if text.startswith(PREFIX):
        by, dot, signature = text[len(PREFIX):].partition(".")
        if dot and by in DIALECTS:
            return signature, by
    return value, client
