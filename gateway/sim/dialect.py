"""The contract between the fake upstream's HTTP core and the dialects it speaks.

The server (``gateway.sim.server``) reads a request and asks the dialect that owns its path
to ``read`` it into a ``Asked`` and a way to ``Render`` its answer. The play
(``gateway.sim.play``) decides what happens and when: which tokens, at what times, how the
answer ends. A dialect only says how each of those looks on the wire in its own shape
(``gateway.sim.openai``, ``gateway.sim.anthropic``, ``gateway.sim.gemini``).

Rules:
- Pure: no I/O, no clock; request bodies are untrusted and a dialect answers anything it
  cannot use with ``BadRequest`` carrying the status and message of its own API.
- A ``Rendering`` is made per request, so it may pre-render whatever repeats (ids, model,
  framing): a token then costs one escape of its text and a join. Nothing per token is
  ``json.dumps``-ed but the token text.
- Scenario names never appear in a dialect; the play tells it what to write.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, Protocol

import attrs

from gateway.sim.scenarios import Plan, parse_plan

__all__ = [
    "MALFORMED_BODY",
    "Answer",
    "Asked",
    "BadRequest",
    "Counted",
    "Dialect",
    "DialectName",
    "Finish",
    "Headers",
    "Render",
    "Rendering",
    "Request",
    "bearer",
    "dumps",
    "json_object",
    "json_string",
    "plan_of",
    "text_of",
]

DialectName = Literal["openai", "anthropic", "gemini"]
# Why the tokens stopped, before a dialect names it (stop/end_turn/STOP, length/max_tokens/...,
# tool_calls/tool_use/STOP).
Finish = Literal["stop", "length", "tool_calls"]
Headers = Sequence[tuple[str, str]]

# The body of a 200 that is not JSON: the same broken bytes in every dialect.
MALFORMED_BODY: Final = b"{not json"


@attrs.frozen
class Request:
    """One whole HTTP request as the server read it; header names are lower case."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), if sent."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.frozen
class Asked:
    """What the play needs from a request, whatever dialect it came in."""

    model: str
    stream: bool
    max_tokens: int | None  # the client's cap on completion tokens
    prompt: str  # the last user message: the directive's home and what ``echo`` repeats
    prompt_tokens: int
    plan: Plan
    tools: tuple[str, ...] = ()  # the names of the declared tools (functions), in order
    tool_result: bool = False  # the conversation already holds a tool's result
    # A structured output asked for: the answer is an instance of it (``schemas.py``).
    schema: Mapping[str, object] | None = None
    # Prompt tokens behind a prompt-cache marker: written to the cache, or read (plan).
    cache_tokens: int = 0
    # The request asked the model to think: the answer carries a reasoning signature.
    thinking: bool = False


@attrs.frozen
class Counted:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@attrs.frozen
class Answer:
    """A whole (non-streamed) response: status, body and its content headers."""

    status: int
    body: bytes
    headers: Headers = (("content-type", "application/json"),)


class BadRequest(Exception):
    """The request cannot be played; ``status`` and the message go back in the dialect's
    error shape."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Rendering(Protocol):
    """How one request's answer looks in its dialect. The play calls these in order:
    ``opening`` (sent with the first token, or with the closing if there is none), ``token``
    per token, then one of ``closing``, ``error_event`` or ``malformed_event``; or, for a
    request that does not stream, ``whole`` or ``error``. A tool call instead of text is
    ``tool_stream`` or ``tool_whole``."""

    @property
    def stream_headers(self) -> Headers: ...

    @property
    def midstream_status(self) -> int:
        """The status of the dialect's usual mid-stream failure: what ``error_event``
        reports, and the status a non-streamed request gets in its place."""
        ...

    def opening(self) -> bytes: ...

    def token(self, text: str) -> bytes: ...

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        """The end of a complete stream."""
        ...

    def error_event(self) -> bytes:
        """A mid-stream error event, after which the body ends."""
        ...

    def malformed_event(self) -> bytes:
        """An event whose data is not JSON, after which the body ends."""
        ...

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer: ...

    def tool_stream(self, name: str, fragments: Sequence[str], usage: Counted) -> list[bytes]:
        """A whole stream that calls tool ``name`` with the arguments whose JSON text is the
        concatenation of ``fragments``: its pieces in the order they are sent (the first
        carries the opening, the last ends the stream)."""
        ...

    def tool_whole(self, name: str, fragments: Sequence[str], usage: Counted) -> Answer:
        """A non-streamed answer that calls tool ``name`` (arguments as in ``tool_stream``)."""
        ...

    def error(self, status: int, retry_after: int | None = None) -> Answer: ...


# (record id, whether usage is reported at all) -> the rendering of one request's answer.
# Made once the scenario is known: a rendering that hides usage hides it from every event.
Render = Callable[[int, bool], Rendering]


@attrs.frozen
class Dialect:
    """One API shape the server speaks: which paths are its own, and how to read and
    answer them."""

    name: DialectName
    serves: Callable[[str], bool]  # path -> whether this dialect owns it
    # (request, default plan) -> the call and how to render its answer; raises BadRequest
    read: Callable[[Request, Plan], tuple[Asked, Render]]
    # request -> the credential it carries (the server keeps only a prefix)
    credential: Callable[[Request], str | None]
    # (status, message or None for the default) -> an error in this dialect's shape
    error: Callable[[int, str | None], Answer]


@functools.lru_cache(maxsize=4096)
def json_string(text: str) -> bytes:
    """``text`` as a JSON string literal, raw UTF-8 as the providers send it (so byte
    splitting can land inside a code point); cached, as token texts repeat."""
    try:
        return json.dumps(text, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate from the prompt: \ud800 escapes are valid
        return json.dumps(text).encode()


def dumps(payload: object) -> bytes:
    """Compact JSON for bodies rendered once per response."""
    return json.dumps(payload, separators=(",", ":")).encode()


def text_of(content: object) -> str:
    """The text of a message's content: a string, or the text of its parts or blocks
    (OpenAI content parts, Anthropic blocks and Gemini parts all keep it under "text")."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def bearer(request: Request) -> str | None:
    """The credential of an ``Authorization`` header (the word after the scheme)."""
    value = request.header("authorization")
    if value is None:
        return None
    return value.split(None, 1)[-1] if value.strip() else ""


def json_object(body: bytes, not_json: str, not_object: str) -> Mapping[str, object]:
    """The request body as a JSON object, or ``BadRequest`` with the dialect's wording."""
    try:
        data = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadRequest(not_json) from None
    if not isinstance(data, dict):
        raise BadRequest(not_object)
    return data


def plan_of(prompt: str, defaults: Plan) -> Plan:
    """The plan a prompt's ``#sim`` lines ask for; a bad directive is a ``BadRequest``."""
    try:
        return parse_plan(prompt, defaults)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
