"""Every persisted type: keys, the ledger row, reservations and what the ledger writes,
live instances, and stored Responses API answers. Pure data (attrs), shared by the store
backends and everything above them.

The ledger's row (``RequestRecord``): exactly one per accepted generation request.

Written by the request's shielded, deadline-bounded settle step after its nursery has
closed, in the same transaction that closes its credit reservation; or, if the process died
first, by the next start's reconciliation (status ``interrupted``, usage estimated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from gateway.accounts.pricing import money

# ok             the upstream finished and the client got all of it
# partial        the upstream failed after the commit point (terminal error event sent)
# upstream_error the upstream failed before the commit point (HTTP error sent)
# client_abort   the client went away; usage counts what was relayed
# interrupted    the gateway process died with the request open (settled at next start)
STATUSES = ("ok", "partial", "upstream_error", "client_abort", "interrupted")


@attrs.frozen
class RequestRecord:
    generation_id: str
    key_id: str
    model: str  # as the client asked
    deployment: str  # provider/upstream-model actually used
    client_dialect: str
    upstream_dialect: str
    stream: bool
    status: str  # one of STATUSES
    http_status: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usage_estimated: bool
    cost: int  # micro-units (pricing.py)
    error_type: str | None
    ttft_ms: float | None
    duration_ms: float
    cancelled: bool
    created_at: float  # unix time
    # Every upstream call, in order: "provider/model=outcome;..." (ok, hedge_lost, an error
    # type); the last one, or the winner, is ``deployment``. Deployments passed over because
    # they cannot honour the request come first: "provider/model=skipped: cannot honour 'x'".
    attempts: str = ""
    # Of ``prompt_tokens``, those written to the provider's prompt cache (priced apart).
    cache_write_tokens: int = 0
    # The client's names of what ``deployment`` left out of the request, comma-separated, as
    # the operator allowed (``drop_unsupported``); empty when nothing was.
    dropped: str = ""

    def public(self) -> dict[str, object]:
        """The row as ``GET /v1/generation`` shows it to the key that owns it: money in
        dollars and in micro-dollars, each field named for its unit."""
        row = attrs.asdict(self)
        row["id"] = row.pop("generation_id")
        row.update(money("cost", row.pop("cost")))
        return row


@attrs.frozen
class ApiKey:
    """A stored key and its policy. ``None`` limits mean "no limit"."""

    id: str
    hash: str  # sha256 hex of the whole key
    name: str = ""
    created_at: float = 0.0
    revoked: bool = False
    expires_at: float | None = None  # unix time
    balance: int | None = None  # micro-units (pricing.py); None: not metered by balance
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + completion)
    max_concurrent: int | None = None  # open requests at once
    models: tuple[str, ...] = ()  # public model names this key may use; empty: all

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


# The policy fields an operator may change after creation (CLI and admin API).
POLICY_FIELDS = ("name", "expires_at", "balance", "rpm", "tpm", "max_concurrent", "models")


def _column(default: Any) -> Any:
    """A field that is not stored: it only travels with the item (after every column)."""
    return attrs.field(default=default, metadata={"stored": False})


@attrs.frozen
class Reservation:
    """Credits held for one admitted request until it settles."""

    generation_id: str
    key_id: str
    amount: int  # micro-units held (0 for an unmetered key)
    instance: str  # the gateway process that admitted it
    model: str
    deployment: str  # the first choice at admission; the serving one after a checkpoint
    client_dialect: str
    upstream_dialect: str
    stream: bool
    prompt_tokens: int  # the admission estimate
    created_at: float  # unix time
    # The last checkpoint (``Checkpoint``): output relayed so far, and what the request would
    # cost if it ended now. What an ``interrupted`` row charges; 0 until a checkpoint.
    completion_tokens: int = 0
    served_cost: int = 0
    # Not stored: False if a deployment of the request has no price, in which case only a
    # key without a balance may hold it (checked in the reservation's own transaction).
    priced: bool = _column(True)
    # Not stored: True if the request's credit is held in its process's lease (``Lease``),
    # not by this row: the row is then written as is, only to record the request (its
    # ``amount`` 0), whatever the key's balance says.
    leased: bool = _column(False)

    def record(self, **outcome: Any) -> RequestRecord:
        """The request's ledger row: who and what from the reservation, how it ended from
        ``outcome`` (every other ``RequestRecord`` field). The one place a row is built."""
        return RequestRecord(
            generation_id=self.generation_id, key_id=self.key_id, model=self.model,
            client_dialect=self.client_dialect, stream=self.stream, **outcome)


@attrs.frozen
class Settlement:
    record: RequestRecord  # carries the generation id and the real cost
    # The instance whose lease on the key paid for the request: its cost comes out of that
    # lease (while it holds that much), the rest out of the balance. Empty: the balance.
    lease: str = ""


@attrs.frozen
class Lease:
    """Credit moved from a metered key's balance to one gateway process, which admits and
    settles that key's requests against it in memory (``accounts/leases.py``)."""

    key_id: str
    instance: str
    amount: int  # micro-units: the credit not yet spent (requests in flight included)


