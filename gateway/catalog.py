"""The model catalog: which public model names exist and who serves them.

A name resolves, in order, as a catalog alias from the config (``[models."fast"]``), or as
``provider/model`` for a configured provider (any model, unless the provider lists its
``models``). Anything else is ``ModelNotFound`` (400 "Invalid model specified"). Names are
only ever looked up, never used to build URLs.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.errors import ModelNotFound
from gateway.providers.base import Target


class Catalog:
    def __init__(self, config: Config) -> None:
        self._config = config

    def resolve(self, name: str) -> Target:
        config = self._config
        route = config.models.get(name)
        if route is not None:
            return Target(config.providers[route.provider], route.model)
        provider_name, sep, model = name.partition("/")
        provider = config.providers.get(provider_name)
        if not sep or provider is None or not model:
            raise ModelNotFound()
        if provider.models and model not in provider.models:
            raise ModelNotFound()
        return Target(provider, model)

    def listing(self, created: int) -> list[dict[str, Any]]:
        """Models a client can name: aliases, then every listed provider model."""
        owners = {name: route.provider for name, route in self._config.models.items()}
        for provider in self._config.providers.values():
            owners.update({f"{provider.name}/{m}": provider.name for m in provider.models})
        return [
            {"id": name, "object": "model", "created": created, "owned_by": owner}
            for name, owner in owners.items()
        ]
