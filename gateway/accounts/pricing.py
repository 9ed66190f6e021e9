"""Money: integer micro-units (1 = one millionth of a US dollar), never floats.

Rules:
- Balances, reservations and costs are ``int`` micro-units everywhere: in the store, the
  ledger, the API and the CLI's arithmetic. Decimal strings ("5", "0.25", "$12.50") are only
  a way of writing them, parsed exactly with ``Decimal``.
- One unit on every surface: what an operator or a client *writes* is dollars (the CLI's
  ``--balance 5``, the admin API's ``balance_usd``/``amount_usd``); what the APIs *show* is
  every amount twice, ``X_usd`` as an exact decimal string and ``X_micro_usd`` as an integer
  (``money``), so no field's unit is ever a guess.
- A price is micro-units per **million** tokens (so $0.15 / M tokens is 150_000), which keeps
  cheap models' prices integral. A request's cost is the sum over its token kinds, divided
  by a million once and rounded **up**: the gateway never undercharges by rounding.
- Token kinds follow the canonical ``Usage``: ``prompt_tokens`` includes the cached ones and
  ``completion_tokens`` includes the reasoning ones, each priced at its own rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from gateway.canonical import Usage

MICRO = 1_000_000
PER_TOKENS = 1_000_000


class MoneyError(ValueError):
    pass


@attrs.frozen
class Price:
    """Micro-units per million tokens of each kind; ``None`` rates fall back as documented.

    A model with no ``Price`` at all (``None`` where a price is expected) is *unpriced*:
    metered keys are refused it. ``FREE`` (every rate zero) is a price: the operator said so.
    """

    prompt: int = 0
    completion: int = 0
    cached_prompt: int | None = None  # default: the prompt rate
    reasoning: int | None = None  # default: the completion rate
    # Prompt-cache writes (Anthropic's cache_creation_input_tokens); default: the prompt rate.
    cache_write: int | None = None

    @property
    def free(self) -> bool:
        return not (self.prompt or self.completion or self.cached_prompt or self.reasoning
                    or self.cache_write)


FREE = Price()
PRICE_KINDS = ("prompt", "completion", "cached_prompt", "reasoning", "cache_write")


def parse_price(raw: Mapping[str, Any]) -> Price:
    """A price from its written form: ``{prompt = 0.15, completion = 0.6}`` (dollars per
    million tokens, read exactly), or ``{free = true}``. ``MoneyError`` names the bad key."""
    unknown = set(raw) - {*PRICE_KINDS, "free"}
    if unknown:
        raise MoneyError(f"{sorted(unknown)[0]}: not a price field (expected one of "
                         f"{', '.join(PRICE_KINDS)}, or free = true)")
    if "free" in raw:
        if raw["free"] is not True or len(raw) > 1:
            raise MoneyError("free: give free = true alone, or the rates")
        return FREE
    rates: dict[str, int | None] = {}
    for kind in PRICE_KINDS:
        value = raw.get(kind)
        if value is None:
            rates[kind] = None
            continue
        try:
            rate = parse_usd(value)
        except MoneyError as exc:
            raise MoneyError(f"{kind}: {exc}") from None
        if rate < 0:
            raise MoneyError(f"{kind}: a price cannot be negative")
        rates[kind] = rate
    return Price(
        prompt=rates["prompt"] or 0,
        completion=rates["completion"] or 0,
        cached_prompt=rates["cached_prompt"],
        reasoning=rates["reasoning"],
        cache_write=rates["cache_write"],
    )


def cost(usage: Usage, price: Price) -> int:
    """What ``usage`` costs at ``price``, in micro-units, rounded up: cache reads and cache
    writes at their own rates (the prompt rate when the price has none)."""
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    cached_rate = price.prompt if price.cached_prompt is None else price.cached_prompt
    write_rate = price.prompt if price.cache_write is None else price.cache_write
    reasoning_rate = price.completion if price.reasoning is None else price.reasoning
    scaled = (
        (usage.prompt_tokens - cached - written) * price.prompt
        + cached * cached_rate
        + written * write_rate
        + (usage.completion_tokens - reasoning) * price.completion
        + reasoning * reasoning_rate
    )
    return -(-scaled // PER_TOKENS)


def reservation(prompt_tokens: int, completion_tokens: int, price: Price) -> int:
    """The most a request may cost: every prompt token at the dearer of the prompt and
    cache-write rates, every output token at the dearer of the completion and reasoning
    rates."""
    in_rate = max(price.prompt, price.cache_write or 0)
    out_rate = max(price.completion, price.reasoning or 0)
    return -(-(prompt_tokens * in_rate + completion_tokens * out_rate) // PER_TOKENS)


def parse_usd(text: str | int | float) -> int:
    """Exact micro-units from a dollar amount: ``"12.5"``, ``"$0.000001"``, ``3``.

    Floats are accepted only because TOML has no decimal type; they are read through their
    shortest repr (``0.15`` is exactly 150_000), never through binary arithmetic.
    """
    if isinstance(text, bool):
        raise MoneyError("expected an amount in dollars")
    raw = repr(text) if isinstance(text, float) else str(text)
    raw = raw.strip().removeprefix("$").replace("_", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"not an amount in dollars: {raw!r}") from None
    if not value.is_finite():
        raise MoneyError("expected a finite amount")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise MoneyError(f"{raw}: more precision than a micro-dollar")
    return int(micro)


def usd(micro: int) -> str:
    """The exact decimal string of a micro-dollar amount, for JSON: ``23`` -> ``"0.000023"``.
    (A string, not a JSON number: clients parse numbers into binary floats.)"""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def money(name: str, micro: int | None) -> dict[str, str | int | None]:
    """An amount as every API surface shows it: ``{name}_usd`` (exact decimal string) beside
    ``{name}_micro_usd`` (integer); both null for "no limit"."""
    return {f"{name}_usd": None if micro is None else usd(micro), f"{name}_micro_usd": micro}


def format_usd(micro: int | None) -> str:
    """``1_250_000`` -> ``"$1.250000"``; ``None`` (no balance limit) -> ``"unlimited"``."""
    if micro is None:
        return "unlimited"
    text = usd(micro)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"
