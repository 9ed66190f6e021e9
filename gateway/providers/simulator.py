"""The built-in simulator provider: deterministic streams with no network at all.

``sim/echo`` streams the last user message back word by word; ``sim/lorem`` streams lorem
ipsum. The token count and rate come from ``[sim]`` in the config, ``max_tokens`` caps
them, and a ``#sim`` directive line in the prompt (``gateway.sim.scenarios``) can ask for
any scenario of the fake upstream's table (stall, cut, status_503, ...), so the embedded
default can demonstrate every failure the relay handles.

Rules: the same scenario table and token texts as the fake upstream server; every wait is a
Trio sleep, so cancellation and virtual clocks apply.
"""

from __future__ import annotations

import math

import attrs
import trio
import trio.lowlevel

from gateway.canonical import (
    ChatRequest,
    Embeddings,
    EmbedRequest,
    Finish,
    TextDelta,
    Usage,
    UsageReport,
)
from gateway.config import SimConfig
from gateway.errors import (
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from gateway.providers.base import Sink
from gateway.routing.targets import Target
from gateway.sim.scenarios import (
    SCENARIOS,
    Plan,
    is_directive,
    parse_plan,
    prompt_tokens,
    token_texts,
)
from gateway.sim.vectors import vector

_ENDINGS: dict[str, UpstreamError] = {
    "cut": UpstreamError("upstream connection closed unexpectedly"),
    "reset": UpstreamError("upstream connection closed unexpectedly"),
    "error_event": UpstreamError("upstream reported an error (server_error)"),
    "malformed": UpstreamProtocolError("upstream sent an event that is not JSON"),
}


class SimulatorProvider:
    """``run`` answers generations; ``embed`` answers ``sim/embed`` with deterministic unit
    vectors (``gateway.sim.vectors``)."""

    def __init__(self, config: SimConfig) -> None:
        self._defaults = Plan(tokens=config.tokens, interval=1.0 / config.tokens_per_second)

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        prompt = request.last_user_text
        defaults = self._defaults
        if target.model == "echo":
            words = [w for line in prompt.splitlines() if not is_directive(line)
                     for w in line.split()]
            defaults = attrs.evolve(defaults, tokens=max(1, len(words)))
        try:
            plan = parse_plan(prompt, defaults)
        except ValueError as exc:
            raise RequestError(str(exc), param="messages") from None
        scenario = SCENARIOS[plan.scenario]
        if scenario.status is not None:
            raise UpstreamStatusError(
                f"upstream answered HTTP {scenario.status}",
                upstream_status=scenario.status,
                retry_after=plan.retry_after,
            )
        if not scenario.answers:
            await trio.sleep_forever()
        count = plan.tokens if request.max_tokens is None else min(plan.tokens, request.max_tokens)
        texts = token_texts("echo" if target.model == "echo" else "lorem", prompt, count)
        stop = len(texts) if scenario.stop_after is None else math.ceil(
            len(texts) * scenario.stop_after
        )
        await trio.sleep(plan.first_token_delay)
        for i, text in enumerate(texts[:stop]):
            if i:
                await trio.sleep(plan.interval)
            sink.emit(TextDelta(text))
            await sink.writable()
        if scenario.ending == "stall":
            await trio.sleep_forever()
        if scenario.ending != "complete":
            raise _ENDINGS[scenario.ending]
        sink.emit(Finish("length" if count < plan.tokens else "stop"))
        if scenario.usage:
            usage = Usage(prompt_tokens=prompt_tokens(request.prompt_text),
                          completion_tokens=len(texts))
            sink.emit(UsageReport(usage))

    async def embed(self, request: EmbedRequest, target: Target) -> Embeddings:
        await trio.lowlevel.checkpoint()  # a checkpoint, as any call has
        if target.model != "embed":
            raise RequestError(f"sim/{target.model} does not embed: use sim/embed",
                               param="model")
        texts = [i if isinstance(i, str) else " ".join(map(str, i)) for i in request.inputs]
        return Embeddings(tuple(vector(target.model, t, request.dimensions) for t in texts),
                          sum(prompt_tokens(t) for t in texts))
