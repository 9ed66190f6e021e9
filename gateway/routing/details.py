"""What a client may know of a model it can name: the entries of the model listings.

``describe`` gathers, for a public model name, what its deployments say together: the
context window and the output cap, the price, the input modalities, and the features of
the fidelity matrix (``fidelity.py``) that every one of its deployments honours, so a
client can tell before it asks. The routes render it in each dialect's listing shape
(``http/models.py``).

Rules: pure; read from the configuration and the price table, never from an upstream.
"""

from __future__ import annotations

from typing import Any

import attrs

from gateway.accounts.pricing import Price, usd
from gateway.canonical import FEATURES
from gateway.routing.catalog import Catalog
from gateway.routing.fidelity import HONOURS

# Input kinds a model reads, by the canonical feature that carries them.
MODALITIES = (("image", "images"), ("file", "documents"), ("audio", "audio"))


@attrs.frozen
class ModelDetails:
    id: str
    owned_by: str
    dialects: tuple[str, ...]  # of its deployments' upstreams
    context_length: int | None
    max_output_tokens: int
    price: Price | None  # the dearest deployment's (what a reservation is sized by)
    features: tuple[str, ...]  # canonical features every deployment honours

    @property
    def input_modalities(self) -> list[str]:
        return ["text", *(kind for kind, feature in MODALITIES if feature in self.features)]

    def openai(self, created: int) -> dict[str, Any]:
        """OpenAI's model object, with what OpenRouter's listing adds."""
        return {
            "id": self.id, "object": "model", "created": created, "owned_by": self.owned_by,
            "context_length": self.context_length,
            "max_output_tokens": self.max_output_tokens,
            "architecture": {"input_modalities": self.input_modalities,
                             "output_modalities": ["text"]},
            "pricing": pricing(self.price),
            "supported_parameters": list(self.features),
            "upstream_dialects": list(self.dialects),
        }


def pricing(price: Price | None) -> dict[str, str | None] | None:
    """Dollars per million tokens of each kind, as exact decimal strings; None: unpriced."""
    if price is None:
        return None
    return {
        "prompt_usd_per_million": usd(price.prompt),
        "completion_usd_per_million": usd(price.completion),
        "cached_prompt_usd_per_million": usd(price.cached_prompt if price.cached_prompt
                                             is not None else price.prompt),
        "cache_write_usd_per_million": usd(price.cache_write if price.cache_write
                                           is not None else price.prompt),
        "reasoning_usd_per_million": usd(price.reasoning if price.reasoning is not None
                                         else price.completion),
    }


def describe(catalog: Catalog, name: str) -> ModelDetails:
    """``name``'s details; ``ModelNotFound`` if the catalog does not serve it."""
    route = catalog.resolve(name)
    targets = route.targets
    honoured = set(FEATURES)
    for target in targets:
        honoured &= HONOURS[target.provider.dialect] | set(target.provider.accepts)
    priced = [t.price for t in targets if t.price is not None]
    dearest = max(priced, key=lambda p: (p.prompt + p.completion)) if len(priced) == len(
        targets) else None
    windows = [t.context_length for t in targets if t.context_length is not None]
    return ModelDetails(
        id=name,
        owned_by=targets[0].provider.name,
        dialects=tuple(dict.fromkeys(t.provider.dialect for t in targets)),
        context_length=min(windows) if windows else None,
        max_output_tokens=route.max_output_tokens,
        price=dearest,
        features=tuple(f for f in FEATURES if f in honoured),
    )
