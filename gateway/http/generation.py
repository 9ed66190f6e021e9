"""The generation routes, in every client dialect: everything before and after the relay.

In order: media type, key, bounded body, strict JSON, dialect validation, model
resolution, admission — any failure is an HTTP error before an upstream is touched — then
the relay (``relay/nursery.py``) owns the request and runs its attempts, and finally one
row is written, shielded and bounded, whatever happened to the client, the upstream or the
task. Handlers see the gateway process only as ``http.service.Service``.
"""

from __future__ import annotations

import logging
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from functools import partial
from typing import Any, Protocol

import attrs
import trio

from gateway.accounts.admission import Admission, relayed_cap
from gateway.canonical import ChatRequest
from gateway.errors import GatewayError, NotFound, ShuttingDown
from gateway.http.credentials import presented_key
from gateway.http.dialects import Answer, ClientDialect, PathParams
from gateway.http.messages import (
    ClientGone,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    has_body,
    read_body,
    send_error,
    send_json,
)
from gateway.http.service import Service
from gateway.relay.exchange import Exchange
from gateway.relay.nursery import Upstream, relay_stream, relay_unary
from gateway.routing.fidelity import fit_route
from gateway.store.rows import ApiKey
from gateway.wire import jsonbody

log = logging.getLogger("arouter.generation")


def new_generation_id() -> str:
    return f"gen-{secrets.token_hex(12)}"


async def read_request(gateway: Service, scope: Scope, receive: Receive,
                       key_header: bytes | None, query_key: str | None) -> tuple[ApiKey, Any]:
    """What every model route does first: the JSON media type, the key, the bounded body,
    strict JSON. (``Generation.handle`` does the same steps inline, keeping the key for
    its refusal notes.)"""
    check_json_content_type(scope)
    key = await gateway.authenticate(*presented_key(scope["headers"], key_header, query_key))
    body = await read_body(scope, receive, gateway.config.max_body_bytes,
                           gateway.config.deadlines.body)
    return key, jsonbody.parse(body)


