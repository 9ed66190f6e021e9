"""Embeddings: OpenAI's ``POST /v1/embeddings`` and Gemini's ``:embedContent`` /
``:batchEmbedContents``, to OpenAI-dialect and Gemini upstreams (and ``sim/embed``).

Like a generation, and simpler: key, bounded body, validation, the model's deployments
that can embed what was asked (Anthropic has no embeddings; token arrays and each
dialect's own fields go only to an upstream of that dialect: refused by name otherwise),
admission (the input's estimate at the dearest deployment's price), then the deployments
in order until one answers, under the total deadline, while a watcher ends the call the
moment the client leaves. Exactly one ledger row, written shielded and bounded: the input
tokens the upstream counted (or the estimate, marked, where it counts none, as Gemini),
priced at the prompt rate; nothing for a request that got no vectors.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from gateway.accounts.admission import Admission
from gateway.canonical import ChatRequest, Embeddings, EmbedRequest, Message, TextPart
from gateway.errors import (
    GatewayError,
    InternalError,
    RequestError,
    ShuttingDown,
    UpstreamError,
)
from gateway.http.dialects import GEMINI, OPENAI, ClientDialect, PathParams
from gateway.http.generation import new_generation_id, read_request
from gateway.http.messages import (
    ClientGone,
    Receive,
    Scope,
    Send,
    has_body,
    send_error,
    send_json,
)
from gateway.http.service import Service
from gateway.relay.exchange import Exchange
from gateway.routing.catalog import Route
from gateway.routing.targets import Target
from gateway.tokens import estimate_tokens
from gateway.wire.gemini import embeddings as gemini_embeddings
from gateway.wire.openai import embeddings as openai_embeddings

log = logging.getLogger("arouter.embeddings")

# The upstream dialects that embed.
EMBEDDERS = ("openai", "gemini", "sim")


def _needs(request: EmbedRequest) -> tuple[str | None, list[str]]:
    """(the only upstream dialect that can take all of ``request``, what needs it)."""
    if request.dialect == "openai":
        own = openai_embeddings.extra(request)
        if any(not isinstance(i, str) for i in request.inputs):
            own.insert(0, "input")  # token arrays
        return "openai", own
    return "gemini", gemini_embeddings.extra(request)


def fit(request: EmbedRequest, route: Route) -> Route:
    """The deployments that can embed ``request``; a 400 naming why when none can."""
    dialect, own = _needs(request)
    kept = tuple(t for t in route.targets if t.provider.dialect in EMBEDDERS and (
        not own or t.provider.dialect == dialect))
    if not kept:
        why = (f"'{own[0]}' can only be honoured by a deployment of the client's own "
               "dialect" if own else "no deployment of this model has an embeddings API "
               "(Anthropic has none)")
        raise RequestError(f"{request.model}: {why}", param=own[0] if own else "model")
    return attrs.evolve(route, targets=kept)


@attrs.define
class _Call:
    result: Embeddings | None = None
    target: Target | None = None
    failure: GatewayError | None = None
    client_gone: bool = False
    attempts: list[str] = attrs.field(factory=list)


class EmbeddingsRoute:
    """One client dialect's embeddings route; ``render`` writes its answer."""

    def __init__(self, gateway: Service, dialect: ClientDialect,
                 parse: Callable[[Any, PathParams], EmbedRequest],
                 render: Callable[[EmbedRequest, Embeddings, int], bytes]) -> None:
        self.gateway = gateway
        self.dialect = dialect
        self.parse = parse
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send, PathParams())

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     call: PathParams) -> None:
        gateway, generation_id = self.gateway, new_generation_id()
        unread = has_body(scope)
        try:
            key, body = await read_request(gateway, scope, receive, self.dialect.key_header,
                                           call.key)
            unread = False
            request = self.parse(body, call)
            route = fit(request, gateway.catalog.resolve(request.model))
            if gateway.draining:
                raise ShuttingDown("the gateway is shutting down; retry on another instance")
            # Admission takes a generation's shape: the input as its prompt (token arrays
            # counted as given), no output. The exchange is what the drain stops.
            as_chat = ChatRequest(
                model=request.model, max_tokens=1, dialect=f"{request.dialect}-embeddings",
                messages=(Message("user", (TextPart(_text(request)),)),),
                prompt_tokens=sum(len(i) for i in request.inputs
                                  if not isinstance(i, str)) or None)
            exchange = Exchange(generation_id=generation_id, request=as_chat,
                                target=route.targets[0], deadlines=gateway.config.deadlines,
                                encoder=None)
            admission = await gateway.accounts.admit(key, as_chat, route, generation_id,
                                                     time.time())
        except ClientGone:
            return
        except GatewayError as exc:
            gateway.refusals.note(generation_id, exc, None)
            await send_error(send, exc, self.dialect.error_body, generation_id, close=unread)
            return
        started = trio.current_time()
        outcome = _Call()
        try:
            gateway.track(exchange)
            if gateway.draining:  # the drain began during admission: settle, never start
                exchange.stop(ShuttingDown("the gateway is shutting down; retry on another "
                                           "instance"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, receive, nursery.cancel_scope, outcome)
                with exchange.scope:  # the total deadline, and the drain's stop
                    await self._embed(request, admission.route, outcome)
                if exchange.scope.cancelled_caught and outcome.result is None:
                    outcome.failure = exchange.stopped or UpstreamError(
                        "the embeddings call exceeded its total deadline")
                if outcome.result is not None:  # the commit point: the store has its row
                    outcome.failure = await gateway.accounts.recorded(admission)
                    if outcome.failure is not None:
                        outcome.result = None  # withheld: nothing is charged
                nursery.cancel_scope.cancel("the call is over")
            if not outcome.client_gone:
                if outcome.result is not None:
                    tokens = _tokens(request, outcome.result)
                    await send_json(send, 200, self.render(request, outcome.result, tokens),
                                    [(b"x-generation-id", generation_id.encode())])
                else:
                    failure = outcome.failure or UpstreamError("no deployment answered")
                    await send_error(send, failure, self.dialect.error_body, generation_id)
        finally:
            try:
                with trio.move_on_after(gateway.config.deadlines.settle,
                                        shield=True) as settling:
                    await self._settle(admission, request, outcome, started)
            finally:
                gateway.untrack(exchange)  # shutdown waits for this before closing the ledger
            if settling.cancelled_caught:
                log.error("record not written: settle deadline passed",
                          extra={"generation_id": generation_id})

    async def _embed(self, request: EmbedRequest, route: Route, outcome: _Call) -> None:
        """The deployments in order until one answers, each within the first-token deadline
        (a hung one is left for the next); a request error ends it at once."""
        providers = self.gateway.attempts.providers
        within = self.gateway.config.deadlines.first_token
        for target in route.targets:
            if not self.gateway.circuits.available(target.label):
                continue
            outcome.target = target
            try:
                with trio.move_on_after(within) as waited:
                    outcome.result = await providers[target.provider.dialect].embed(  # type: ignore[attr-defined]
                        request, target)
                if waited.cancelled_caught:
                    outcome.attempts.append(f"{target.label}=timeout")
                    outcome.failure = UpstreamError(f"{target.label} did not answer within "
                                                    f"{within:g} s")
                    continue
                outcome.attempts.append(f"{target.label}=ok")
                return
            except RequestError as exc:
                outcome.attempts.append(f"{target.label}={exc.type}")
                outcome.failure = exc
                return
            except GatewayError as exc:
                outcome.attempts.append(f"{target.label}={exc.type}")
                outcome.failure = exc
            except Exception:
                # A bug becomes a 500 with its row, never a lost settlement.
                log.exception("embedding failed", extra={"deployment": target.label})
                outcome.attempts.append(f"{target.label}=internal_error")
                outcome.failure = InternalError()
                return

    async def _settle(self, admission: Admission, request: EmbedRequest, outcome: _Call,
                      started: float) -> None:
        served = outcome.result is not None and not outcome.client_gone
        tokens = _tokens(request, outcome.result) if served and outcome.result else 0
        target = outcome.target or admission.route.targets[0]
        status = ("ok" if served else "client_abort" if outcome.client_gone
                  else "upstream_error")
        record = admission.held.record(
            deployment=target.label if outcome.attempts else "",
            upstream_dialect=target.provider.dialect if outcome.attempts else "",
            status=status, http_status=200 if served else (
                499 if outcome.client_gone else (outcome.failure or UpstreamError("")).status),
            prompt_tokens=tokens, completion_tokens=0, cached_tokens=0,
            cache_write_tokens=0, reasoning_tokens=0,
            usage_estimated=served and outcome.result is not None
            and outcome.result.prompt_tokens is None,
            cost=0, error_type=None if served or outcome.failure is None
            else outcome.failure.type,
            ttft_ms=None, duration_ms=(trio.current_time() - started) * 1000,
            cancelled=outcome.client_gone, created_at=time.time(),
            attempts=";".join(outcome.attempts), dropped="")
        try:
            await self.gateway.accounts.settle(admission, record, target)
        except GatewayError:
            self.gateway.metrics.store_errors.labels("settle").inc()
            log.exception("could not settle", extra={"generation_id": record.generation_id})


def _text(request: EmbedRequest) -> str:
    return "\n".join(i for i in request.inputs if isinstance(i, str))


def _tokens(request: EmbedRequest, result: Embeddings) -> int:
    """The input tokens: the upstream's count, else the estimate (token arrays count
    themselves)."""
    if result.prompt_tokens is not None:
        return result.prompt_tokens
    return sum(len(i) if not isinstance(i, str) else estimate_tokens(i)
               for i in request.inputs)


async def _watch(receive: Receive, cancel: trio.CancelScope, outcome: _Call) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            outcome.client_gone = True
            cancel.cancel("client disconnected")
            return


# -- the routes --------------------------------------------------------------------------


def _openai_parse(body: Any, call: PathParams) -> EmbedRequest:
    return openai_embeddings.parse_request(body)


def _openai_render(request: EmbedRequest, result: Embeddings, tokens: int) -> bytes:
    encoding = request.raw.get("encoding_format") or "float"
    return openai_embeddings.render(result, request.model, encoding, tokens)


def _gemini_parse(batch: bool) -> Callable[[Any, PathParams], EmbedRequest]:
    def parse(body: Any, call: PathParams) -> EmbedRequest:
        assert call.model is not None  # from the path
        read = gemini_embeddings.parse_batch if batch else gemini_embeddings.parse_embed
        return read(body, call.model)
    return parse


def _gemini_render(batch: bool) -> Callable[[EmbedRequest, Embeddings, int], bytes]:
    def render(request: EmbedRequest, result: Embeddings, tokens: int) -> bytes:
        shaped = (gemini_embeddings.render_batch if batch
                  else gemini_embeddings.render_embed)(result)
        return json.dumps(shaped, separators=(",", ":")).encode()
    return render


def openai_route(gateway: Service) -> EmbeddingsRoute:
    """``POST /v1/embeddings``."""
    return EmbeddingsRoute(gateway, OPENAI, _openai_parse, _openai_render)


def gemini_routes(gateway: Service) -> dict[str, EmbeddingsRoute]:
    """The Gemini model methods ``:embedContent`` and ``:batchEmbedContents``."""
    return {method: EmbeddingsRoute(gateway, GEMINI, _gemini_parse(batch),
                                    _gemini_render(batch))
            for method, batch in (("embedContent", False), ("batchEmbedContents", True))}
