"""What one answer has said so far: the relay's running account of a request's output.

Pure. It accumulates canonical events (for the non-streaming body, the usage estimate of an
interrupted stream, and the record), and knows nothing about dialects or sockets.

Token estimates (``tokens.py``) are used only when the provider did not report usage (an
aborted or truncated stream), and are always flagged ``estimated``.

The billing rule lives here, in ``usage``: **a request that produced no output is free**
unless its provider reported usage for it. Output means any text, reasoning or tool-call
characters the upstream sent (and the relay handed on); a request that failed, timed out or
was abandoned before any is recorded with zero tokens, whatever its HTTP status.
"""

from __future__ import annotations

import attrs

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.tokens import estimate_prompt_tokens

NOTHING = Usage()  # what a request that produced no output (and no report) is billed


@attrs.define
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


@attrs.define
class Transcript:
    text: list[str] = attrs.field(factory=list)
    reasoning: list[str] = attrs.field(factory=list)
    signature: str = ""  # the latest reasoning signature (a client sends it back)
    signed_by: str = ""  # the dialect that wrote it
    redacted: list[str] = attrs.field(factory=list)
    calls: dict[int, _Call] = attrs.field(factory=dict)
    finish: FinishReason | None = None
    reported: Usage | None = None
    events: int = 0
    chars: int = 0

    def add(self, event: StreamEvent) -> None:
        self.events += 1
        if type(event) is TextDelta:
            self.text.append(event.text)
            self.chars += len(event.text)
        elif isinstance(event, ReasoningDelta):
            self.reasoning.append(event.text)
            self.chars += len(event.text)
        elif isinstance(event, ReasoningSignature):
            self.signature, self.signed_by = event.signature, event.by
        elif isinstance(event, RedactedReasoning):
            self.redacted.append(event.data)
            self.chars += len(event.data)  # served output: bounded by the output cap too
            self.signed_by = self.signed_by or event.by
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(event.index, _Call())
            if event.id:
                call.id = event.id
            if event.name:
                call.name += event.name
            call.arguments.append(event.arguments)
            self.chars += len(event.arguments) + len(event.name or "")
        elif isinstance(event, Finish):
            self.finish = event.reason
        elif isinstance(event, UsageReport):
            self.reported = event.usage

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(c.id, c.name, "".join(c.arguments))
            for _, c in sorted(self.calls.items())
        ]

    def so_far(self, request: ChatRequest) -> Usage:
        """What the output so far would be billed (for a checkpoint while it streams): a
        report may already carry the prompt, but its output count lags what was relayed."""
        relayed = (self.chars + 3) // 4
        reported = self.reported
        if reported is None:
            return Usage(estimate_prompt_tokens(request) if relayed else 0, relayed,
                         estimated=True)
        return Usage(reported.prompt_tokens, max(reported.completion_tokens, relayed),
                     reported.cached_tokens, estimated=True,
                     cache_write_tokens=reported.cache_write_tokens)

    def usage(self, request: ChatRequest) -> Usage:
        """What the request is billed for: the provider's usage if it reported any, else an
        estimate of what was relayed, else nothing (no output, no report: free)."""
        reported = self.reported
        if reported is not None and (reported.completion_tokens or not self.chars):
            return reported
        if not self.chars:
            return NOTHING
        # Nothing reported, or a report of no output for output we relayed: count it.
        return Usage(
            prompt_tokens=reported.prompt_tokens if reported else estimate_prompt_tokens(request),
            completion_tokens=(self.chars + 3) // 4,
            cached_tokens=reported.cached_tokens if reported else 0,
            estimated=True,
            cache_write_tokens=reported.cache_write_tokens if reported else 0,
        )