class Generation:
    """A generation route in one client dialect; ``handle`` serves one request.

    A route with more to do than its dialect's parse and render overrides ``parse`` (it
    may read the store, as the key is known by then) and ``keep`` (called with the answer
    before its last bytes go out: ``keeps`` says whether to).
    """

    keeps = False

    def __init__(self, gateway: Service, dialect: ClientDialect, route: str) -> None:
        self.gateway = gateway
        self.dialect = dialect
        self.route = route  # the metrics label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send, PathParams())

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     call: PathParams) -> None:
        gateway, dialect = self.gateway, self.dialect
        generation_id = new_generation_id()
        key = None
        unread = has_body(scope)  # until the body is read, an answer must close
        try:
            check_json_content_type(scope)
            key = await gateway.authenticate(
                *presented_key(scope["headers"], dialect.key_header, call.key))
            body = await read_body(scope, receive, gateway.config.max_body_bytes,
                                   gateway.config.deadlines.body)
            unread = False
            call = attrs.evolve(call, headers=scope["headers"])
            request = await self.parse(jsonbody.parse(body), call, key)
            # Only deployments that can honour the whole request (or may drop what they
            # cannot): a 400 naming the field when none can.
            route = fit_route(request, gateway.catalog.resolve(request.model, request.routing))
            if gateway.draining:
                raise ShuttingDown("the gateway is shutting down; retry on another instance")
            # Built before admission: nothing that could fail may stand between holding
            # credits and the try/finally that settles them.
            exchange = Exchange(
                generation_id=generation_id,
                request=request,
                target=route.targets[0],
                deadlines=gateway.config.deadlines,
                output_cap=relayed_cap(request, route),
                encoder=dialect.encoder(generation_id, request, call)
                if request.stream
                else None,
            )
            # From here on the request holds credits and a rate-limit slot until it settles.
            admission = await gateway.accounts.admit(key, request, route, generation_id,
                                                     time.time())
        except ClientGone:
            gateway.metrics.cancellations.labels("upload").inc()
            return
        except GatewayError as exc:
            gateway.metrics.rejections.labels(self.route, str(exc.status)).inc()
            gateway.refusals.note(generation_id, exc, None if key is None else key.id)
            # Refusals are the client's business (info) unless the gateway itself could not
            # serve (a 5xx: the store, the drain): an operator wants those (warning).
            log.log(logging.WARNING if exc.status >= 500 else logging.INFO, "request refused",
                    extra={"generation_id": generation_id, "route": self.route,
                           "status": exc.status, "error_type": exc.type,
                           "key_id": None if key is None else key.id,
                           "client": _client(scope), "reason": exc.message})
            await send_error(send, exc, dialect.error_body, generation_id, close=unread)
            return

        exchange.recorded = partial(gateway.accounts.recorded, admission)
        if request.stream:
            exchange.save = partial(self.checkpoint, exchange, admission)
            exchange.checkpoint_every = gateway.config.accounts.checkpoint
            if self.keeps:
                exchange.closing = partial(self.keep, key, exchange, None)
        # Admission's route: for a key with a balance, only its priced deployments.
        route = admission.route
        exchange.target = route.targets[0]
        upstream = Upstream(gateway.attempts, route, scope["headers"])
        reply_error = partial(send_error, send, render=dialect.error_body,
                              generation_id=generation_id)
        http_status = 499  # nginx's "client closed request", until something is sent
        try:
            gateway.track(exchange)
            if gateway.draining:
                # The drain began while this request was being admitted: it holds a
                # reservation, so it settles like any other, but ends before it starts.
                exchange.stop(ShuttingDown("the gateway is shutting down; retry on another "
                                           "instance"))
            if request.stream:
                gateway.metrics.open_streams.inc()
                try:
                    await relay_stream(exchange, upstream, receive, send, reply_error)
                finally:
                    gateway.metrics.open_streams.dec()
                if exchange.committed_at is not None:
                    http_status = 200
                elif exchange.failure is not None and not exchange.aborted:
                    http_status = exchange.failure.status
            else:
                await relay_unary(exchange, upstream, receive)
                # The model that answered: the one asked for, or a fallback of ``models``.
                answered = exchange.target.public or request.model
                if not exchange.aborted:
                    if exchange.failure is not None:
                        http_status = exchange.failure.status
                        await reply_error(exchange.failure)
                    elif exchange.whole is not None:
                        # An upstream of the client's own dialect: its answer as it came.
                        http_status = 200
                        body = dialect.relay_whole(exchange.whole, generation_id, answered,
                                                   exchange.usage)
                        exchange.whole = None  # not held while the client reads, nor after
                        if self.keeps:
                            await self.keep(key, exchange, body)
                        await send_json(send, 200, body,
                                        [(b"x-generation-id", generation_id.encode())])
                    else:
                        http_status = 200
                        t = exchange.transcript
                        answer = Answer(
                            text="".join(t.text),
                            reasoning="".join(t.reasoning),
                            tool_calls=t.tool_calls,
                            finish=t.finish or "stop",
                            usage=exchange.usage,
                            signature=t.signature,
                            redacted=tuple(t.redacted),
                            signed_by=t.signed_by,
                        )
                        rendered = dialect.render(
                            generation_id, attrs.evolve(request, model=answered), answer)
                        if self.keeps:
                            await self.keep(key, exchange, rendered)
                        await send_json(send, 200, rendered,
                                        [(b"x-generation-id", generation_id.encode())])
        finally:
            if exchange.committed_at is not None:
                http_status = 200  # even if the relay was cancelled after the status line
            try:
                with trio.move_on_after(gateway.config.deadlines.settle,
                                        shield=True) as settling:
                    await self.write_row(exchange, admission, http_status)
            finally:
                gateway.untrack(exchange)  # shutdown waits for this before closing the ledger
            if settling.cancelled_caught:
                log.error("record not written: settle deadline passed",
                          extra={"generation_id": generation_id})

    async def parse(self, body: Any, call: PathParams, key: ApiKey) -> ChatRequest:
        """The request in ``body`` (strict JSON), for ``key``."""
        return self.dialect.parse(body, call)

    async def keep(self, key: ApiKey, exchange: Exchange, answer: bytes | None) -> None:
        """Keep the answer (a whole one's body, or None: the stream's encoder has it) before
        its last bytes go out; bounded, and never fails the answer."""

    async def checkpoint(self, exchange: Exchange, admission: Admission) -> None:
        """The output so far into the request's reservation: what a crash would charge."""
        usage = exchange.transcript.so_far(exchange.request)
        try:
            await self.gateway.accounts.checkpoint(admission, usage, exchange.target)
        except GatewayError:
            # Only a crash would need it, and the next one follows: never end a stream for it.
            self.gateway.metrics.store_errors.labels("checkpoint").inc()
            log.debug("checkpoint not written", extra={"generation_id": admission.generation_id})

    async def write_row(
        self, exchange: Exchange, admission: Admission, http_status: int
    ) -> None:
        """The request's one ledger row, settled with its credits and its limiter slot."""
        usage = exchange.usage
        now = trio.current_time()
        # A request that never called a deployment (none available, the drain) names none.
        called = bool(exchange.attempts)
        record = admission.held.record(
            deployment=exchange.target.label if called else "",
            upstream_dialect=exchange.target.provider.dialect if called else "",
            status=exchange.outcome,
            http_status=http_status,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_estimated=usage.estimated,
            cost=0,  # priced by accounts.settle
            error_type=exchange.failure.type if exchange.failure is not None else None,
            ttft_ms=None
            if exchange.first_event_at is None
            else (exchange.first_event_at - exchange.started) * 1000,
            duration_ms=(now - exchange.started) * 1000,
            cancelled=exchange.aborted,
            created_at=time.time(),
            attempts=";".join([
                *(f"{label}=skipped: {why}" for label, why in admission.route.skipped),
                *(f"{a.target.label}={a.outcome}" for a in exchange.attempts)]),
            dropped=",".join(exchange.target.dropped) if called else "",
        )
        metrics = self.gateway.metrics
        started = trio.current_time()
        try:
            record = await self.gateway.accounts.settle(admission, record, exchange.target)
            metrics.settle.observe(trio.current_time() - started)
        except GatewayError:
            # The ledger keeps it (retried with every upkeep and at shutdown; on disk in
            # the outbox), or reconciliation settles its reservation.
            metrics.store_errors.labels("settle").inc()
            record = admission.charge(record, exchange.target)
            log.exception("could not settle", extra={"generation_id": record.generation_id})
        metrics.observe(record, self.route, exchange.propagation)
        if exchange.cancel_phase is not None:
            metrics.cancellations.labels(exchange.cancel_phase).inc()
        log.info(
            "generation settled",
            extra={
                "generation_id": record.generation_id,
                "key_id": record.key_id,
                "model": record.model,
                "deployment": record.deployment,
                "status": record.status,
                "http_status": record.http_status,
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "cost": record.cost,
                "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 2),
                "duration_ms": round(record.duration_ms, 2),
                "error_type": record.error_type,
            },
        )


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


