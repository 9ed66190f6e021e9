"""The model catalog: which public model names exist and which deployments serve them.

A name resolves, in order, as a catalog alias from the config (``[models."fast"]``, one or
more deployments), or as ``provider/model`` for a configured provider (any model, unless
the provider lists its ``models``). Anything else is ``ModelNotFound`` (400 "Invalid model
specified"). Names are only ever looked up, never used to build URLs.

A ``Route`` is every deployment that may serve a request, in the client's order of models
(``model``, then its ``models`` fallbacks), filtered by its provider preferences. The
attempts (``relay/attempts.py``, choosing with ``choice.py``) pick among them by priority,
weight and circuit state. Each target
carries its price (the alias's, else the provider's for that upstream model, else the
built-in price table's, else free if the provider is marked free, else none: unpriced) and
its output cap, which admission uses to size the credit reservation.
"""

from __future__ import annotations

import difflib
from typing import Any

import attrs

from gateway.accounts import price_table
from gateway.accounts.price_table import TABLES as PRICE_TABLES
from gateway.accounts.price_table import PriceTable
from gateway.accounts.pricing import FREE, Price
from gateway.canonical import RoutingPrefs
from gateway.config import ENV_PROVIDERS, Config, Deployment, ProviderConfig
from gateway.errors import ModelNotFound, NoProviderAvailable
from gateway.routing.targets import Target


@attrs.frozen
class Route:
    model: str  # the public name the client asked for
    targets: tuple[Target, ...]  # every candidate deployment, by preference
    hedge_after: float | None = None
    # Deployments left out because they cannot honour the request (``fidelity.py``).
    skipped: tuple[tuple[str, str], ...] = ()  # (label, why)
    # The fastest deployments first (``provider.sort = "latency"``): decided when each call
    # is chosen, from the latencies measured so far (``Circuits.latency``).
    by_latency: bool = False

    @property
    def max_output_tokens(self) -> int:
        return max(t.max_output_tokens for t in self.targets)


def _by_priority(target: Target) -> tuple[int, ...]:
    return (target.priority,)


def _by_price(target: Target) -> tuple[int, ...]:
    """OpenRouter's ``provider.sort = "price"``: the cheapest per token first (prompt and
    completion rates added), unpriced last, then the usual order."""
    price = target.price
    if price is None:
        return (1, 0, target.priority)
    return (0, price.prompt + price.completion, target.priority)


