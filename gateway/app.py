"""The composition root: builds one gateway from a ``Config`` and hands hypercorn its app.

``Gateway`` owns the long-lived parts (store, upstream clients, providers, catalog); they
are opened by the ASGI lifespan startup and closed at shutdown, so every hypercorn worker
process has its own. ``create_app`` wires the raw generation routes in front of the
quart-trio app that serves everything else.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.accounts.admission import Accounts
from gateway.accounts.keys import ApiKey, parse_bearer, parse_key, verify
from gateway.accounts.ledger import Ledger
from gateway.accounts.liveness import Liveness, beat, new_instance, reconcile
from gateway.accounts.outbox import Outbox
from gateway.accounts.price_table import STALE_AFTER_DAYS
from gateway.config import Config
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    NotFound,
    RequestError,
    ShuttingDown,
)
from gateway.http import admin
from gateway.http.dialects import ANTHROPIC, GEMINI, OPENAI
from gateway.http.generation import GEMINI_PREFIXES, GeminiGeneration, Generation
from gateway.http.messages import (
    Dispatcher,
    ErrorRenderer,
    Handler,
    Receive,
    Scope,
    Send,
    dumps,
    error_headers,
)
from gateway.http.refusals import Refusals
from gateway.limits.base import Limiter
from gateway.limits.local import LocalLimiter
from gateway.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.observe.metrics import Metrics
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.gemini import GeminiProvider
from gateway.providers.http import ClientPool
from gateway.providers.openai import OpenAIProvider
from gateway.providers.simulator import SimulatorProvider
from gateway.relay.attempts import Attempt, Router
from gateway.relay.nursery import Exchange
from gateway.routing.catalog import Catalog
from gateway.routing.circuits import STATE_VALUES, Health
from gateway.store.base import Store, StoreUnavailable
from gateway.store.sqlite import SqliteStore
from gateway.wire.gemini import render as gemini_render
from gateway.wire.openai import render as openai_render

log = logging.getLogger("arouter.app")

# Key rows (policy, not balance) are cached this long. Revocation still takes effect at
# once: admission's reservation checks the revoked flag in the store itself.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 10_000


def open_store(config: Config) -> Store:
    """PostgreSQL when a URL is configured, else the embedded SQLite file."""
    if config.database_url:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(config.database_url, timeout=config.deadlines.store)
    return SqliteStore(config.database_path, timeout=config.deadlines.store)


def open_limiter(config: Config, metrics: Metrics) -> Limiter:
    """Redis-backed limits shared by the fleet when configured (degrading to local ones
    while Redis is down), else in-process limits."""
    if not config.accounts.redis_url:
        return LocalLimiter()
    from gateway.limits.fallback import FallbackLimiter
    from gateway.limits.redis import RedisLimiter

    return FallbackLimiter(
        RedisLimiter(config.accounts.redis_url),
        LocalLimiter(),
        on_degraded=lambda degraded: metrics.limiter_degraded.set(int(degraded)),
    )


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog = Catalog(config)
        self.metrics = Metrics()
        self.store = open_store(config)
        self.limiter = open_limiter(config, self.metrics)
        self.instance = new_instance()
        self.liveness = Liveness(self.instance, config.accounts.stale_after)
        self.ledger = Ledger(self.store, Outbox(config.data_dir / "outbox", self.instance.id))
        self.accounts = Accounts(config, self.ledger, self.limiter, self.metrics,
                                 self.instance.id)
        self.clients: ClientPool | None = None
        self.providers: dict[str, Provider] = {}
        routing = config.routing
        self.health = Health(routing.failure_threshold, routing.cooldown, trio.current_time,
                             on_change=self._circuit_changed)
        self.router = Router(routing, self.health, self.providers,
                             on_attempt=self._attempted)
        self.open_exchanges: set[Exchange] = set()  # requests between admission and settle
        self.draining = False
        self.drained = trio.Event()  # set once draining and no request is open
        self._drain_deadline = trio.CancelScope()
        self._none_open_waiters: list[trio.Event] = []
        self.ready = False
        self.nursery: trio.Nursery | None = None  # the lifespan's: long-lived tasks only
        self._heartbeat = trio.CancelScope()
        self._kept_alive = trio.Event()  # set when the heartbeat task has stopped
        self._keeping_alive = False
        self._keys: dict[str, tuple[ApiKey, float]] = {}
        self.refusals = Refusals()  # ids answered before admission, for /v1/generation

    async def lifespan(self, app: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the ASGI lifespan inside a nursery that outlives every request."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await app(scope, receive, send)

    async def start(self) -> None:
        await self.store.open()
        assert self.nursery is not None, "start() runs inside lifespan()"
        # Row and claim before the first reservation (see instances.py), then settle
        # whatever dead processes left open.
        await beat(self.store, self.liveness)
        # Real usage first: rows a dead process could not settle wait in its outbox file;
        # only what is still open after that is settled as interrupted.
        known = {i.id: i for i in await self.store.instances()}
        dead = self.liveness.dead(set(known), known, await self.store.claimed(list(known)),
                                  time.time())
        replayed = await self.ledger.replay_outboxes(set(known) - dead)
        if replayed:
            log.warning("settled rows left in outbox files", extra={"count": replayed})
        await self._reconcile()
        await self.nursery.start(self.ledger.run)
        self.nursery.start_soon(self._keep_alive)
        self._keeping_alive = True
        self._warn_unpriced()
        self.clients = ClientPool(self.config.deadlines,
                                  max_answer_bytes=self.config.max_answer_bytes)
        # Filled in place: the router holds this very mapping.
        self.providers.update({
            "openai": OpenAIProvider(self.clients),
            "anthropic": AnthropicProvider(self.clients),
            "gemini": GeminiProvider(self.clients),
            "sim": SimulatorProvider(self.config.sim),
        })
        self.ready = True

    async def _keep_alive(self) -> None:
        """Two loops: the heartbeat alone (a slow reconciliation must not make this process
        look dead), and the upkeep: settle dead processes' requests, retry our own failed
        settlements."""
        accounts = self.config.accounts

        async def heartbeat() -> None:
            while True:
                await trio.sleep(accounts.heartbeat)
                try:
                    await beat(self.store, self.liveness)
                except GatewayError:
                    self.liveness.renewed(False)  # not confirmed: judge nobody meanwhile
                    self.metrics.store_errors.labels("heartbeat").inc()
                    log.exception("heartbeat failed")

        async def upkeep() -> None:
            while True:
                await trio.sleep(accounts.heartbeat)
                try:
                    await self._reconcile()
                except GatewayError:
                    self.metrics.store_errors.labels("upkeep").inc()
                    log.exception("reconciliation failed")
                try:  # separately: a failing reconciliation must not hold back retries
                    await self.ledger.retry_unsettled()
                except GatewayError:
                    self.metrics.store_errors.labels("upkeep").inc()
                    log.exception("retrying refused settlements failed")

        try:
            with self._heartbeat:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(heartbeat)
                    nursery.start_soon(upkeep)
        finally:
            self._kept_alive.set()

    def _warn_unpriced(self) -> None:
        table = self.catalog.table
        age = table.age_days(datetime.date.today())
        log.info("price table", extra={"date": table.date.isoformat(), "models": table.count(),
                                       "age_days": age})
        if age > STALE_AFTER_DAYS:
            log.warning("the built-in price table is %d days old: check the providers' "
                        "prices and override them in the config", age,
                        extra={"date": table.date.isoformat()})
        for model in self.catalog.unpriced():
            log.warning("model without a price: keys with a balance are refused it (set a "
                        "price, or free = true)", extra={"model": model})

    async def _reconcile(self) -> None:
        settled = await reconcile(self.store, self.liveness, self.accounts.free_slots)
        self.metrics.reconciled.inc(settled)

    async def aclose(self) -> None:
        self.ready = False
        # Requests still settling finish first (each is bounded by its own settle deadline).
        with trio.move_on_after(self.config.deadlines.settle + 1.0):
            await self._none_open_wait()
        if self.clients is not None:
            await self.clients.aclose()
        self._heartbeat.cancel()
        if self._keeping_alive:  # start() got as far as starting it
            await self._kept_alive.wait()  # no store call of its may run after this
        await self.ledger.aclose()
        try:
            await self.ledger.retry_unsettled()
            # Everything this process admitted has settled: it leaves nothing to reconcile.
            if not await self.store.reservations(self.instance.id):
                await self.store.forget_instance(self.instance.id)
        except GatewayError:
            log.exception("could not retire this instance")
        await self.limiter.aclose()
        await self.store.aclose()

    # -- routing --------------------------------------------------------------------------

    def _circuit_changed(self, label: str, state: str) -> None:
        self.metrics.circuit.labels(self.metrics.bounded(label)).set(STATE_VALUES[state])
        log.warning("deployment circuit %s", state, extra={"deployment": label,
                                                           "state": state})

    def _attempted(self, attempt: Attempt) -> None:
        self.metrics.attempts.labels(self.metrics.bounded(attempt.target.label),
                                     attempt.outcome).inc()

    # -- drain ------------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """SIGTERM/SIGINT: refuse new requests, let open ones run until the drain deadline,
        then end each with a terminal error event. Returns at once."""
        if self.draining:
            return
        self.draining = True
        self.ready = False
        log.warning("draining", extra={"open_requests": len(self.open_exchanges),
                                       "deadline_seconds": self.config.deadlines.drain})
        assert self.nursery is not None
        self.nursery.start_soon(self._drain)

    def drain_now(self) -> None:
        """A second signal: end every open request now (each still gets its terminal event
        and settles)."""
        self.begin_drain()
        self._drain_deadline.deadline = -math.inf

    def track(self, exchange: Exchange) -> None:
        self.open_exchanges.add(exchange)

    def untrack(self, exchange: Exchange) -> None:
        self.open_exchanges.discard(exchange)
        if not self.open_exchanges:
            waiters, self._none_open_waiters = self._none_open_waiters, []
            for waiter in waiters:
                waiter.set()

    async def _none_open_wait(self) -> None:
        while self.open_exchanges:
            waiter = trio.Event()  # one per waiter: several may wait at once
            self._none_open_waiters.append(waiter)
            await waiter.wait()

    async def _drain(self) -> None:
        with self._drain_deadline:
            self._drain_deadline.deadline = trio.current_time() + self.config.deadlines.drain
            await self._none_open_wait()
        for exchange in list(self.open_exchanges):
            exchange.stop(ShuttingDown("the gateway is shutting down"))
        await self._none_open_wait()
        self.drained.set()

    def forget_key(self, key_id: str) -> None:
        """Drop a cached key row (after an admin change on this process)."""
        self._keys.pop(key_id, None)

    async def authenticate(self, key_id: str, key: str) -> ApiKey:
        """The stored key for a presented one (constant-time), else AuthenticationError.

        A short-lived cache of key rows keeps the store off the hot path, but only for keys
        that verify: every *failure* reads the store, whether its id is known or not, so a
        wrong secret for a recently used id costs what an unknown id costs, and timing does
        not tell which ids are in use (FAULTS F13)."""
        cached = self._keys.get(key_id)
        if cached is not None and cached[1] > trio.current_time():
            try:
                return verify(key, cached[0])
            except AuthenticationError:
                pass  # as an unknown id would: to the store
        return verify(key, await self._find_key(key_id))

    async def _find_key(self, key_id: str) -> ApiKey | None:
        within = self.config.deadlines.admission  # the lookup is part of admission
        with trio.move_on_after(within):
            row = await self.store.find_key(key_id)
            if row is not None:  # unknown ids are not kept: they always cost a lookup
                if len(self._keys) >= KEY_CACHE_SIZE:
                    self._keys.clear()
                self._keys[key_id] = (row, trio.current_time() + KEY_CACHE_SECONDS)
            return row
        raise StoreUnavailable(f"the store did not answer the key lookup within {within:g} s; "
                               "retry shortly")


def create_app(config: Config) -> Dispatcher:
    """The ASGI application for ``config``; its ``gateway`` attribute is the ``Gateway``."""
    gateway = Gateway(config)
    gemini = GeminiGeneration(gateway, GEMINI, "generate_content")
    return Dispatcher(
        {
            ("POST", "/v1/chat/completions"): Generation(gateway, OPENAI, "chat_completions"),
            ("POST", "/v1/messages"): Generation(gateway, ANTHROPIC, "messages"),
        },
        _web_app(gateway),  # type: ignore[arg-type]  # ASGI typing differs, not the protocol
        gateway,
        lifespan=gateway.lifespan,
        prefixes={("POST", prefix): gemini for prefix in GEMINI_PREFIXES},
        shape=_error_shape,
    )


def _error_shape(path: str) -> ErrorRenderer:
    """The error body a path's clients read: Gemini's under its prefixes, Anthropic's on
    /v1/messages, OpenAI's (the spec's) everywhere else."""
    if path.startswith("/v1beta/") or (path.startswith(GEMINI_PREFIXES) and ":" in path):
        return GEMINI.error_body
    if path.startswith("/v1/messages"):
        return ANTHROPIC.error_body
    return OPENAI.error_body


async def _unrecorded(gateway: Gateway, generation_id: str, key_id: str) -> str:
    """Why ``generation_id`` has no ledger row this key may see."""
    refused = gateway.refusals.find(generation_id, key_id)
    if refused is not None:
        return (f"generation {generation_id} was refused before admission ({refused.status} "
                f"{refused.type}): refused requests are never recorded and cost nothing")
    open_ = await gateway.store.reservation(generation_id)
    if open_ is not None and open_.key_id == key_id:
        return (f"generation {generation_id} is still running: its row appears when it "
                "settles, a few milliseconds after its last byte")
    return (f"no recorded generation {generation_id} for this key: requests refused before "
            "admission (400, 401, 402, 403, 429, 503) are never recorded and cost nothing")


def _json(error: GatewayError) -> Any:
    return (
        openai_render.error_body(error),
        error.status,
        [(k.decode(), v.decode()) for k, v in error_headers(error)]
        + [("content-type", "application/json")],
    )


def _web_app(gateway: Gateway) -> QuartTrio:
    app = QuartTrio("arouter")
    app.config["MAX_CONTENT_LENGTH"] = gateway.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = gateway.config.deadlines.body  # 408, as the raw routes
    app.before_serving(gateway.start)
    app.after_serving(gateway.aclose)

    app.register_blueprint(admin.blueprint(gateway))

    async def authenticate() -> ApiKey:
        # Bearer (OpenAI style), or x-api-key (Anthropic style) when there is no bearer.
        raw = [v.encode("latin-1") for v in request.headers.getlist("authorization")]
        api_key = request.headers.getlist("x-api-key")
        if not raw and len(api_key) == 1:
            return await gateway.authenticate(*parse_key(api_key[0]))
        return await gateway.authenticate(*parse_bearer(raw))

    @app.get("/v1/key")
    async def key_info() -> Any:
        """The caller's own key: balance, limits and what it holds now."""
        key = await authenticate()
        fresh = await gateway.store.find_key(key.id) or key  # the balance is never cached
        view = admin.key_view(fresh)
        return dumps({"data": {**view, "usage": await gateway.accounts.usage(fresh)}}), 200, {
            "content-type": "application/json"
        }

    @app.get("/v1/generation")
    async def generation() -> Any:
        """One ledger row, to the key that owns it (anyone else: 404, not 403)."""
        key = await authenticate()
        ids = request.args.getlist("id")
        if len(ids) != 1:
            raise RequestError("expected one id query parameter", param="id")
        generation_id = ids[0]
        row = await gateway.store.record(generation_id)
        if row is not None and row.key_id == key.id:
            return dumps({"data": row.public()}), 200, {"content-type": "application/json"}
        raise NotFound(await _unrecorded(gateway, generation_id, key.id))

    @app.get("/v1/models")
    async def models() -> Any:
        await authenticate()
        created = int(time.time())
        return dumps({"object": "list", "data": gateway.catalog.listing(created)}), 200, {
            "content-type": "application/json",
            # Which prices this gateway bills by (``arouter doctor`` reports it).
            "x-arouter-price-table": gateway.catalog.table.date.isoformat(),
        }

    @app.get("/v1beta/models")
    async def gemini_models() -> Any:
        # Gemini clients present the key as x-goog-api-key or ?key=; errors in their shape.
        raw = request.headers.get("x-goog-api-key") or request.args.get("key")
        try:
            if raw is not None:
                await gateway.authenticate(*parse_key(raw))
            else:
                await authenticate()
        except GatewayError as error:
            return gemini_render.error_body(error), error.status, {
                "content-type": "application/json"
            }
        listed = [
            {
                "name": f"models/{entry['id']}",
                "displayName": entry["id"],
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            }
            for entry in gateway.catalog.listing(0)
        ]
        return dumps({"models": listed}), 200, {"content-type": "application/json"}

    @app.get("/metrics")
    async def metrics() -> Any:
        # Unauthenticated, like most exporters: keep it off the public vhost (deploy/nginx).
        return gateway.metrics.render(), 200, {"content-type": METRICS_CONTENT_TYPE}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        return ({"status": "ready"}, 200) if gateway.ready else ({"status": "not ready"}, 503)

    @app.errorhandler(GatewayError)
    async def gateway_error(error: GatewayError) -> Any:
        return _json(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        mapped = NotFound("not found") if status == 404 else GatewayError(error.name)
        mapped.status = status
        mapped.type = "invalid_request_error" if 400 <= status < 500 else "server_error"
        return _json(mapped)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Any:
        # The traceback goes to the log (Quart logs it); the client gets a generic body.
        app.logger.exception("unhandled error", exc_info=error)
        return _json(InternalError())

    return app
