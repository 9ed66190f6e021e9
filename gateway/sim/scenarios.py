"""What a simulated request does: the scenario table, the ``#sim`` directive and token texts.

Shared by the fake upstream server (``gateway.sim.server``) and the gateway's built-in
simulator provider, so both behave alike from the same prompt.

A request is steered by a directive line in its last user message, which survives any
gateway because every gateway forwards messages::

    #sim scenario=stall tokens=40 interval_ms=5 first_token_ms=100 tag=t1 retry_after=3

Rules:
- Pure: no I/O, no clock, no globals but constants. Prompt text in, frozen ``Plan`` out.
- The prompt is untrusted: an unknown key or scenario, a malformed item or a number that
  is not finite or is out of bounds raises ``ValueError`` with a message meant for the
  person who wrote the directive. Nothing else in a prompt changes a plan.
- A directive line is one whose first word is exactly ``#sim``; every such line applies,
  in order, so a later value wins. ``#simulate`` is ordinary text.
- Every scenario is declared once, in ``SCENARIOS``; servers read its fields and never
  test scenario names.
- Token texts are deterministic functions of (kind, prompt, n), so tests can predict the
  exact output of any stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs

__all__ = [
    "DIRECTIVE",
    "KINDS",
    "MAX_DELAY",
    "MAX_TOKENS",
    "SCENARIOS",
    "Ending",
    "Plan",
    "Scenario",
    "is_directive",
    "parse_plan",
    "plan_from",
    "prompt_tokens",
    "token_texts",
]

DIRECTIVE: Final = "#sim"
MAX_TOKENS: Final = 1_000_000
MAX_DELAY: Final = 3600.0  # seconds; bounds every delay a prompt can ask for
MAX_TAG_LENGTH: Final = 200
KINDS: Final = ("echo", "lorem")

# How a response ends once ``Scenario.stop_after`` of its tokens have been sent (each
# dialect of the fake upstream renders these in its own shape):
#   complete     the dialect's normal end: finish reason, usage, end of stream
#   stall        silence until the client leaves
#   cut          the TCP connection is closed (FIN) mid-body
#   reset        the TCP connection is reset (RST, SO_LINGER 0) mid-body
#   error_event  the dialect's mid-stream error event (OpenAI ``data: {"error": ...}``,
#                Anthropic ``event: error``, a Gemini error chunk), then the body ends
#   malformed    an event whose data is ``{not json``, then the body ends
Ending = Literal["complete", "stall", "cut", "reset", "error_event", "malformed"]


@attrs.frozen
class Plan:
    """What one simulated request does; the defaults describe a quick normal stream."""

    scenario: str = "ok"
    tokens: int = 20  # completion tokens to produce
    interval: float = 0.01  # seconds between tokens
    first_token_delay: float = 0.0  # seconds from the request to the first token
    tag: str | None = None  # free text a test uses to find its record
    retry_after: int | None = None  # seconds, sent as Retry-After with error statuses
    # A request with prompt-cache markers reads its prefix from the cache (else writes it).
    cache_hit: bool = False


@attrs.frozen
class Scenario:
    """One row of the scenario table: the fields say what happens, servers just obey them."""

    name: str
    description: str
    status: int | None = None  # answer with this HTTP error status instead of a completion
    answers: bool = True  # False: accept the request and never send a byte
    stop_after: float | None = None  # fraction of the tokens sent before ``ending``
    ending: Ending = "complete"
    usage: bool = True  # False: never report usage, even when the request asks for it
    byte_split: bool = False  # write the response one byte per socket send
    first_token_delay: float | None = None  # seconds, when the plan does not set a delay
    retry_after: int | None = None  # seconds, when the plan does not set one
    # A call to the request's first declared tool, with these argument fragments (their
    # concatenation is the arguments' JSON), in place of the text: while the request
    # declares a tool and its conversation holds no tool result yet. Otherwise the text.
    tool_arguments: tuple[str, ...] | None = None


def _table(*rows: Scenario) -> Mapping[str, Scenario]:
    return MappingProxyType({row.name: row for row in rows})


SCENARIOS: Final[Mapping[str, Scenario]] = _table(
    Scenario("ok", "a normal completion"),
    Scenario(
        "slow_first_token",
        "headers at once, then silence for the first-token delay (30 s unless set)",
        first_token_delay=30.0,
    ),
    Scenario("no_headers", "accepts the request and never answers", answers=False),
    Scenario("stall", "half the tokens, then silence until the client leaves",
             stop_after=0.5, ending="stall"),
    Scenario("cut", "half the tokens, then TCP FIN mid-body: no usage, no end of stream",
             stop_after=0.5, ending="cut"),
    Scenario("reset", "half the tokens, then TCP RST (SO_LINGER 0) mid-body",
             stop_after=0.5, ending="reset"),
    Scenario("midstream_error", "half the tokens, then a mid-stream error event and the end",
             stop_after=0.5, ending="error_event"),
    Scenario("malformed", "half the tokens, then a data: {not json event and the end",
             stop_after=0.5, ending="malformed"),
    Scenario("no_usage", "a normal completion that never reports usage, even when asked",
             usage=False),
    Scenario("status_429", "429 rate-limit error with Retry-After (20 s unless set)",
             status=429, retry_after=20),
    Scenario("status_500", "500 server error", status=500),
    Scenario("status_502", "502 bad gateway", status=502),
    Scenario("status_503", "503 overloaded", status=503),
    Scenario("status_401", "401 invalid API key", status=401),
    Scenario("status_529", "529 overloaded (Anthropic's overloaded_error; the same status in "
             "the other dialects' error shapes)", status=529),
    Scenario("invalid_json", "200 whose body is not JSON; when streaming, a malformed first event",
             stop_after=0.0, ending="malformed"),
    Scenario("byte_split", "a normal completion written one byte per socket send",
             byte_split=True),
    Scenario("tool_call", 'a call to the first declared tool with {"city": "Paris"} (streamed in '
             "two argument fragments), or the text once a tool result is in the conversation",
             tool_arguments=('{"city": ', '"Paris"}')),
)


def is_directive(line: str) -> bool:
    """Whether ``line`` is a ``#sim`` directive line (its first word is exactly ``#sim``)."""
    words = line.split(None, 1)
    return bool(words) and words[0] == DIRECTIVE