class Catalog:
    def __init__(self, config: Config, table: PriceTable | None = None) -> None:
        self._config = config
        self._table = table or price_table.builtin()

    def resolve(self, name: str, prefs: RoutingPrefs | None = None) -> Route:
        """The route for ``name`` and the client's fallbacks; ModelNotFound if ``name`` (or
        a fallback) is unknown, NoProviderAvailable if the preferences exclude them all."""
        prefs = prefs or RoutingPrefs()
        targets: list[Target] = []
        hedge_after = None
        rank = {provider: i for i, provider in enumerate(prefs.order)}
        for n, model in enumerate((name, *prefs.fallbacks)):
            found, hedge = self._targets(model)
            if n == 0:
                hedge_after = hedge
            for t in found:
                # The router tries lower priorities first: the client's provider order
                # first, then its models in order, then each model's own priorities.
                order = rank.get(t.provider.name, len(rank))
                t = attrs.evolve(t, priority=order * 1_000_000 + n * 1_000 + t.priority,
                                 public=model)
                if all(t.label != seen.label for seen in targets):
                    targets.append(t)
        allowed = sorted((t for t in targets if _allowed(t.provider.name, prefs)),
                         key=_by_price if prefs.sort == "price" else _by_priority)
        if not allowed:
            raise NoProviderAvailable("no deployment of this model matches the provider "
                                      "preferences")
        return Route(name, tuple(allowed), hedge_after or self._config.routing.hedge_after,
                     by_latency=prefs.sort == "latency")

    def _targets(self, name: str) -> tuple[list[Target], float | None]:
        config = self._config
        route = config.models.get(name)
        if route is not None:
            return [
                self._target(config.providers[d.provider], d, route.price,
                             route.max_output_tokens, route.drop_unsupported,
                             route.context_length)
                for d in route.all_deployments
            ], route.hedge_after
        provider_name, sep, model = name.partition("/")
        found = config.providers.get(provider_name)
        if not sep or found is None or not model or (found.models and model not in found.models):
            raise ModelNotFound(self.not_served(name))
        return [self._target(found, Deployment(provider_name, model), None, None)], None

    def serves(self, name: str) -> bool:
        """Whether ``name`` resolves to a deployment (an allowlist's check)."""
        try:
            self._targets(name)
        except ModelNotFound:
            return False
        return True

    def not_served(self, name: str, *, listing: bool = False) -> str:
        """Why ``name`` is refused and what to do about it: the provider to enable, the
        names close to it, and where the list is (``listing``: the list itself, for an
        operator at a shell rather than a client with an HTTP API)."""
        return f"Invalid model specified: {name!r}. {self._hint(name, listing)}"

    def _hint(self, name: str, listing: bool) -> str:
        config = self._config
        provider_name, sep, _ = name.partition("/")
        said = []
        env = {entry[0]: entry[2] for entry in ENV_PROVIDERS}
        if sep and provider_name not in config.providers and provider_name in env:
            said.append(f"The provider {provider_name!r} is not enabled: set "
                        f"{env[provider_name]} (or configure [providers.{provider_name}]).")
        elif not sep:
            owners = [t for t in PRICE_TABLES if self._table.find(t, name) is not None]
            if owners:
                owner = owners[0]
                enable = ("" if owner in config.providers or owner not in env
                          else f" (the provider {owner!r} is not enabled: set {env[owner]})")
                said.append(f"Name a provider's model as provider/model, e.g. "
                            f"{owner}/{name}{enable}.")
        known = [entry["id"] for entry in self.listing(0)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            said.append("Close to: " + ", ".join(close) + ".")
        if listing:
            said.append("Served here: " + ", ".join(known) + ".")
        else:
            said.append("GET /v1/models lists what this gateway serves.")
        return " ".join(said)

    def price(self, provider: ProviderConfig, model: str, own: Price | None = None) -> Price | None:
        """What ``model`` of ``provider`` costs, or None if nobody priced it: an alias's own
        price, else the provider's configured price, else the built-in table's, else free if
        the provider is marked free."""
        for found in (own, provider.prices.get(model),
                      self._table.find(provider.price_table, model)):
            if found is not None:
                return found
        return FREE if provider.free else None

    def _target(
        self, provider: ProviderConfig, deployment: Deployment, price: Price | None,
        max_out: int | None, drop: bool | tuple[str, ...] | None = None,
        context: int | None = None,
    ) -> Target:
        # An alias's own price, cap and drop policy win over its provider's.
        model = deployment.model
        return Target(
            provider,
            model,
            price=self.price(provider, model, price),
            max_output_tokens=max_out
            or provider.max_output_tokens
            or self._config.accounts.max_output_tokens,
            weight=deployment.weight,
            priority=deployment.priority,
            drop_unsupported=provider.drop_unsupported if drop is None else drop,
            context_length=context or provider.context_length,
        )

    @property
    def table(self) -> PriceTable:
        return self._table

    def unpriced(self) -> list[str]:
        """Every reachable model without a price, as the start-up warnings name them: each
        alias deployment and listed provider model, and each provider that serves any
        model name (its models outside the built-in table have none)."""
        found = []
        for name, route in self._config.models.items():
            for d in route.all_deployments:
                provider = self._config.providers[d.provider]
                if self.price(provider, d.model, route.price) is None:
                    found.append(f"{name} ({d.label})")
        for provider in self._config.providers.values():
            if provider.free:
                continue
            if provider.models:
                found += [f"{provider.name}/{m}" for m in provider.models
                          if self.price(provider, m) is None]
            elif provider.price_table is not None:
                found.append(f"{provider.name}/* outside the built-in price table")
            else:
                found.append(f"{provider.name}/* (no price configured)")
        return found

    def listing(self, created: int) -> list[dict[str, Any]]:
        """Models a client can name: aliases, then every listed provider model, then the
        priced models of each enabled provider that serves any name (its price table)."""
        owners = {name: route.provider for name, route in self._config.models.items()}
        for provider in self._config.providers.values():
            models = provider.models or tuple(
                self._table.prices.get(provider.price_table or "", {}))
            owners.update({f"{provider.name}/{m}": provider.name for m in models})
        return [
            {"id": name, "object": "model", "created": created, "owned_by": owner}
            for name, owner in owners.items()
        ]


def _allowed(provider: str, prefs: RoutingPrefs) -> bool:
    if provider in prefs.ignore or (prefs.only and provider not in prefs.only):
        return False
    return prefs.allow_fallbacks or not prefs.order or provider in prefs.order
