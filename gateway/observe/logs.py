"""Structured logs: one JSON object per line, carrying the generation id, never a secret.

Rules:
- Context travels as ``extra={...}`` fields (``generation_id``, ``status``, ...), never
  formatted into the message, so logs can be queried.
- Defence in depth: anything key-shaped (``lr_live_…``, ``sk-…``, ``AIza…``, bearer tokens)
  is masked in every message and field before it is written, whoever logged it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from gateway.observe.redact import redact

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = _scrub(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=lambda o: redact(str(o)), ensure_ascii=False)


def _scrub(value: Any) -> Any:
    """``value`` with every string in it redacted, however deeply nested."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_scrub(v) for v in value]
    return value


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{name}={value}"
            for name, value in vars(record).items()
            if name not in _STANDARD and not name.startswith("_")
        )
        line = super().format(record)
        return redact(f"{line} {extras}" if extras else line)


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: noise per request, and URLs are not ours to log.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
