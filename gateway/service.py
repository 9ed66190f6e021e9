"""The gateway process: its lifecycle, upkeep, drain and key cache.

``Gateway`` holds what every request of one process shares and runs what outlives them:
it opens the store and the upstream clients at the ASGI lifespan's start, reconciles what
dead processes left, keeps this process's liveness claim and retries refused settlements
in the background, drains on SIGTERM, and closes everything at the end. Each hypercorn
worker process has its own. It is built by the composition root (``app.py``) from parts
made there, and handed to the HTTP side only as the narrow ``http.service.Service``.

Rules:
- Long-lived tasks run in the lifespan's nursery, never a request's.
- ``aclose`` waits (bounded) for requests still settling, then retires this instance: no
  store call of the upkeep runs after it.
"""

from __future__ import annotations

import datetime
import logging
import math
import time

import attrs
import trio

from gateway.accounts.admission import Accounts
from gateway.accounts.keys import verify
from gateway.accounts.leases import Leases
from gateway.accounts.ledger import Ledger
from gateway.accounts.liveness import Liveness, beat, new_instance, reconcile
from gateway.accounts.outbox import Outbox
from gateway.accounts.price_table import STALE_AFTER_DAYS
from gateway.config import Config
from gateway.errors import AuthenticationError, GatewayError, ShuttingDown, StoreUnavailable
from gateway.http.messages import Handler, Receive, Scope, Send
from gateway.http.refusals import Refusals
from gateway.limits.base import Limiter
from gateway.observe.metrics import Metrics
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import Provider
from gateway.providers.gemini import GeminiProvider
from gateway.providers.http import ClientPool
from gateway.providers.openai import OpenAIProvider
from gateway.providers.simulator import SimulatorProvider
from gateway.relay.attempts import Attempts
from gateway.relay.exchange import Exchange
from gateway.routing.catalog import Catalog
from gateway.routing.circuits import Circuits
from gateway.store.base import Store
from gateway.store.rows import ApiKey, Batch, Instance, LeaseReturn

log = logging.getLogger("arouter.app")

# Key rows are cached while they are used, and re-read in the background every
# ``accounts.key_refresh`` seconds (one query for all of them): a revocation, a balance or a
# policy change made on another process reaches this one within that, and at once when made
# on this one. A row not refreshed for KEY_STALE_AFTER refreshes (the store is not
# answering) is not trusted: the request reads the store itself. Unused for KEY_IDLE
# seconds, a row is dropped.
KEY_STALE_AFTER = 10
KEY_IDLE = 60.0
KEY_CACHE_SIZE = 10_000


