"""What every streamed answer must look like, whatever else a test checks."""

from __future__ import annotations

import json

from gateway.wire import sse

FINISHED = {"stop", "length", "tool_calls", "content_filter"}

def check_done_rule(raw: bytes) -> None:
    """``data: [DONE]`` appears only after a chunk with a real finish_reason and never
    after an error; nothing follows it."""
    events = [e.data for e in sse.Decoder().feed(raw)]
    if "[DONE]" not in events:
        return
    assert events.index("[DONE]") == len(events) - 1, "bytes after [DONE]"
    reasons = [c["finish_reason"] for data in events[:-1]
               for c in json.loads(data).get("choices", []) if c.get("finish_reason")]
    assert reasons and reasons[-1] in FINISHED, f"[DONE] after {reasons}"
    assert "error" not in reasons
