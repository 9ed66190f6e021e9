"""Money in integer micro-dollars: exact parsing, costs rounded up once, reservations that
bound every cost they reserve for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.accounts.pricing import (
    MoneyError,
    Price,
    cost,
    format_usd,
    parse_usd,
    reservation,
)
from gateway.canonical import Usage


@pytest.mark.parametrize(("text", "micro"), [
    ("5", 5_000_000), ("$12.50", 12_500_000), ("0.000001", 1), (0.15, 150_000), (3, 3_000_000),
    ("-2", -2_000_000), ("1_000", 1_000_000_000),
])
def test_dollar_amounts_parse_exactly(text: str | float, micro: int) -> None:
    assert parse_usd(text) == micro


@pytest.mark.parametrize("text", ["0.0000001", "abc", "nan", "inf", "", True])
def test_bad_amounts_are_refused(text: object) -> None:
    with pytest.raises(MoneyError):
        parse_usd(text)  # type: ignore[arg-type]


def test_format_is_exact_and_names_no_limit() -> None:
    assert format_usd(1_250_001) == "$1.250001"
    assert format_usd(-5) == "-$0.000005"
    assert format_usd(None) == "unlimited"


def test_each_token_kind_has_its_rate_and_the_total_rounds_up_once() -> None:
    price = Price(prompt=3_000_000, completion=15_000_000, cached_prompt=300_000,
                  reasoning=20_000_000)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400,
                  reasoning_tokens=100)
    # 600 * 3 + 400 * 0.3 + 400 * 15 + 100 * 20 micro-dollars
    assert cost(usage, price) == 1800 + 120 + 6000 + 2000
    assert cost(Usage(prompt_tokens=1), Price(prompt=1)) == 1  # a millionth rounds up
    assert cost(Usage(prompt_tokens=5, completion_tokens=5), Price()) == 0


def test_cache_writes_have_their_own_rate_and_default_to_the_prompt_s() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_tokens=300,
                  cache_write_tokens=600)
    # 100 plain * 3 + 300 read * 0.3 + 600 written * 3.75
    assert cost(usage, Price(prompt=3_000_000, cached_prompt=300_000,
                             cache_write=3_750_000)) == 300 + 90 + 2250
    assert cost(usage, Price(prompt=3_000_000, cached_prompt=300_000)) == 300 + 90 + 1800
    # Counts from an upstream are untrusted: writes beyond the uncached prompt count once.
    assert cost(Usage(prompt_tokens=10, cached_tokens=8, cache_write_tokens=50),
                Price(prompt=1_000_000, cached_prompt=0, cache_write=2_000_000)) == 4


@given(
    prompt=st.integers(0, 10**6), completion=st.integers(0, 10**5),
    cached=st.integers(0, 10**6), reasoning=st.integers(0, 10**5),
    written=st.integers(0, 10**6),
    rates=st.tuples(*[st.integers(0, 10**8)] * 2, *[st.none() | st.integers(0, 10**8)] * 3),
)
def test_a_reservation_covers_any_usage_within_its_estimate(
    prompt: int, completion: int, cached: int, reasoning: int, written: int,
    rates: tuple[int, int, int | None, int | None, int | None],
) -> None:
    price = Price(*rates)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                  reasoning_tokens=reasoning, cache_write_tokens=written)
    # A cached prompt rate above the prompt rate is a misconfiguration the bound ignores.
    if price.cached_prompt is not None and price.cached_prompt > price.prompt:
        return
    assert 0 <= cost(usage, price) <= reservation(prompt, completion, price)
