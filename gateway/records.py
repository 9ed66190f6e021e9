"""The record each accepted generation request leaves behind (the ledger row, pre-billing).

Exactly one per accepted request, whatever happened: written by the relay's shielded,
deadline-bounded settle step after the request's nursery has closed.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RequestRecord:
    generation_id: str
    key_id: str
    model: str  # as the client asked
    deployment: str  # provider/upstream-model actually used
    client_dialect: str
    stream: bool
    status: str  # ok | partial | upstream_error | client_abort
    http_status: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    usage_estimated: bool
    error_type: str | None
    ttft_ms: float | None
    duration_ms: float
    cancelled: bool
    created_at: float  # unix time
