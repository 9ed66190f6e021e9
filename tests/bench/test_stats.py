"""The bench's arithmetic, checked against independent computations."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bench import stats
from gateway.bench.samples import RequestResult, UpstreamRecord

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def test_percentile_interpolates_linearly() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 100) == 4.0
    assert stats.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


@given(st.lists(finite, min_size=2, max_size=200))
def test_describe_agrees_with_the_statistics_module(values: list[float]) -> None:
    dist = stats.describe(values)
    assert dist is not None
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert dist.count == len(values)
    assert (dist.min, dist.max) == (min(values), max(values))
    assert dist.p50 == pytest.approx(statistics.median(values), rel=1e-9, abs=1e-6)
    assert dist.p90 == pytest.approx(cuts[89], rel=1e-9, abs=1e-6)
    assert dist.p99 == pytest.approx(cuts[98], rel=1e-9, abs=1e-6)
    assert dist.min <= dist.p50 <= dist.p90 <= dist.p99 <= dist.max


def test_describe_nothing_is_none() -> None:
    assert stats.describe([]) is None


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=300),
       st.integers(1, 50))
def test_histogram_counts_every_value_once(values: list[float], bins: int) -> None:
    chosen = stats.choose_edges([values], bins)
    assert chosen is not None
    edges, log = chosen
    assert len(edges) == bins + 1 and list(edges) == sorted(edges)
    hist = stats.histogram(values, edges, log=log)
    assert hist.total == len(values)
    # Only zeros fall off a logarithmic axis; nothing falls off a linear one.
    assert hist.underflow == (values.count(0.0) if log else 0)
    assert hist.overflow == 0
    for i, count in enumerate(hist.counts):
        last = i == bins - 1
        inside = [v for v in values
                  if edges[i] <= v and (v < edges[i + 1] or (last and v == edges[i + 1]))]
        assert count == len(inside)


def test_edges_are_logarithmic_for_wide_positive_ranges() -> None:
    chosen = stats.choose_edges([[0.001, 0.002], [0.5]], 10)
    assert chosen is not None
    edges, log = chosen
    assert log and edges[0] == 0.001 and edges[-1] == 0.5
    ratios = [b / a for a, b in itertools.pairwise(edges)]
    assert max(ratios) == pytest.approx(min(ratios))


def test_edges_are_linear_otherwise_and_start_at_zero_unless_narrow() -> None:
    wide = stats.choose_edges([[0.002, 0.03]], 4)
    narrow = stats.choose_edges([[0.018, 0.036]], 4)
    signed = stats.choose_edges([[-0.001, 0.004]], 5)
    assert wide == ((0.0, 0.0075, 0.015, 0.0225, 0.03), False)
    assert narrow is not None and narrow[0][0] == 0.018 and not narrow[1]
    assert signed is not None and signed[0][0] == -0.001 and not signed[1]
    assert stats.choose_edges([[], [math.inf]]) is None


def test_a_few_negatives_still_get_a_log_axis_and_fall_below_it() -> None:
    values = [-0.000002] + [0.0001 * 1.1**i for i in range(150)]
    chosen = stats.choose_edges([values])
    assert chosen is not None and chosen[1]
    hist = stats.histogram(values, chosen[0], log=True)
    assert hist.underflow == 1 and sum(hist.counts) == 150


def _result(index: int, outcome: str = "ok", aborted_at: float | None = None,
            **fields: object) -> RequestResult:
    result = RequestResult(index=index, target="A", tag=f"t-{index}", stream=True,
                           started_at=100.0, ended_at=100.05, **fields)  # type: ignore[arg-type]
    result.outcome = outcome  # type: ignore[assignment]
    result.aborted_at = aborted_at
    return result


def _record(tag: str, outcome: str, *, started: float = 100.001, ended: float | None = None,
            gone: float | None = None) -> UpstreamRecord:
    return UpstreamRecord(tag=tag, started_at=started, first_token_at=None, ended_at=ended,
                          client_gone_at=gone, tokens_sent=3, outcome=outcome)


def test_propagation_sorts_every_aborted_request() -> None:
    results = [
        _result(0, "aborted", 100.020),  # cancelled 1.5 ms later
        _result(1, "aborted", 100.020),  # the upstream ran on to the end
        _result(2, "aborted", 100.020),  # the upstream is still running
        _result(3, "aborted", 100.020),  # the upstream had finished before the abort
        _result(4, "aborted", 100.020),  # never reached the upstream
        _result(5, "aborted", 100.020),  # the upstream was cut
        _result(6, "aborted", 100.020),  # retried: the later record counts
        _result(7),  # not aborted: not counted
        _result(8, "aborted", 100.020),  # completed 5 ms after the abort: raced it
    ]
    records = [
        _record("t-0", "client_gone", ended=100.0215, gone=100.0215),
        _record("t-1", "completed", ended=100.080),
        _record("t-2", "running"),
        _record("t-3", "completed", ended=100.019),
        _record("t-5", "cut", ended=100.010),
        _record("t-6", "error_status", started=100.001, ended=100.002),
        _record("t-6", "client_gone", started=100.003, gone=100.0203),
        _record("t-7", "completed", ended=100.03),
        _record("t-8", "completed", ended=100.025),
        _record("other", "running"),
    ]
    prop = stats.propagation(results, records)
    assert prop.aborted == 8
    assert prop.delays == {"t-0": 100.0215 - 100.020, "t-6": 100.0203 - 100.020}
    assert prop.never_cancelled == ("t-1", "t-2")
    assert (prop.raced, prop.upstream_done_first, prop.not_reached) == (1, 1, 1)
    assert prop.ended_otherwise == 1
    assert prop.race_window == 0.05
    # A narrower window turns the race into a missed cancel...
    narrow = stats.propagation(results, records, race_window=0.001)
    assert narrow.never_cancelled == ("t-1", "t-2", "t-8") and narrow.raced == 0
    # ...unless the run's own cancels are slower than that: their p99 widens the window.
    slow = [*records[:-1], _record("t-0", "client_gone", started=100.002, gone=100.0271)]
    widened = stats.propagation(results, slow, race_window=0.001)
    assert widened.distribution is not None
    assert widened.race_window == widened.distribution.p99 > 0.005
    assert widened.never_cancelled == ("t-1", "t-2") and widened.raced == 1
    assert prop.distribution is not None and prop.distribution.count == 2
    assert prop.to_json()["never_cancelled"] == 2


def test_summary_figures() -> None:
    results = [
        _result(0, headers_at=100.001, first_token_at=100.002, tokens=3),
        _result(1, "aborted", 100.02, tokens=1, first_token_at=100.004),
        _result(2, "http_error", error_kind="http 502", status=502),
        _result(3, headers_at=100.003, first_token_at=100.006, tokens=2),
    ]
    results[0].gaps.extend([0.001, 0.003])
    results[3].gaps.append(0.002)
    summary = stats.summarize("A", "http://127.0.0.1:1", results, 0.5, client_cpu=0.002)
    assert (summary.requests, summary.completed, summary.aborted) == (4, 2, 1)
    assert summary.throughput == 2 / 0.5 and summary.requests_per_s == 4 / 0.5
    assert summary.tokens == 6 and summary.tokens_per_s == 12
    assert summary.errors == {"http 502": 1}
    assert summary.outcomes == {"aborted": 1, "http_error": 1, "ok": 2}
    assert summary.first_token is not None and summary.first_token.count == 3
    assert summary.total is not None and summary.total.count == 2
    assert summary.gap is not None and summary.gap.p50 == 0.002
    assert summary.client_cpu_per_request == 0.002 / 4
    assert summary.server_cpu_per_completed is None
    assert summary.to_json()["throughput_rps"] == 4.0


def test_ratios_both_ways() -> None:
    a = stats.summarize("A", "a", [_result(0), _result(1)], 1.0)
    b = stats.summarize("B", "b", [_result(0), _result(1)], 0.5)
    table = stats.ratios(a, b)
    assert table["throughput"] == {"a": 2.0, "b": 4.0, "b_over_a": 2.0, "a_over_b": 0.5}
    assert table["first_token.p50"] == {"a": None, "b": None, "b_over_a": None, "a_over_b": None}
