"""The arithmetic of a bench run: percentiles, histograms, summaries, cancel propagation.

Rules:
- Pure: values in, frozen attrs values out. No I/O, no clock, no randomness; the same input
  always gives the same output, so tests can recompute any figure independently.
- Seconds everywhere; conversion to milliseconds happens only in ``to_json`` and the report.
- Percentiles interpolate linearly between the two nearest ranks (numpy's default), so
  p50 of an even count is the mean of the middle two.
- Throughput is completed (``ok``) requests over the measured wall time; ``requests_per_s``
  counts every request, whatever became of it.
- Cancel propagation of an aborted request = the upstream's ``client_gone_at`` minus the
  client's ``aborted_at``, both ``time.monotonic()`` on one machine. When a tag has several
  upstream records (a gateway's retry or fallback), the last one started is the one that was
  live when the client left.
- An upstream that never saw its client leave was *never cancelled* if it is still running,
  or if it completed later after the abort than the race window: ``race_window``, or the
  p99 of the delays this run measured if that is longer (a loaded gateway is slow to cancel,
  and a stream that ends within its usual delay says nothing). One that completed sooner
  *raced* the abort: nothing tells a slow cancel from a missing one. Streams much longer
  than the window leave no doubt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from gateway.bench.samples import RequestResult, UpstreamRecord

__all__ = [
    "Distribution",
    "Histogram",
    "Propagation",
    "Summary",
    "choose_edges",
    "describe",
    "histogram",
    "percentile",
    "propagation",
    "ratios",
    "summarize",
]

# Figures compared between the two endpoints of --compare: (name, how to read it).
_COMPARED: Final = (
    "throughput",
    "tokens_per_s",
    "headers.p50", "headers.p99",
    "first_token.p50", "first_token.p99",
    "total.p50", "total.p99",
    "gap.p50", "gap.p99",
)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending ``ordered``, interpolated linearly."""
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@attrs.frozen
class Distribution:
    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    def to_json(self) -> dict[str, float]:
        """Milliseconds, rounded to the microsecond; ``count`` as it is."""
        fields = attrs.asdict(self)
        return {k: v if k == "count" else round(v * 1000, 3) for k, v in fields.items()}


def describe(values: Iterable[float]) -> Distribution | None:
    """Count, mean, min, p50, p90, p99 and max of ``values``; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Distribution(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


@attrs.frozen
class Histogram:
    """Counts of values per bin. ``underflow``/``overflow`` count values outside the edges
    (zeros on a logarithmic axis, for instance)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    log: bool
    underflow: int = 0
    overflow: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts) + self.underflow + self.overflow

    def to_json(self) -> dict[str, Any]:
        return {
            "edges_ms": [round(edge * 1000, 4) for edge in self.edges],
            "counts": list(self.counts),
            "log": self.log,
            "underflow": self.underflow,
            "overflow": self.overflow,
        }


def choose_edges(
    samples: Sequence[Sequence[float]], bins: int = 40
) -> tuple[tuple[float, ...], bool] | None:
    """Bin edges shared by every sample set (so two endpoints draw on one axis), and whether
    they are logarithmic: they are when the positive values span more than a factor of 20
    (latencies usually do) and at most 1 % of the values are negative (a cancel delay can
    come out a few microseconds below zero: the upstream, on another core, saw the close
    before the client read its clock). Zeros and negatives then fall below the axis, into
    ``underflow``. None when there are no values."""
    if bins < 1:
        raise ValueError("bins must be positive")
    values = [v for sample in samples for v in sample if math.isfinite(v)]
    if not values:
        return None
    lowest, highest = min(values), max(values)
    positive = [v for v in values if v > 0]
    negative = sum(1 for v in values if v < 0)
    if negative <= len(values) // 100 and len(positive) >= 2 and max(positive) / min(positive) > 20:
        first, last = min(positive), max(positive)
        lo, hi = math.log(first), math.log(last)
        inner = [math.exp(lo + (hi - lo) * i / bins) for i in range(1, bins)]
        return (first, *inner, last), True  # exact ends: the extremes stay inside
    # A linear axis starts at 0 unless the values sit in a narrow band far from it.
    start = lowest if lowest < 0 or lowest > highest / 4 else 0.0
    if highest <= start:
        highest = start + 0.001
    inner = [start + (highest - start) * i / bins for i in range(1, bins)]
    return (start, *inner, highest), False


