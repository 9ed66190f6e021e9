"""Log lines never hold a key, wherever in the record it was put."""

from __future__ import annotations

import json
import logging

from gateway.errors import RequestError
from gateway.logs import JsonFormatter, TextFormatter

KEY = "lr_live_0123456789ab_" + "a" * 48
PROVIDER = "sk-proj-abcdefghijklmnop"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "arouter.t", "levelno": logging.INFO,
                                  "levelname": "INFO", "msg": msg, "args": args})
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_json_lines_mask_keys_in_the_message_fields_and_nested_values() -> None:
    line = JsonFormatter().format(record(
        "saw %s", KEY, key=KEY, nested={"list": [PROVIDER, {"deep": f"Bearer {KEY}"}]},
        other=object()))
    assert KEY[-48:] not in line and "abcdefghijklmnop" not in line
    entry = json.loads(line)  # still valid JSON
    assert entry["key"] == "lr_live_0123456789ab_[redacted]"
    assert entry["nested"]["list"][0] == "sk-[redacted]"


def test_text_lines_mask_keys_too() -> None:
    line = TextFormatter().format(record("saw %s", KEY))
    assert KEY[-48:] not in line


def test_error_messages_mask_keys() -> None:
    error = RequestError(f"Unrecognized request argument supplied: {KEY}", param=KEY)
    assert KEY[-48:] not in error.message and KEY[-48:] not in str(error.param)