def _number(key: str, text: str, convert: Callable[[str], float], high: float) -> float:
    try:
        value = convert(text)
    except ValueError:
        expected = "a whole number" if convert is int else "a number"
        raise ValueError(f"#sim {key}={text!r}: expected {expected}") from None
    if not (math.isfinite(value) and 0 <= value <= high):
        raise ValueError(f"#sim {key}={text!r}: must be between 0 and {high:g}")
    return value


def _scenario(text: str) -> str:
    if text not in SCENARIOS:
        raise ValueError(f"#sim scenario={text!r}: unknown scenario; known: {', '.join(SCENARIOS)}")
    return text


def _tag(text: str) -> str:
    if len(text) > MAX_TAG_LENGTH:
        raise ValueError(f"#sim tag: longer than {MAX_TAG_LENGTH} characters")
    return text


def _tokens(text: str) -> int:
    return int(_number("tokens", text, int, MAX_TOKENS))


def _milliseconds(key: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return _number(key, text, float, MAX_DELAY * 1000) / 1000  # the plan holds seconds

    return parse


def _retry_after(text: str) -> int:
    return int(_number("retry_after", text, int, MAX_DELAY))


# directive key -> (Plan field, parser of the value text)
def _cache(text: str) -> bool:
    if text not in ("hit", "miss"):
        raise ValueError(f"#sim directive: cache must be hit or miss, got {text!r}")
    return text == "hit"


_KEYS: Final[Mapping[str, tuple[str, Callable[[str], Any]]]] = MappingProxyType({
    "scenario": ("scenario", _scenario),
    "tokens": ("tokens", _tokens),
    "interval_ms": ("interval", _milliseconds("interval_ms")),
    "first_token_ms": ("first_token_delay", _milliseconds("first_token_ms")),
    "tag": ("tag", _tag),
    "retry_after": ("retry_after", _retry_after),
    "cache": ("cache_hit", _cache),
})


def parse_plan(prompt_text: str, defaults: Plan) -> Plan:
    """``defaults`` overridden by the ``#sim`` lines of ``prompt_text`` (the last user message).

    Raises ``ValueError`` on any bad directive, and on ``defaults`` naming an unknown
    scenario. Scenario defaults fill in as in ``plan_from``.
    """
    settings: list[tuple[str, str]] = []
    for line in prompt_text.splitlines():
        if not is_directive(line):
            continue
        for item in line.split()[1:]:
            key, sep, text = item.partition("=")
            if not sep or not text:
                raise ValueError(f"#sim directive: expected key=value, got {item!r}")
            settings.append((key, text))
    return plan_from(settings, defaults)


def plan_from(settings: Iterable[tuple[str, str]], defaults: Plan) -> Plan:
    """``defaults`` overridden by ``(key, value text)`` settings: the directive's keys and
    checks, for callers that hold settings apart (command-line options, config files).

    The chosen scenario's own defaults (the 30 s of ``slow_first_token``, the Retry-After of
    ``status_429``) fill in a value that neither the settings nor ``defaults`` set, "not set"
    meaning left at the ``Plan`` class default.
    """
    changes: dict[str, Any] = {}
    for key, text in settings:
        if key not in _KEYS:
            raise ValueError(f"#sim directive: unknown key {key!r}; known: {', '.join(_KEYS)}")
        field, parse = _KEYS[key]
        changes[field] = parse(text)
    plan = attrs.evolve(defaults, **changes)
    scenario = SCENARIOS[_scenario(plan.scenario)]  # defaults may name an unknown one too
    neutral = Plan()
    if (scenario.first_token_delay is not None and "first_token_delay" not in changes
            and plan.first_token_delay == neutral.first_token_delay):
        plan = attrs.evolve(plan, first_token_delay=scenario.first_token_delay)
    if (scenario.retry_after is not None and "retry_after" not in changes
            and plan.retry_after == neutral.retry_after):
        plan = attrs.evolve(plan, retry_after=scenario.retry_after)
    return plan


_LOREM_TEXT: Final = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation "
    "ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in "
    "reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur."
)
_LOREM: Final = tuple(_LOREM_TEXT.split())


def token_texts(kind: str, prompt: str, n: int) -> list[str]:
    """The first ``n`` token strings of a simulated completion, each one word with its leading
    space. ``echo`` cycles through the words of ``prompt`` (directive lines left out, lorem
    words when nothing is left); ``lorem`` cycles through lorem ipsum."""
    if not 0 <= n <= MAX_TOKENS:
        raise ValueError(f"token count {n} out of range 0..{MAX_TOKENS}")
    if kind == "echo":
        words = [w for line in prompt.splitlines() if not is_directive(line) for w in line.split()]
    elif kind == "lorem":
        words = []
    else:
        raise ValueError(f"unknown token kind {kind!r}; known: {', '.join(KINDS)}")
    texts = [" " + word for word in (words or _LOREM)]
    whole, part = divmod(n, len(texts))
    return texts * whole + texts[:part]


def prompt_tokens(text: str) -> int:
    """A deterministic prompt-token estimate for usage reports: one token per 4 characters."""
    return max(1, math.ceil(len(text) / 4))
