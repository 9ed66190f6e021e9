"""The built-in price table: the providers' published prices, as data, with their date.

``prices.toml`` beside this module holds US dollars per million tokens for the common
OpenAI, Anthropic and Gemini models, under one table per provider, and the ``date`` the
prices were read. A provider gets the table named by its ``price_table`` (by default its
own name when that is ``openai``, ``anthropic`` or ``gemini``: the env-switched providers);
the config's own ``[providers.NAME.prices."MODEL"]`` and ``[models.X] price`` win over it.

Rules: read once per process; a bad table is a bug in the package and fails loudly at
start (``ConfigError``), never a silent price of zero.
"""

from __future__ import annotations

import datetime
import functools
import tomllib
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

import attrs

from gateway.accounts.pricing import MoneyError, Price, parse_price

TABLES = ("openai", "anthropic", "gemini")
# Older than this, the start-up log says the table should be checked against the providers.
STALE_AFTER_DAYS = 90


class PriceTableError(Exception):
    pass


@attrs.frozen
class PriceTable:
    date: datetime.date
    prices: Mapping[str, Mapping[str, Price]]  # table name -> upstream model -> price

    def find(self, table: str | None, model: str) -> Price | None:
        if table is None:
            return None
        return self.prices.get(table, {}).get(model)

    def count(self) -> int:
        return sum(len(models) for models in self.prices.values())

    def age_days(self, today: datetime.date) -> int:
        return (today - self.date).days


def parse(text: str) -> PriceTable:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"prices.toml: {exc}") from None
    date = raw.pop("date", None)
    if not isinstance(date, datetime.date) or isinstance(date, datetime.datetime):
        raise PriceTableError("prices.toml: date: expected a TOML date (2026-11-05)")
    unknown = set(raw) - set(TABLES)
    if unknown:
        raise PriceTableError(f"prices.toml: unknown table {sorted(unknown)[0]!r}")
    prices: dict[str, Mapping[str, Price]] = {}
    for table, models in raw.items():
        parsed = {}
        for model, entry in models.items():
            if not isinstance(entry, dict):
                raise PriceTableError(f"prices.toml: {table}.{model}: expected a table")
            try:
                parsed[model] = parse_price(entry)
            except MoneyError as exc:
                raise PriceTableError(f"prices.toml: {table}.{model}.{exc}") from None
        prices[table] = MappingProxyType(parsed)
    return PriceTable(date, MappingProxyType(prices))


@functools.cache
def builtin() -> PriceTable:
    """The table shipped with this package (read once per process)."""
    return parse(resources.files("gateway.accounts").joinpath("prices.toml").read_text("utf-8"))
