"""Admission and settlement: what a request may spend, and what it did spend.

Order of admission, after the key is authenticated and the request parsed and resolved:

    allowlist   the key may use this model, else 403
    limits      rpm / tpm / concurrent through the limiter (local or Redis), else 429
    credits     reserve the most the request may cost (prompt estimate + output cap at the
                model's prices) in the store, atomically, else 402; a store that cannot
                answer is a fast 503 (credits fail closed)

``admit`` either returns an ``Admission`` the caller now owns, or raises with nothing held:
a refusal or a cancellation after the limiter admitted releases the slot, shielded. The
reservation itself is awaited shielded, since a reservation written by a batch its waiter
abandoned would otherwise be held by nobody.

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
from typing import Any

import attrs
import trio

from gateway.canonical import ChatRequest, Usage
from gateway.catalog import Route
from gateway.config import Config
from gateway.errors import AuthenticationError, GatewayError, InsufficientCredits, PermissionDenied
from gateway.keys import ApiKey
from gateway.ledger import Ledger
from gateway.limits.base import Limiter, Limits
from gateway.metrics import Metrics
from gateway.pricing import cost, format_usd, reservation
from gateway.providers.base import Target
from gateway.records import RequestRecord
from gateway.store.base import Reservation, Settlement
from gateway.transcript import estimate_prompt_tokens

log = logging.getLogger("arouter.accounts")


@attrs.frozen
class Admission:
    """What one admitted request holds until it settles."""

    generation_id: str
    key: ApiKey
    route: Route
    limits: Limits
    prompt_tokens: int  # the estimate charged to tpm at admission
    output_cap: int
    reserved: int  # micro-units held in the store

    def charge(self, record: RequestRecord, target: Target) -> RequestRecord:
        """``record`` with its cost at the prices of the deployment that served it."""
        usage = Usage(record.prompt_tokens, record.completion_tokens, record.cached_tokens,
                      record.reasoning_tokens)
        return attrs.evolve(record, cost=cost(usage, target.price))


class Accounts:
    def __init__(
        self, config: Config, ledger: Ledger, limiter: Limiter, metrics: Metrics, instance: str
    ) -> None:
        self.config = config
        self.ledger = ledger
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
        prompt = estimate_prompt_tokens(request)
        output_cap = request.max_tokens or route.max_output_tokens
        # Whichever deployment serves it, the reservation covers it: the dearest one's price.
        # Sized even for a key cached as unmetered: the store's own balance column decides
        # whether it is held (and records 0 if not), so a balance set a moment ago counts.
        reserved = max(reservation(prompt, output_cap, t.price) for t in route.targets)
        target = route.targets[0]
        limits = _limits(key)
        admission = Admission(generation_id, key, route, limits, prompt, output_cap, reserved)
        if not limits.none:
            await self.limiter.acquire(key.id, limits, generation_id, prompt, self.slot_ttl())
        admitted = False
        try:
            with trio.CancelScope(shield=True):
                admitted = await self.ledger.reserve(Reservation(
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
                    prompt_cost=max(reservation(prompt, 0, t.price) for t in route.targets),
                    created_at=created_at,
                ))
            if not admitted:
                raise await self._refusal(key, reserved)
            return admission
        except BaseException:
            if not admitted and not limits.none:
                with trio.CancelScope(shield=True):
                    await self._release(admission, -prompt)
            raise

    async def usage(self, key: ApiKey) -> dict[str, Any]:
        """What the key holds right now in the limiter (for ``GET /v1/key`` and admin)."""
        limits = _limits(key)
        held = await self.limiter.usage(key.id, limits)
        return {"concurrent": held.concurrent, "rpm_left": held.rpm_left,
                "tpm_left": held.tpm_left}

    async def _refusal(self, key: ApiKey, reserved: int) -> GatewayError:
        # The reservation refuses revoked keys too: tell the two apart from the store's row.
        row = await self.ledger.store.find_key(key.id)
        if row is None or row.revoked:
            return AuthenticationError()
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
        try:
            # Money first: a slow limiter must not hold the ledger row back. A batch that
            # fails stays with the ledger for a retry (Ledger.unsettled).
            await self.ledger.settle(Settlement(record))
        finally:
            if not admission.limits.none:
                used = record.prompt_tokens + record.completion_tokens
                await self._release(admission, used - admission.prompt_tokens)
        return record

    async def _release(self, admission: Admission, extra_tokens: int) -> None:
        try:
            await self.limiter.release(admission.key.id, admission.limits,
                                       admission.generation_id, extra_tokens)
        except GatewayError:
            # A slot the limiter cannot free expires on its own (slot_ttl).
            log.exception("could not release a rate-limit slot",
                          extra={"generation_id": admission.generation_id})


def _limits(key: ApiKey) -> Limits:
    return Limits(rpm=key.rpm, tpm=key.tpm, concurrent=key.max_concurrent)
