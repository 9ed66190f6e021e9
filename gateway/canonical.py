"""The canonical model: the hub every dialect converts to and from.

Each dialect (OpenAI, Anthropic, Gemini) has one package in ``wire/``: its ``request``
module parses a client's body into a ``ChatRequest``, its ``render`` module turns these
stream events back into what that client reads, and its ``upstream`` module does the
reverse toward a provider of the dialect (the body from a ``ChatRequest``, the answers back
into these events). N dialects therefore need N packages, not N x N translators.

Rules:
- Values only: frozen attrs types, no I/O, no behaviour beyond small derived properties
  and checks of a type's own invariants.
- No dialect's shapes: a field means the same whatever dialect filled it (a ``ToolChoice``,
  not one dialect's JSON for it).
- Text is already validated (no lone surrogates) when it reaches these types.
- ``extra`` holds dialect-specific parameters that were validated by the dialect that parsed
  them; only an upstream of the same dialect forwards them, others drop them knowingly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

MAX_TOKENS_LIMIT = 1_000_000  # the most output any client may ask for: above any model's window

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@attrs.frozen
class TextPart:
    text: str


@attrs.frozen
class ImagePart:
    url: str  # https:// or data: URL
    detail: str | None = None


Part = TextPart | ImagePart


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@attrs.frozen
class Message:
    role: Role
    content: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@attrs.frozen
class Tool:
    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None  # structured outputs: arguments must match ``parameters``


ToolChoiceMode = Literal["auto", "none", "required", "tool"]


def _named_only_as_tool(choice: ToolChoice, attribute: Any, name: str | None) -> None:
    if (name is not None) != (choice.mode == "tool"):
        raise ValueError("a tool choice names a tool exactly when its mode is 'tool'")


@attrs.frozen
class ToolChoice:
    """Whether the model may, must or must not call a tool, and which one.

    ``auto``: the model decides; ``none``: no tool call; ``required``: at least one call, of
    any tool; ``tool``: a call of the tool ``name``. ``parallel`` is whether one turn may
    hold several calls (Anthropic's ``disable_parallel_tool_use``, negated); None leaves it
    to the provider. OpenAI's ``parallel_tool_calls`` is a request field of its own, not
    part of the choice, and travels in ``ChatRequest.extra``.
    """

    mode: ToolChoiceMode
    name: str | None = attrs.field(default=None, validator=_named_only_as_tool)
    parallel: bool | None = None


@attrs.frozen
class RoutingPrefs:
    """A client's own say in routing (OpenRouter's ``models`` and ``provider`` fields):
    fallback models after the first, and which providers to prefer or avoid. Only names
    the catalog knows are honoured; the gateway's configuration stays in charge."""

    fallbacks: tuple[str, ...] = ()  # further public model names, in order
    order: tuple[str, ...] = ()  # provider names to try first, in this order
    allow_fallbacks: bool = True  # False: only providers named in ``order``
    only: tuple[str, ...] = ()  # if set, no other provider
    ignore: tuple[str, ...] = ()  # never these providers


@attrs.frozen
class ChatRequest:
    """A generation request as the gateway understands it, whatever the client spoke."""

    model: str  # the public name the client asked for
    messages: tuple[Message, ...]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None  # None: the client said nothing
    user: str | None = None
    seed: int | None = None
    dialect: str = "openai"
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    routing: RoutingPrefs = RoutingPrefs()

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""


MAX_COUNT = 10**9  # tokens: more than any request can hold, far below what a column overflows


def _count(value: int) -> int:
    # Usage comes from upstreams, which are untrusted: a count is clamped, never trusted to
    # fit a ledger column or a balance.
    return min(max(int(value), 0), MAX_COUNT)


@attrs.frozen
class Usage:
    prompt_tokens: int = attrs.field(default=0, converter=_count)
    completion_tokens: int = attrs.field(default=0, converter=_count)
    cached_tokens: int = attrs.field(default=0, converter=_count)
    reasoning_tokens: int = attrs.field(default=0, converter=_count)
    estimated: bool = False  # True when counted by the gateway, not reported by the provider

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Stream events, in the order a provider produces them. Every provider, streaming or not,
# reports through these; a non-streaming answer is the same events, accumulated.


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen
class ReasoningDelta:
    text: str


@attrs.frozen
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class Finish:
    reason: FinishReason


@attrs.frozen
class UsageReport:
    usage: Usage


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finish | UsageReport
