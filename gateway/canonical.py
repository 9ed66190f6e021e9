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
- Same dialect is lossless: ``raw`` is the client's whole body, and an upstream of the
  client's own dialect is sent that body with only the gateway's rewrites (model, stream,
  usage on streams), so every field the gateway does not interpret reaches it as sent.
- Across dialects a request travels only through these types. ``features`` names every
  part of the request that not every dialect can honour (a canonical ``FEATURES`` name, or
  ``dialect:param`` for a field with no canonical meaning) with the client's own name for
  it; an upstream dialect declares which features it honours, and the rest is refused by
  name or, where the operator allowed it, dropped (``routing/fidelity.py``).
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


@attrs.frozen
class FilePart:
    """A document or a recording the model reads: base64 ``data`` of ``media_type``
    (``application/pdf``; ``audio/wav``, ``audio/mpeg``), with the client's file name."""

    media_type: str
    data: str
    name: str | None = None

    @property
    def audio(self) -> bool:
        return self.media_type.startswith("audio/")


Part = TextPart | ImagePart | FilePart
# Media each kind of file part must be: what every dialect that takes files agrees on.
DOCUMENT_TYPES = ("application/pdf",)
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}  # OpenAI's formats, as media types


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
    is_error: bool = False  # a tool result reporting that the call failed
    # An assistant turn's reasoning, as the provider that wrote it returned it: its text,
    # its opaque signature and any encrypted parts. That provider wants them back with the
    # history for multi-turn tool use; no other can read them (``wire/signatures.py``).
    reasoning: str = ""
    signature: str = ""
    signed_by: str = ""  # the dialect that wrote ``signature`` and ``redacted``
    redacted: tuple[str, ...] = ()

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
    any tool; ``tool``: a call of the tool ``name``. Whether one turn may hold several calls
    is ``ChatRequest.parallel_tool_calls``.
    """

    mode: ToolChoiceMode
    name: str | None = attrs.field(default=None, validator=_named_only_as_tool)


@attrs.frozen
class ResponseFormat:
    """Structured output: any JSON object (``json_object``), or an instance of ``schema``
    (``json_schema``; ``strict``: the provider must enforce it)."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str = "response"
    description: str | None = None
    strict: bool | None = None


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[Effort, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@attrs.frozen
class Reasoning:
    """How much the model thinks before it answers.

    ``effort`` (OpenAI's words) or ``budget`` (thinking tokens, Anthropic's and Gemini's
    words), or neither (the provider's default amount); ``enabled`` False turns thinking
    off; ``include`` is whether thoughts come back (None: the provider's default).
    """

    enabled: bool = True
    effort: Effort | None = None
    budget: int | None = None
    include: bool | None = None

    @property
    def as_effort(self) -> Effort | None:
        """The effort, or the least effort whose budget covers ``budget``."""
        if not self.enabled:
            return "none"
        if self.effort is not None or self.budget is None:
            return self.effort
        return next((e for e, b in EFFORT_BUDGETS.items() if self.budget <= b), "max")

    def as_budget(self, max_tokens: int | None) -> int | None:
        """Thinking tokens: the budget, or the effort's (below ``max_tokens`` if given, as
        Anthropic requires); 0 when thinking is off, None for the provider's default."""
        if not self.enabled:
            return 0
        budget = self.budget
        if budget is None and self.effort is not None:
            budget = EFFORT_BUDGETS.get(self.effort, 0)
            if max_tokens is not None:  # an effort is a share of the room, as OpenRouter reads it
                budget = min(budget, int(max_tokens * EFFORT_SHARES.get(self.effort, 0.5)))
        if budget is None:
            return None
        if max_tokens is not None:
            budget = min(budget, max_tokens - 1)
        return budget


# OpenRouter's reading of efforts as thinking budgets (tokens).
EFFORT_BUDGETS: dict[Effort, int] = {"minimal": 1024, "low": 2048, "medium": 8192,
                                     "high": 16384, "xhigh": 24576, "max": 32768}
# ... and as a share of max_tokens, which leaves the rest for the answer.
EFFORT_SHARES: dict[Effort, float] = {"minimal": 0.1, "low": 0.2, "medium": 0.5, "high": 0.8,
                                      "xhigh": 0.9, "max": 0.95}


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
    # "price": the cheapest deployments first; "latency": the fastest to a first token
    # (as this process measured them) first.
    sort: Literal["price", "latency"] | None = None
    require_parameters: bool = False  # True: no deployment may drop anything asked for


@attrs.frozen
class ChatRequest:
    """A generation request as the gateway understands it, whatever the client spoke."""

    model: str  # the public name the client asked for
    messages: tuple[Message, ...]
    stream: bool = False
    max_tokens: int | None = None  # per answer
    # Answers asked for (OpenAI ``n``, Gemini ``candidateCount``): more than one only from an
    # upstream of the client's own dialect, as a whole answer relayed as sent.
    choices: int = 1
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None  # None: the client said nothing
    user: str | None = None
    seed: int | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    parallel_tool_calls: bool | None = None  # None: the provider's default
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    dialect: str = ""  # the client's; "" for a request the gateway made (always translated)
    routing: RoutingPrefs = RoutingPrefs()
    raw: Mapping[str, Any] = attrs.field(factory=dict)  # the client's body, as parsed
    # The client's own API headers (``anthropic-beta``, ...), for an upstream of its dialect.
    headers: Mapping[str, str] = attrs.field(factory=dict)
    features: Mapping[str, str] = attrs.field(factory=dict)  # feature -> the client's name
    # The prompt's size where the client sent token ids (legacy completions, embeddings):
    # counted, not estimated from the text (which leaves them out).
    prompt_tokens: int | None = None
    # The items a previous answer holds (the Responses API's ``previous_response_id``), as
    # stored: before ``raw``'s input, for an upstream that takes items as they are.
    history: tuple[Any, ...] = ()

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""


# What a request may ask for that not every upstream dialect can honour. A dialect's own
# parameter without a canonical meaning is the feature ``"<dialect>:<param>"``.
FEATURES = (
    "temperature", "top_p", "stop", "seed", "top_k", "presence_penalty", "frequency_penalty",
    "user", "parallel_tool_calls", "response_format", "reasoning", "images", "tool_errors",
    "documents", "audio",
    # Finer points some dialects have no form for:
    "tool_result_media",  # images or documents in a tool's result
    "strict_tools",  # a tool whose arguments must match its schema
    "message_names",  # a participant's name on a message
    "image_detail",  # how finely an image is read
)


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
    # Of ``prompt_tokens``, those written to the provider's prompt cache (priced apart).
    cache_write_tokens: int = attrs.field(default=0, converter=_count)

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
class ReasoningSignature:
    """The opaque signature of the reasoning so far (Anthropic's ``signature_delta``,
    Gemini's ``thoughtSignature``): only the provider that wrote it can read it, and a
    client must send it back with the history for multi-turn tool use to work."""

    signature: str
    by: str = ""  # the dialect of the provider that wrote it


@attrs.frozen
class RedactedReasoning:
    """Reasoning the provider returns encrypted (Anthropic's ``redacted_thinking``)."""

    data: str
    by: str = ""  # the dialect of the provider that wrote it


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


StreamEvent = (TextDelta | ReasoningDelta | ReasoningSignature | RedactedReasoning
               | ToolCallDelta | Finish | UsageReport)


# -- embeddings -------------------------------------------------------------------------------

@attrs.frozen
class EmbedRequest:
    """Texts to embed, whatever the client spoke (OpenAI ``/v1/embeddings``, Gemini
    ``:embedContent``/``:batchEmbedContents``)."""

    model: str  # the public name
    # Texts; or token arrays, which only an OpenAI-dialect upstream reads as they are.
    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None = None  # OpenAI ``dimensions``, Gemini ``outputDimensionality``
    dialect: str = ""  # the client's
    task: str | None = None  # Gemini ``taskType`` (a Gemini upstream's business)
    user: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict)  # the client's body, as parsed



@attrs.frozen
class Embeddings:
    """An upstream's vectors, one per input in order, and the input tokens it counted (None:
    it reports none, as Gemini does: the gateway estimates)."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int | None = None