class Gateway:
    """One gateway process's long-lived state: what requests share, and its lifecycle."""

    def __init__(
        self, config: Config, *, catalog: Catalog, metrics: Metrics, store: Store,
        limiter: Limiter, circuits: Circuits, attempts: Attempts,
        providers: dict[str, Provider], instance: Instance | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.metrics = metrics
        self.store = store
        self.limiter = limiter
        self.circuits = circuits
        self.attempts = attempts
        self.providers = providers  # filled by start(): the attempts hold this very mapping
        self.instance = instance or new_instance()
        self.liveness = Liveness(self.instance, config.accounts.stale_after)
        self.ledger = Ledger(store, Outbox(config.data_dir / "outbox", self.instance.id))
        self.leases = Leases(self.ledger, self.instance.id,
                             slice_requests=config.accounts.lease_requests,
                             idle_after=config.accounts.lease_idle)
        self.accounts = Accounts(config, self.ledger, limiter, metrics, self.instance.id,
                                 self.leases)
        self.clients: ClientPool | None = None
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
        self._keys: dict[str, _CachedKey] = {}
        self._refreshes = 0  # background key refreshes done
        self.refusals = Refusals()  # ids answered before admission, for /v1/generation

    async def lifespan(self, app: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the ASGI lifespan inside a nursery that outlives every request."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await app(scope, receive, send)

    async def start(self) -> None:
        await self.store.open()
        assert self.nursery is not None, "start() runs inside lifespan()"
        # Row and claim before the first reservation (see accounts/liveness.py), then settle
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
        self.leases.spawn = self.nursery.start_soon  # background top-ups
        self.nursery.start_soon(self._keep_alive)
        self._keeping_alive = True
        self._warn_unpriced()
        self.clients = ClientPool(self.config.deadlines,
                                  max_answer_bytes=self.config.max_answer_bytes)
        # Filled in place: the attempts hold this very mapping.
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
                self.leases.sweep()
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
                    await self.store.purge_responses(time.time())
                except GatewayError:
                    self.metrics.store_errors.labels("upkeep").inc()
                    log.exception("purging expired stored responses failed")

        async def refresh_keys() -> None:
            while True:
                await trio.sleep(accounts.key_refresh)
                try:
                    await self._refresh_keys()
                except GatewayError:
                    self.metrics.store_errors.labels("key_refresh").inc()
                    log.warning("could not refresh the cached keys")

        try:
            with self._heartbeat:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(heartbeat)
                    nursery.start_soon(upkeep)
                    nursery.start_soon(refresh_keys)
                    nursery.start_soon(self.limiter.run)  # a shared limiter's syncing
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
        self._heartbeat.cancel("shutting down")
        if self._keeping_alive:  # start() got as far as starting it
            await self._kept_alive.wait()  # no store call of its may run after this
        await self.ledger.aclose()
        try:
            await self.ledger.retry_unsettled()
            # Every request has settled: what the leases hold goes back to the balances
            # (per the store: a take whose answer never arrived is returned too).
            self.leases.returns()
            await self.store.commit(Batch(returns=[
                LeaseReturn(lease.key_id, lease.instance)
                for lease in await self.store.leases(self.instance.id)]))
            # Everything this process admitted has settled: it leaves nothing to reconcile.
            if not await self.store.reservations(self.instance.id):
                await self.store.forget_instance(self.instance.id)
        except GatewayError:
            log.exception("could not retire this instance")
        await self.limiter.aclose()
        await self.store.aclose()

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
        """Drop a cached key row (after an admin change on this process), and give back
        what its lease holds free: the next request reads the key and leases anew."""
        self._keys.pop(key_id, None)
        self.leases.drop(key_id)

    async def authenticate(self, key_id: str, key: str) -> ApiKey:
        """The stored key for a presented one (constant-time), else AuthenticationError.

        Keys that verify are cached (and refreshed in the background: ``KEY_IDLE``), so a
        request of a known key makes no store call; every *failure* reads the store,
        whether its id is known or not, so a wrong secret for a recently used id costs what
        an unknown id costs, and timing does not tell which ids are in use (FAULTS F13)."""
        cached = self._keys.get(key_id)
        row = None
        if cached is not None and cached.fresh >= self._refreshes - KEY_STALE_AFTER:
            row = cached.row
            cached.used_at = trio.current_time()
        try:
            # Without a cached row this is the dummy comparison: every failure costs the
            # same two comparisons and one store read, cached id or not.
            return verify(key, row)
        except AuthenticationError:
            pass
        return verify(key, await self._find_key(key_id))

    async def _find_key(self, key_id: str) -> ApiKey | None:
        within = self.config.deadlines.admission  # the lookup is part of admission
        with trio.move_on_after(within):
            row = await self.store.find_key(key_id)
            if row is not None:  # unknown ids are not kept: they always cost a lookup
                if len(self._keys) >= KEY_CACHE_SIZE:
                    self._keys.clear()
                self._keys[key_id] = _CachedKey(row, trio.current_time(), self._refreshes)
            return row
        raise StoreUnavailable(f"the store did not answer the key lookup within {within:g} s; "
                               "retry shortly")

    async def _refresh_keys(self) -> None:
        """Re-read every cached key row in one query; drop the unused ones. A key that was
        revoked, deleted or lost its balance gives its lease back."""
        now = trio.current_time()
        for key_id in [k for k, c in self._keys.items() if now - c.used_at > KEY_IDLE]:
            del self._keys[key_id]
        if not self._keys:
            self._refreshes += 1
            return
        rows = {row.id: row for row in await self.store.find_keys(list(self._keys))}
        self._refreshes += 1
        for key_id, cached in list(self._keys.items()):
            row = rows.get(key_id)
            if row is None or row.revoked or row.balance is None:
                self.leases.drop(key_id)
            if row is None:
                self._keys.pop(key_id, None)
            else:
                cached.row, cached.fresh = row, self._refreshes


@attrs.define
class _CachedKey:
    row: ApiKey
    used_at: float
    fresh: int  # the refresh (count) that last read it