GEMINI_PREFIXES = ("/v1beta/models/", "/v1/models/")  # google-genai calls /v1 by default
GEMINI_METHODS = {"generateContent": False, "streamGenerateContent": True}


class GeminiGeneration(Generation):
    """``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``.

    The model and the choice to stream come from the path, ``?alt=sse`` picks SSE over one
    streamed JSON array, and ``?key=`` may carry the key. The model name is only ever looked
    up in the catalog, never used to build an upstream URL.
    """

    def __init__(self, gateway: Service, dialect: ClientDialect, route: str,
                 others: Mapping[str, PathHandler] | None = None) -> None:
        super().__init__(gateway, dialect, route)
        # The model's other methods: ``:countTokens`` (``count_tokens.py``),
        # ``:embedContent`` and ``:batchEmbedContents`` (``embeddings.py``).
        self.others = others or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        rest = next((path[len(p):] for p in GEMINI_PREFIXES if path.startswith(p)), "")
        model, _, method = rest.rpartition(":")
        stream = GEMINI_METHODS.get(method)
        other = self.others.get(method)
        if model and other is not None:
            await other.handle(scope, receive, send, _gemini_call(scope, model, False))
            return
        if not model or stream is None:
            error = NotFound(f"no such method {method!r}" if model else "no model in the path")
            await send_error(send, error, self.dialect.error_body)
            return
        await self.handle(scope, receive, send, _gemini_call(scope, model, stream))


class PathHandler(Protocol):
    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     call: PathParams) -> None: ...


def _gemini_call(scope: Scope, model: str, stream: bool) -> PathParams:
    """What a Gemini path and query say: the model, streaming, SSE, the ``?key=``."""
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    keys = query.get("key", [])
    # Only ?alt=sse streams SSE; anything else (the old SDK sends "json") is one array.
    return PathParams(model=model, stream=stream, sse=query.get("alt") == ["sse"],
                      key=keys[0] if len(keys) == 1 else None)
