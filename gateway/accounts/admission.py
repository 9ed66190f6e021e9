"""Admission and settlement: what a request may spend, and what it did spend.

Order of admission, after the key is authenticated and the request parsed and resolved:

    allowlist   the key may use this model, else 403
    prices      a key with a balance only ever reaches priced deployments: unpriced ones
                are dropped from its route, and if none is left, 403 naming the model
    limits      rpm / tpm / concurrent through the limiter (local or Redis), else 429
    credits     reserve the most the request may cost (prompt estimate + output cap at the
                model's prices) in the store, atomically, else 402; a store that cannot
                answer is a fast 503 (credits fail closed)

Limits and credits together have one deadline (``timeouts.admission``, 1 s by default): a
store or limiter that does not answer in time is a 503 with ``Retry-After``, never a wait.

``admit`` either returns an ``Admission`` the caller now owns, or raises with nothing held:
a refusal, a deadline or a cancellation after the limiter admitted releases the slot,
shielded; a reservation whose waiter gave up is withdrawn or released by the ledger
(``ledger.py``), so no credits are ever held by nobody.

``settle`` (run by the caller shielded and deadline-bounded, on every exit path) releases
the limiter slot, charging the real token count to tpm, and settles the reservation into
the ledger row in one transaction (``store.base`` semantics: exactly once per generation).

Policy for the cases between:
- A key revoked or expired mid-stream: the open stream is allowed to finish; it was paid
  for at admission. New requests are refused at once on every process (the reservation
  checks the revoked flag in the store), whatever the key cache holds.
- A balance that runs dry mid-stream cannot happen: the whole output cap was reserved.
  If the provider's real prompt count exceeds the estimate so much that the cost overruns
  the reservation, the balance stops at zero and ``arouter_reservation_overruns`` counts it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from gateway.accounts.leases import Leases
from gateway.accounts.ledger import Ledger, LedgerItem, Ticket
from gateway.accounts.pricing import FREE, cost, format_usd, reservation
from gateway.canonical import ChatRequest, Usage
from gateway.config import Config
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InsufficientCredits,
    PermissionDenied,
    StoreUnavailable,
    UnpricedModel,
)
from gateway.limits.base import Limiter, Limits
from gateway.observe.metrics import Metrics
from gateway.routing.catalog import Route
from gateway.routing.targets import Target
from gateway.store.rows import (
    ApiKey,
    Checkpoint,
    Release,
    RequestRecord,
    Reservation,
    Settlement,
)
from gateway.tokens import estimate_prompt_tokens

log = logging.getLogger("arouter.accounts")


@attrs.frozen
class Admission:
    """What one admitted request holds until it settles."""

    key: ApiKey
    route: Route
    limits: Limits
    output_cap: int
    held: Reservation  # as written to the store (its row is built from it: ``record``)
    recording: Ticket[LedgerItem]  # the row's way to the store (``Accounts.recorded``)

    @property
    def generation_id(self) -> str:
        return self.held.generation_id

    @property
    def prompt_tokens(self) -> int:
        """The estimate charged to tpm at admission."""
        return self.held.prompt_tokens

    @property
    def reserved(self) -> int:
        """Micro-units asked for in the store (an unmetered key holds none of them)."""
        return self.held.amount

    def charge(self, record: RequestRecord, target: Target) -> RequestRecord:
        """``record`` with its cost at the prices of the deployment that served it."""
        usage = Usage(record.prompt_tokens, record.completion_tokens, record.cached_tokens,
                      record.reasoning_tokens, cache_write_tokens=record.cache_write_tokens)
        return attrs.evolve(record, cost=cost(usage, target.price or FREE))

    def checkpoint(self, usage: Usage, target: Target) -> Checkpoint:
        """What a crash now would charge: the output so far (with its prompt) at the prices
        of the deployment serving it."""
        return Checkpoint(self.generation_id, target.label, target.provider.dialect,
                          usage.completion_tokens, cost(usage, target.price or FREE))


class Accounts:
    def __init__(
        self, config: Config, ledger: Ledger, limiter: Limiter, metrics: Metrics, instance: str,
        leases: Leases | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.leases = leases if leases is not None else Leases(ledger, instance)
        self.limiter = limiter
        self.metrics = metrics
        self.instance = instance

    def slot_ttl(self) -> float:
        # A slot outlives any request this process could still be running.
        deadlines = self.config.deadlines
        return deadlines.total + deadlines.settle + 60.0

    async def admit(
        self, key: ApiKey, request: ChatRequest, route: Route, generation_id: str,
        created_at: float,
    ) -> Admission:
        for model in (request.model, *request.routing.fallbacks):
            if not key.allows(model):
                raise PermissionDenied(f"this key may not use the model {model!r}")
        metered = key.balance is not None
        if metered:
            route = _priced(route)
        prompt = estimate_prompt_tokens(request)
        output_cap = output_tokens(request, route)
        # Whichever deployment serves it, the reservation covers it: the dearest one's price.
        reserved = (max(reservation(prompt, output_cap, t.price or FREE) for t in route.targets)
                    if metered else 0)
        target = route.targets[0]
        limits = _limits(key)
        held = Reservation(
            generation_id=generation_id,
            key_id=key.id,
            amount=reserved,
            instance=self.instance,
            model=request.model,
            deployment=target.label,
            client_dialect=request.dialect,
            upstream_dialect=target.provider.dialect,
            stream=request.stream,
            prompt_tokens=prompt,
            created_at=created_at,
            leased=True,
        )
        limited = funded = False
        admission: Admission | None = None
        within = self.config.deadlines.admission
        try:
            with trio.move_on_after(within):
                if not limits.none:
                    await self.limiter.acquire(key.id, limits, generation_id, prompt,
                                               self.slot_ttl())
                    limited = True
                if metered:
                    if not await self.leases.hold(key.id, reserved):
                        raise await self._refusal(key, reserved, request.model, route)
                    funded = True
                # The row that records the request goes with the next batch, unwaited for;
                # the commit point waits for it (``recorded``). Only while the store is
                # suspect (its last batch failed) is it proven here, before any upstream
                # is called.
                admission = Admission(key, route, limits, output_cap, held,
                                      self.ledger.record(held))
                if not self.ledger.healthy:
                    error = await self.recorded(admission)
                    if error is not None:
                        raise error
                return admission
            raise StoreUnavailable(f"admission did not complete within {within:g} s (the "
                                   "store or the rate limiter is not answering); retry shortly")
        except BaseException:
            with trio.CancelScope(shield=True):
                if funded:  # refused after all: its credit goes back to the lease
                    self.leases.release(key.id, reserved, 0)
                if admission is not None:  # and its row, if written, is taken back
                    self._forget(generation_id)
                if limited:
                    await self._release_slot(key.id, limits, generation_id, -prompt)
            raise

    def _forget(self, generation_id: str) -> None:
        try:
            self.ledger.record(Release(generation_id))
        except GatewayError:
            pass  # the ledger is closed: the row was never written

    async def recorded(self, admission: Admission) -> GatewayError | None:
        """Wait (bounded) until the request's reservation row is written; the error if it
        was not. Called at the commit point: no client sees an answer the store does not
        know of, so a crash after it always leaves the request's row."""
        ticket = admission.recording
        if not ticket.done.is_set():
            within = self.config.deadlines.admission
            with trio.move_on_after(within):
                await ticket.done.wait()
            if not ticket.done.is_set():
                return StoreUnavailable(f"the store did not record the request within "
                                        f"{within:g} s; retry shortly")
        return ticket.error

    async def usage(self, key: ApiKey) -> dict[str, Any]:
        """What the key holds right now in the limiter (for ``GET /v1/key`` and admin)."""
        limits = _limits(key)
        held = await self.limiter.usage(key.id, limits)
        return {"concurrent": held.concurrent, "rpm_left": held.rpm_left,
                "tpm_left": held.tpm_left}

    async def _refusal(self, key: ApiKey, reserved: int, model: str,
                       route: Route) -> GatewayError:
        # The reservation refuses revoked keys and unpriced routes to metered keys too: tell
        # them apart from the store's row.
        row = await self.ledger.store.find_key(key.id)
        if row is None or row.revoked:
            return AuthenticationError()
        if row.balance is not None and any(t.price is None for t in route.targets):
            return UnpricedModel(model, [t.label for t in route.targets if t.price is None])
        return InsufficientCredits(
            f"insufficient credits: this request may cost up to {format_usd(reserved)}, "
            f"the balance is {format_usd(row.balance)}"
        )

    async def settle(
        self, admission: Admission, record: RequestRecord, target: Target
    ) -> RequestRecord:
        """Release the limiter and settle the ledger row (priced at ``target``, the
        deployment that served it); returns the row as charged."""
        record = admission.charge(record, target)
        if record.cost > admission.reserved and admission.key.balance is not None:
            self.metrics.overruns.inc()
            log.warning("cost overran the reservation",
                        extra={"generation_id": record.generation_id, "cost": record.cost,
                               "reserved": admission.reserved})
        metered = admission.key.balance is not None
        if metered:
            self.leases.release(admission.key.id, admission.reserved, record.cost)
        settlement = Settlement(record, lease=self.instance if metered else "")
        try:
            # Money first, and unwaited for: the batch that writes it (with the lease's
            # charge) follows; one that fails stays with the ledger for a retry.
            self.ledger.record(settlement)
        except GatewayError:
            await self.ledger.settle(settlement)  # closed: kept (the outbox), then raised
        finally:
            if not admission.limits.none:
                used = record.prompt_tokens + record.completion_tokens
                await self._release_slot(admission.key.id, admission.limits,
                                         admission.generation_id, used - admission.prompt_tokens)
        return record

    async def checkpoint(self, admission: Admission, usage: Usage, target: Target) -> None:
        """Write the output so far into the request's reservation (what a crash charges)."""
        await self.ledger.checkpoint(admission.checkpoint(usage, target))

    async def free_slots(self, orphans: Sequence[Reservation]) -> None:
        """Free the rate-limit slots of requests whose process died (reconciliation)."""
        try:
            await self.limiter.forget([(r.key_id, r.generation_id) for r in orphans])
            dead: dict[str, set[str]] = {}
            for r in orphans:
                dead.setdefault(r.instance, set()).add(r.key_id)
            await self.limiter.forget_instances(dead)
        except GatewayError:
            log.exception("could not free the slots of a dead process")

    @asynccontextmanager
    async def limited(self, key: ApiKey, model: str, generation_id: str) -> AsyncIterator[None]:
        """A request that costs nothing (a token count): the key's model allowlist and its
        rate limits hold for it as for any (one request, its concurrency slot for as long as
        it runs), but it reserves no credits and writes no ledger row."""
        if not key.allows(model):
            raise PermissionDenied(f"this key may not use the model {model!r}")
        limits = _limits(key)
        if limits.none:
            yield
            return
        within = self.config.deadlines.admission
        try:
            with trio.move_on_after(within) as waited:
                await self.limiter.acquire(key.id, limits, generation_id, 0,
                                           self.slot_ttl())
            if waited.cancelled_caught:
                raise StoreUnavailable(f"the rate limiter did not answer within {within:g} "
                                       "s; retry shortly")
            yield
        finally:  # whether or not the slot was taken: releasing a free one is a no-op
            with trio.CancelScope(shield=True):
                try:
                    await self.limiter.release(key.id, limits, generation_id, 0)
                except GatewayError:
                    log.exception("could not release a rate-limit slot",
                                  extra={"generation_id": generation_id})

    async def _release_slot(self, key_id: str, limits: Limits, generation_id: str,
                            extra_tokens: int) -> None:
        try:
            await self.limiter.release(key_id, limits, generation_id, extra_tokens)
        except GatewayError:
            # A slot the limiter cannot free expires on its own (slot_ttl).
            log.exception("could not release a rate-limit slot",
                          extra={"generation_id": generation_id})


def output_tokens(request: ChatRequest, route: Route) -> int:
    """The most output a request may produce: its ``max_tokens``, else its model's cap,
    for each answer it asked for."""
    return (request.max_tokens or route.max_output_tokens) * request.choices


def relayed_cap(request: ChatRequest, route: Route) -> int:
    """Characters of output after which an upstream that ignores ``max_tokens`` is stopped:
    half as much again as the reserved output (four characters to a token, as estimates)."""
    return output_tokens(request, route) * 6 + 256


def _priced(route: Route) -> Route:
    """The route without its unpriced deployments, for a key that pays from a balance."""
    priced = tuple(t for t in route.targets if t.price is not None)
    if not priced:
        raise UnpricedModel(route.model, [t.label for t in route.targets])
    return route if len(priced) == len(route.targets) else attrs.evolve(route, targets=priced)


def _limits(key: ApiKey) -> Limits:
    return Limits(rpm=key.rpm, tpm=key.tpm, concurrent=key.max_concurrent)