@attrs.frozen
class LeaseTake:
    """Move credit from a key's balance into ``instance``'s lease on it, in one conditional
    update: ``want`` if the balance is at least four times that, else a quarter of the
    balance, but never less than ``minimum`` (the request waiting for it), and nothing at
    all if the balance cannot cover ``minimum`` or the key is revoked or unmetered. The
    result is the amount moved."""

    key_id: str
    instance: str
    want: int
    minimum: int


@attrs.frozen
class LeaseReturn:
    """Give credit back from ``instance``'s lease to the key's balance: ``amount``, or the
    whole lease (and its row goes) if None; never more than the lease holds."""

    key_id: str
    instance: str
    amount: int | None = None


@attrs.frozen
class Checkpoint:
    """A streaming request's progress, written into its open reservation."""

    generation_id: str
    deployment: str
    upstream_dialect: str
    completion_tokens: int
    served_cost: int


@attrs.frozen
class Release:
    """A reservation nobody holds any more (its admission gave up waiting for the store):
    deleted, its whole amount returned, no ledger row."""

    generation_id: str


@attrs.frozen
class Batch:
    """One transaction's worth of the ledger's writes, applied in this order: settlements
    (their credits serve the reservations after them), releases, checkpoints, lease
    returns, reservations, lease takes."""

    reservations: Sequence[Reservation] = ()
    settlements: Sequence[Settlement] = ()
    checkpoints: Sequence[Checkpoint] = ()
    releases: Sequence[Release] = ()
    takes: Sequence[LeaseTake] = ()
    returns: Sequence[LeaseReturn] = ()

    def __bool__(self) -> bool:
        return bool(self.reservations or self.settlements or self.checkpoints
                    or self.releases or self.takes or self.returns)


@attrs.frozen
class Instance:
    id: str
    host: str  # hostname, boot and PID namespace: where ``pid`` means this process
    pid: int
    started_at: float
    heartbeat_at: float
    # The process's start in clock ticks since boot (/proc/PID/stat), which tells a PID
    # that was reused from the one this instance ran as; 0 where /proc cannot tell.
    pid_start: int = 0
    # Holds a liveness claim (``Store.claim``) while it lives: a process of a version that
    # did not is judged by its heartbeat instead, so a rolling upgrade misjudges nobody.
    claims: bool = False


@attrs.frozen
class StoredResponse:
    """A Responses API answer kept for ``previous_response_id`` and ``GET /v1/responses/{id}``:
    only the key that made it may read or delete it, until ``expires_at``.

    The JSON columns hold what the client sent and got, as it did: ``response`` the
    response object, ``input_items`` the request's own input items, ``items`` the whole
    conversation through this response's output (what a next turn continues)."""

    id: str
    key_id: str
    created_at: float
    expires_at: float
    response: str
    input_items: str
    items: str
