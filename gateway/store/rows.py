"""The usage ledger's row: exactly one per accepted generation request.

Written by the request's shielded, deadline-bounded settle step after its nursery has
closed, in the same transaction that closes its credit reservation; or, if the process died
first, by the next start's reconciliation (status ``interrupted``, usage estimated).
"""

from __future__ import annotations

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
    # type); the last one, or the winner, is ``deployment``.
    attempts: str = ""

    def public(self) -> dict[str, object]:
        """The row as ``GET /v1/generation`` shows it to the key that owns it: money in
        dollars and in micro-dollars, each field named for its unit."""
        row = attrs.asdict(self)
        row["id"] = row.pop("generation_id")
        row.update(money("cost", row.pop("cost")))
        return row
