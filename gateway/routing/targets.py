"""A resolved deployment: the provider and upstream model that may serve a request.

Pure data, made by the catalog (``catalog.py``) and carried by routing decisions, the
attempts, the providers and the accounts (its price).
"""

from __future__ import annotations

import attrs

from gateway.accounts.pricing import Price
from gateway.config import ProviderConfig


@attrs.frozen
class Target:
    """A resolved deployment: which provider serves the request, as which upstream model."""

    provider: ProviderConfig
    model: str
    price: Price | None = None  # None: unpriced (metered keys are refused it)
    max_output_tokens: int = 4096  # the most output a request may produce (reservations)
    weight: float = 1.0  # among targets of the same priority (choice.py)
    priority: int = 0  # lower first
    # What the operator lets this deployment leave out of a request it cannot honour in
    # full: True (anything), or the parameter or feature names (``routing/fidelity.py``).
    drop_unsupported: bool | tuple[str, ...] = False
    # For one request: the client's names of what it leaves out (as ``fidelity.recorded``).
    dropped: tuple[str, ...] = ()
    # The public model name this deployment was reached by: the one asked for, or a
    # fallback from the client's ``models`` (it names the model that answered).
    public: str = ""
    context_length: int | None = None  # the model's window, for listings (None: unknown)

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"