def histogram(values: Iterable[float], edges: Sequence[float], *, log: bool = False) -> Histogram:
    """Count ``values`` into the bins between ``edges`` (ascending; each bin holds its lower
    edge, the last bin also its upper one)."""
    if len(edges) < 2:
        raise ValueError("a histogram needs at least two edges")
    bins = len(edges) - 1
    counts = [0] * bins
    under = over = 0
    lo, hi = edges[0], edges[-1]
    log_lo = math.log(lo) if log and lo > 0 else 0.0
    step = (math.log(hi) - log_lo) / bins if log and lo > 0 else (hi - lo) / bins
    for value in values:
        if not math.isfinite(value) or value < lo:
            under += 1
            continue
        if value > hi:
            over += 1
            continue
        # Arithmetic gives the bin at once; the edge comparison fixes rounding at the edges.
        if step <= 0:
            i = 0
        elif log and lo > 0:
            i = int((math.log(value) - log_lo) / step)
        else:
            i = int((value - lo) / step)
        i = min(max(i, 0), bins - 1)
        while i > 0 and value < edges[i]:
            i -= 1
        while i < bins - 1 and value >= edges[i + 1]:
            i += 1
        counts[i] += 1
    return Histogram(tuple(edges), tuple(counts), log, under, over)


@attrs.frozen
class Propagation:
    """How the client's aborts reached the upstream, per the upstream's own records."""

    aborted: int  # requests the client aborted
    delays: Mapping[str, float]  # tag -> client_gone_at - aborted_at (seconds)
    distribution: Distribution | None
    never_cancelled: tuple[str, ...]  # tags whose upstream ran on: still running, or completed
    # later than the race window after the abort
    raced: int  # completed after the abort, within the race window: undecidable
    race_window: float  # the window used: the given one, or the delays' p99 if longer
    upstream_done_first: int  # the upstream had already finished when the client left
    not_reached: int  # no upstream record: aborted before the request got there
    ended_otherwise: int  # the upstream ended another way (cut, reset, error) unasked

    def to_json(self) -> dict[str, Any]:
        return {
            "aborted": self.aborted,
            "measured": len(self.delays),
            "delay_ms": self.distribution.to_json() if self.distribution else None,
            "never_cancelled": len(self.never_cancelled),
            "never_cancelled_tags": list(self.never_cancelled[:100]),
            "raced": self.raced,
            "race_window_ms": round(self.race_window * 1000, 3),
            "upstream_done_first": self.upstream_done_first,
            "not_reached": self.not_reached,
            "ended_otherwise": self.ended_otherwise,
        }


def propagation(
    results: Iterable[RequestResult],
    records: Iterable[UpstreamRecord],
    *,
    race_window: float = 0.05,
) -> Propagation:
    """Match aborted requests to upstream records by tag; see the module rules."""
    latest: dict[str, UpstreamRecord] = {}
    for record in records:
        if record.tag is None:
            continue
        seen = latest.get(record.tag)
        if seen is None or record.started_at >= seen.started_at:
            latest[record.tag] = record
    aborted = [r for r in results if r.outcome == "aborted" and r.aborted_at is not None]
    delays: dict[str, float] = {}
    for result in aborted:
        found = latest.get(result.tag)
        if found is not None and found.client_gone_at is not None:
            assert result.aborted_at is not None  # selected above
            delays[result.tag] = found.client_gone_at - result.aborted_at
    distribution = describe(delays.values())
    window = max(race_window, distribution.p99 if distribution else 0.0)
    never: list[str] = []
    done_first = not_reached = otherwise = raced = 0
    for result in aborted:
        assert result.aborted_at is not None  # selected above
        found = latest.get(result.tag)
        if found is None:
            not_reached += 1
        elif found.client_gone_at is not None:
            continue  # measured above
        elif found.outcome == "running":
            never.append(result.tag)
        elif found.outcome == "completed":
            ended = found.ended_at if found.ended_at is not None else math.inf
            if ended <= result.aborted_at:
                done_first += 1
            elif ended - result.aborted_at <= window:
                raced += 1
            else:
                never.append(result.tag)
        else:
            otherwise += 1
    return Propagation(
        aborted=len(aborted),
        delays=delays,
        distribution=distribution,
        never_cancelled=tuple(never),
        raced=raced,
        race_window=window,
        upstream_done_first=done_first,
        not_reached=not_reached,
        ended_otherwise=otherwise,
    )


