"""Masking of key-shaped strings: ``lr_live_…``, ``sk-…``, ``AIza…`` and bearer tokens.

Defence in depth, applied where text leaves the process: every log line (``logs.py``) and
every error message and ``param`` (``errors.GatewayError``), so a key a client put where an
error echoes a value (an unknown field's name, a model name) is never sent back or written.
A gateway key keeps its public id, which is not a secret and helps support.
"""

from __future__ import annotations

import re

_SECRET = re.compile(
    r"(lr_live_[0-9a-f]{12}_)[0-9a-f]+|\b(sk-(?:ant-)?)[A-Za-z0-9_\-]{8,}|\b(AIza)[0-9A-Za-z_\-]{8,}"
    r"|(Bearer\s+)\S+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: next(g for g in m.groups() if g is not None) + "[redacted]",
                       text)
