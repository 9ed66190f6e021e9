"""Masking of key-shaped strings: ``lr_live_…``, ``sk-…``, ``AIza…`` and bearer tokens.

Defence in depth, applied where text leaves the process: every log line (``logs.py``),
every error message and ``param`` (``errors.GatewayError``), and an upstream's error text
(``providers/call.py``), so a key a client put where an error echoes a value (an unknown
field's name, a model name), or a provider's key its error quotes, is never sent back or
written. The one redactor: nothing else masks.
A gateway key keeps its public id, which is not a secret and helps support.
"""

from __future__ import annotations

import re

_SECRET = re.compile(
    r"(lr_live_[0-9a-f]{12}_)[0-9a-f]+|\b(sk-(?:ant-)?)[A-Za-z0-9_\-]{8,}|\b(AIza)[0-9A-Za-z_\-]{8,}"
    r"|(Bearer\s+)\S+",
    re.IGNORECASE,
)


def redact(text: str, *known: str | None) -> str:
    """``text`` with every key-shaped string masked, and each ``known`` secret (a provider
    key that may not look like one) removed whole."""
    for secret in known:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET.sub(lambda m: next(g for g in m.groups() if g is not None) + "[redacted]",
                       text)
