"""The model catalog: which public model names exist and who serves them.

A name resolves, in order, as a catalog alias from the config (``[models."fast"]``), or as
``provider/model`` for a configured provider (any model, unless the provider lists its
``models``). Anything else is ``ModelNotFound`` (400 "Invalid model specified"). Names are
only ever looked up, never used to build URLs.

A resolved target carries its price (the alias's, else the provider's for that upstream
model, else free) and its output cap, which admission uses to size the credit reservation.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config, ProviderConfig
from gateway.errors import ModelNotFound
from gateway.pricing import FREE, Price
from gateway.providers.base import Target


class Catalog:
    def __init__(self, config: Config) -> None:
        self._config = config

    def resolve(self, name: str) -> Target:
        config = self._config
        route = config.models.get(name)
        if route is not None:
            provider = config.providers[route.provider]
            return self._target(provider, route.model, route.price, route.max_output_tokens)
        provider_name, sep, model = name.partition("/")
        found = config.providers.get(provider_name)
        if not sep or found is None or not model:
            raise ModelNotFound()
        if found.models and model not in found.models:
            raise ModelNotFound()
        return self._target(found, model, None, None)

    def _target(
        self, provider: ProviderConfig, model: str, price: Price | None, max_out: int | None
    ) -> Target:
        # An alias's own price and cap win over its provider's entry for the upstream model.
        return Target(
            provider,
            model,
            price=price or provider.prices.get(model) or FREE,
            max_output_tokens=max_out
            or provider.max_output_tokens
            or self._config.accounts.max_output_tokens,
        )

    def listing(self, created: int) -> list[dict[str, Any]]:
        """Models a client can name: aliases, then every listed provider model."""
        owners = {name: route.provider for name, route in self._config.models.items()}
        for provider in self._config.providers.values():
            owners.update({f"{provider.name}/{m}": provider.name for m in provider.models})
        return [
            {"id": name, "object": "model", "created": created, "owned_by": owner}
            for name, owner in owners.items()
        ]
