"""What the HTTP side may ask of the gateway process: a narrow protocol, not the process.

Handlers (the generation routes, the small routes, admin) receive a ``Service``; the
gateway process (``gateway/service.py``) is one, structurally. So nothing in ``http/``
imports the service or the composition root: the arrows run down only.
"""

from __future__ import annotations

from typing import Protocol

from gateway.accounts.admission import Accounts
from gateway.config import Config
from gateway.http.refusals import Refusals
from gateway.observe.metrics import Metrics
from gateway.relay.attempts import Attempts
from gateway.relay.exchange import Exchange
from gateway.routing.catalog import Catalog
from gateway.routing.circuits import Circuits
from gateway.store.base import Store
from gateway.store.rows import ApiKey


class Service(Protocol):
    config: Config
    catalog: Catalog
    metrics: Metrics
    store: Store
    accounts: Accounts
    attempts: Attempts
    circuits: Circuits
    refusals: Refusals
    open_exchanges: set[Exchange]

    @property
    def draining(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    async def authenticate(self, key_id: str, key: str) -> ApiKey:
        """The stored key for a presented one, else ``AuthenticationError``."""

    def forget_key(self, key_id: str) -> None:
        """Drop this process's cached copy of a key (after an admin change)."""

    def track(self, exchange: Exchange) -> None:
        """An admitted request is open (the drain waits for it)."""

    def untrack(self, exchange: Exchange) -> None:
        """It has settled."""