@attrs.frozen
class Summary:
    """The figures of one endpoint over one run."""

    target: str
    url: str
    requests: int
    completed: int  # outcome ok
    aborted: int
    outcomes: Mapping[str, int]
    errors: Mapping[str, int]  # error_kind -> count
    wall: float  # seconds the endpoint's batches took, added up
    throughput: float  # completed / wall
    requests_per_s: float  # requests / wall
    tokens: int  # content deltas received, aborted requests' included
    tokens_per_s: float
    headers: Distribution | None  # start -> response head
    first_token: Distribution | None  # start -> first content delta (streams)
    total: Distribution | None  # start -> end, completed requests only
    gap: Distribution | None  # between content deltas
    connects: int  # TCP connections opened (keep-alive reuse makes it small)
    client_cpu: float  # seconds of the bench's own process during this endpoint's batches
    server_cpu: float | None  # seconds of --gateway-pid (and children), if given
    propagation: Propagation | None

    @property
    def client_cpu_per_request(self) -> float:
        return self.client_cpu / self.requests if self.requests else 0.0

    @property
    def server_cpu_per_completed(self) -> float | None:
        if self.server_cpu is None or not self.completed:
            return None
        return self.server_cpu / self.completed

    def figure(self, name: str) -> float | None:
        """A figure by dotted name: ``throughput`` or ``total.p99``."""
        head, _, tail = name.partition(".")
        value = getattr(self, head)
        if tail:
            return None if value is None else float(getattr(value, tail))
        return float(value)

    def to_json(self) -> dict[str, Any]:
        def dist(value: Distribution | None) -> dict[str, float] | None:
            return None if value is None else value.to_json()

        cpu = self.server_cpu_per_completed
        return {
            "target": self.target,
            "url": self.url,
            "requests": self.requests,
            "completed": self.completed,
            "aborted": self.aborted,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "wall_s": round(self.wall, 6),
            "throughput_rps": self.throughput,
            "requests_per_s": self.requests_per_s,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "headers_ms": dist(self.headers),
            "first_token_ms": dist(self.first_token),
            "total_ms": dist(self.total),
            "gap_ms": dist(self.gap),
            "connects": self.connects,
            "client_cpu_s": round(self.client_cpu, 6),
            "client_cpu_ms_per_request": round(self.client_cpu_per_request * 1000, 4),
            "gateway_cpu_s": self.server_cpu,
            "gateway_cpu_ms_per_request": None if cpu is None else round(cpu * 1000, 4),
            "propagation": self.propagation.to_json() if self.propagation else None,
        }


def summarize(
    target: str,
    url: str,
    results: Sequence[RequestResult],
    wall: float,
    *,
    connects: int = 0,
    client_cpu: float = 0.0,
    server_cpu: float | None = None,
    propagation: Propagation | None = None,
) -> Summary:
    """The figures of ``results``, all from one endpoint, measured over ``wall`` seconds."""
    outcomes = Counter(r.outcome for r in results)
    errors = Counter(r.error_kind for r in results if r.error_kind is not None)
    completed = outcomes["ok"]
    tokens = sum(r.tokens for r in results)
    per_second = 1 / wall if wall > 0 else 0.0
    return Summary(
        target=target,
        url=url,
        requests=len(results),
        completed=completed,
        aborted=outcomes["aborted"],
        outcomes=dict(sorted(outcomes.items())),
        errors=dict(errors.most_common()),
        wall=wall,
        throughput=completed / wall if wall > 0 else 0.0,
        requests_per_s=len(results) * per_second,
        tokens=tokens,
        tokens_per_s=tokens * per_second,
        headers=describe(t for r in results if (t := r.time_to_headers) is not None),
        first_token=describe(t for r in results if (t := r.time_to_first_token) is not None),
        total=describe(r.total for r in results if r.outcome == "ok"),
        gap=describe(gap for r in results for gap in r.gaps),
        connects=connects,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        propagation=propagation,
    )


def ratios(a: Summary, b: Summary) -> dict[str, dict[str, float | None]]:
    """Each compared figure of both endpoints, with B/A and A/B (None where undefined)."""
    table: dict[str, dict[str, float | None]] = {}
    for name in _COMPARED:
        x, y = a.figure(name), b.figure(name)
        table[name] = {
            "a": x,
            "b": y,
            "b_over_a": y / x if x and y is not None else None,
            "a_over_b": x / y if y and x is not None else None,
        }
    return table
