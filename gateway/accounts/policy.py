"""Key policy as operators write it (the admin API's JSON, the CLI's options) and see it.

Rules:
- Money is written in dollars (``balance_usd``: a decimal string, or a number read exactly)
  and shown both ways (``pricing.money``); the unit-less ``balance`` and ``amount`` are
  refused by name.
- An unknown field is a ``RequestError`` naming it; ``null`` clears a limit.
- A key's view never holds its hash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.accounts.pricing import MoneyError, money, parse_usd
from gateway.errors import RequestError
from gateway.store.rows import ApiKey

_INT_FIELDS = ("rpm", "tpm", "max_concurrent")
# Amount fields without a unit in their name: refused, so that nobody's 5 becomes $0.000005.
UNITLESS = {
    "balance": 'balance: amounts are in dollars; give balance_usd (e.g. "5.00")',
    "amount": 'amount: amounts are in dollars; give amount_usd (e.g. "5.00")',
}


def parse_policy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validated key policy fields from a JSON object (admin API) or CLI options.

    ``balance_usd`` is dollars (a decimal string or number); ``null`` clears a limit.
    """
    policy: dict[str, Any] = {}
    for name, value in raw.items():
        if name in UNITLESS:
            raise RequestError(UNITLESS[name], param=name)
        if name == "name":
            if not isinstance(value, str) or len(value) > 200:
                raise RequestError("name: expected a string of at most 200 characters",
                                   param=name)
            policy["name"] = value
        elif name in _INT_FIELDS:
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
                or value > 2**62
            ):
                raise RequestError(f"{name}: expected a non-negative integer or null",
                                   param=name)
            policy[name] = value
        elif name == "balance_usd":
            policy["balance"] = None if value is None else dollars(value, name)
            if policy["balance"] is not None and policy["balance"] < 0:
                raise RequestError("balance_usd: cannot be negative", param=name)
        elif name == "models":
            if not isinstance(value, list) or not all(
                isinstance(m, str) and m and "\n" not in m for m in value
            ):
                raise RequestError("models: expected a list of model names", param=name)
            policy["models"] = tuple(value)
        elif name == "expires_at":
            if value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool) or value <= 0
            ):
                raise RequestError("expires_at: expected a unix time or null", param=name)
            policy["expires_at"] = None if value is None else float(value)
        else:
            raise RequestError(f"unknown field {name!r}", param=name)
    return policy


def dollars(value: Any, name: str) -> int:
    """Micro-units from a dollar amount: a decimal string, or a JSON number (exactly)."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise RequestError(f"{name}: expected an amount in dollars, e.g. \"5.00\"", param=name)
    try:
        return parse_usd(value)
    except MoneyError as exc:
        raise RequestError(f"{name}: {exc}", param=name) from None


def key_view(key: ApiKey) -> dict[str, Any]:
    """A key as operators and its owner see it: policy and balance, never the hash."""
    return {
        "id": key.id,
        "name": key.name,
        "created_at": key.created_at,
        "revoked": key.revoked,
        "expires_at": key.expires_at,
        **money("balance", key.balance),  # both null: no balance limit
        "limits": {"rpm": key.rpm, "tpm": key.tpm, "max_concurrent": key.max_concurrent},
        "models": list(key.models),
    }
