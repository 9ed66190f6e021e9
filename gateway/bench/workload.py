"""The run: workers, the abort plan, compare alternation, CPU samples, the upstream's records.

Rules:
- Closed loop: C worker tasks per batch take request indices from one shared iterator, so
  each index runs exactly once and every worker loop is bounded by the batch's size. Open
  loop (``rate``): one task starts each request at its arrival time (Poisson or evenly
  spaced, drawn from ``seed``), at most C in flight; a request is timed from when it was
  due, so a gateway that falls behind shows it in its latency. Each request is bounded by
  ``timeout`` and the whole run by ``max_seconds``.
- ``route`` picks the client dialect (``routes.py``): path, key header, body, and how its
  stream's events are read.
- The abort plan is drawn once from ``seed``: exactly ``round(fraction * requests)`` requests
  abort, and under ``--compare`` both endpoints run the very same plan.
- ``--compare`` alternates batches between the endpoints, flipping which goes first each
  round (A B, B A, A B, ...), so machine noise and warm-up hit both alike; an endpoint's wall
  time, CPU samples and figures come from its own batches only.
- Every request carries ``#sim tokens=T interval_ms=I tag=<run>-<i>`` in its last user
  message; the tag finds its record at the fake upstream (``GET /_sim/requests``), read after
  the run, for up to ``grace`` seconds while aborted requests still show "running".
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import attrs
import trio

from gateway.bench import cpu, stats
from gateway.bench.client import Pool, RequestSpec, fetch_json, perform, render
from gateway.bench.http1 import Endpoint, ProtocolError
from gateway.bench.progress import Progress
from gateway.bench.routes import ROUTES
from gateway.bench.samples import RequestResult, UpstreamRecord

__all__ = ["RunResult", "Settings", "Target", "TargetRun", "plan_aborts", "run"]

SIM_FETCH_TIMEOUT = 30.0
SIM_POLL_INTERVAL = 0.05
SIM_TAG_QUERIES = 50  # beyond this many unsettled tags, fetch all records again


@attrs.frozen
class Settings:
    """The workload, as the options give it. Times in seconds unless named ``_ms``."""

    requests: int = 100
    concurrency: int = 10
    stream: bool = True
    model: str = "sim/lorem"
    tokens: int | None = None  # None: the upstream's default
    interval_ms: float | None = None
    abort_fraction: float = 0.0
    abort_at_ms: float | None = None
    abort_random_ms: tuple[float, float] | None = None
    timeout: float = 60.0
    seed: int = 0
    batch: int | None = None  # requests per batch under --compare
    grace: float = 1.0
    race_window: float = 0.05  # see stats.propagation
    max_seconds: float = 3600.0
    prompt: str = "Count to ten, slowly."
    route: str = "chat"  # the client dialect (``routes.ROUTES``)
    # Open loop: requests arrive at this many per second (``arrivals``: Poisson or evenly
    # spaced) whatever the answers do, at most ``concurrency`` in flight; None: closed loop,
    # ``concurrency`` workers each sending its next request when the last one ends.
    rate: float | None = None
    arrivals: str = "poisson"

    def __attrs_post_init__(self) -> None:
        if self.requests < 1 or self.concurrency < 1:
            raise ValueError("requests and concurrency must be at least 1")
        if not 0 <= self.abort_fraction <= 1:
            raise ValueError("abort fraction must be between 0 and 1")
        if self.abort_fraction and self.abort_at_ms is None and self.abort_random_ms is None:
            raise ValueError("an abort fraction needs --abort-at-ms or --abort-random-ms")
        if self.abort_random_ms is not None:
            low, high = self.abort_random_ms
            if not 0 <= low <= high:
                raise ValueError("--abort-random-ms LO:HI needs 0 <= LO <= HI")
        if self.abort_at_ms is not None and self.abort_at_ms < 0:
            raise ValueError("--abort-at-ms must not be negative")
        if not (self.timeout > 0 and self.max_seconds > 0):
            raise ValueError("timeout and max seconds must be positive")
        if self.grace < 0 or self.race_window < 0:
            raise ValueError("grace and race window must not be negative")
        if self.batch is not None and self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.route not in ROUTES:
            raise ValueError(f"no such route {self.route!r}: one of {', '.join(ROUTES)}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("--rate must be positive")
        if self.arrivals not in ("poisson", "fixed"):
            raise ValueError("arrivals are 'poisson' or 'fixed'")

    def batch_size(self) -> int:
        """Requests per batch under --compare: ten rounds unless told, and never fewer
        requests than two per worker."""
        if self.batch is not None:
            return self.batch
        return max(self.concurrency * 2, math.ceil(self.requests / 10))

    def body(self, tag: str) -> dict[str, Any]:
        directive = ["#sim"]
        if self.tokens is not None:
            directive.append(f"tokens={self.tokens}")
        if self.interval_ms is not None:
            directive.append(f"interval_ms={self.interval_ms:g}")
        directive.append(f"tag={tag}")
        text = f"{self.prompt}\n{' '.join(directive)}"
        return ROUTES[self.route].body(self.model, self.stream, text)

    def arrival_gaps(self) -> Iterator[float]:
        """Seconds between one arrival and the next (open loop), drawn from ``seed``."""
        assert self.rate is not None
        rng = random.Random(self.seed ^ 0x5EED)
        while True:
            yield rng.expovariate(self.rate) if self.arrivals == "poisson" else 1 / self.rate


@attrs.frozen
class Target:
    label: str  # "A", or "B" for the --compare endpoint
    url: str
    key: str | None = None
    pid: int | None = None  # a process to charge CPU to (the gateway)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.parse(self.url)


@attrs.frozen
class TargetRun:
    target: Target
    run_id: str  # this endpoint's tags are "<run_id>-<index>"
    results: tuple[RequestResult, ...]
    summary: stats.Summary


@attrs.frozen
class RunResult:
    run_id: str
    started: float  # time.time() at the start
    settings: Settings
    runs: tuple[TargetRun, ...]
    sim_url: str | None
    sim_error: str | None  # why the upstream's records could not be read
    cut_short: bool  # max_seconds passed before every request ran

    @property
    def ratios(self) -> dict[str, dict[str, float | None]] | None:
        if len(self.runs) != 2:
            return None
        return stats.ratios(self.runs[0].summary, self.runs[1].summary)


def plan_aborts(settings: Settings) -> list[float | None]:
    """Per request index, seconds after its start to abort it, or None."""
    rng = random.Random(settings.seed)
    count = round(settings.abort_fraction * settings.requests)
    plan: list[float | None] = [None] * settings.requests
    for index in sorted(rng.sample(range(settings.requests), count)):
        if settings.abort_random_ms is not None:
            plan[index] = rng.uniform(*settings.abort_random_ms) / 1000
        else:
            assert settings.abort_at_ms is not None  # checked by Settings
            plan[index] = settings.abort_at_ms / 1000
    return plan


def _batches(settings: Settings, labels: Sequence[str]) -> Iterator[tuple[str, range]]:
    if len(labels) == 1:
        yield labels[0], range(settings.requests)
        return
    size = settings.batch_size()
    for round_, start in enumerate(range(0, settings.requests, size)):
        indices = range(start, min(start + size, settings.requests))
        for label in labels if round_ % 2 == 0 else reversed(labels):
            yield label, indices


@attrs.define
class _Tally:
    """One endpoint's measurements while the run goes on (task-local to ``run``)."""

    target: Target
    run_id: str
    pool: Pool
    results: list[RequestResult] = attrs.field(factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None


async def _batch(
    tally: _Tally,
    indices: range,
    settings: Settings,
    aborts: list[float | None],
    progress: Progress | None,
) -> None:
    endpoint, key, label = tally.pool.endpoint, tally.target.key, tally.target.label
    route = ROUTES[settings.route]

    async def one(index: int, due: float | None = None) -> None:
        tag = f"{tally.run_id}-{index}"
        payload = render(endpoint, key, route, settings.body(tag), settings.model,
                         stream=settings.stream)
        spec = RequestSpec(index, label, tag, settings.stream, payload, aborts[index],
                           route, due)
        result = await perform(tally.pool, spec, settings.timeout)
        tally.results.append(result)
        if progress is not None:
            progress.advance(result)

    if settings.rate is not None:
        await _open_loop(indices, settings, one)
        return
    todo = iter(indices)

    async def worker() -> None:
        for index in todo:  # shared: each index is taken by exactly one worker
            await one(index)

    async with trio.open_nursery() as nursery:
        for _ in range(min(settings.concurrency, len(indices))):
            nursery.start_soon(worker)


async def _open_loop(indices: range, settings: Settings,
                     one: Callable[[int, float], Awaitable[None]]) -> None:
    """Start each request at its arrival time, whatever the others do; at most
    ``concurrency`` in flight, a request that finds none free waits, and its wait counts
    (it is timed from when it was due)."""
    slots = trio.Semaphore(settings.concurrency)
    gaps = settings.arrival_gaps()

    async def due_at(index: int, due: float) -> None:
        async with slots:
            await one(index, due)

    async with trio.open_nursery() as nursery:
        due = time.monotonic()
        for index in indices:
            delay = due - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
            nursery.start_soon(due_at, index, due)
            due += next(gaps)


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu.tree_cpu_seconds(pid)
    except ProcessLookupError:
        return None


async def run(
    settings: Settings,
    targets: Sequence[Target],
    *,
    sim_url: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Run the workload against one endpoint, or two in alternation; then read the
    upstream's records (with ``sim_url``) and summarise."""
    if not 1 <= len(targets) <= 2:
        raise ValueError("one endpoint, or two to compare")
    run_id = run_id or secrets.token_hex(4)
    started = time.time()
    aborts = plan_aborts(settings)
    tallies = {
        t.label: _Tally(t, run_id if len(targets) == 1 else f"{run_id}{t.label.lower()}",
                        Pool(t.endpoint))
        for t in targets
    }
    cut_short = False
    try:
        async with trio.open_nursery() as nursery:
            if progress is not None:
                nursery.start_soon(progress.run)
            with trio.move_on_after(settings.max_seconds) as whole:
                for label, indices in _batches(settings, [t.label for t in targets]):
                    tally = tallies[label]
                    server_before = _cpu(tally.target.pid)
                    client_before = time.process_time()
                    begun = time.monotonic()
                    await _batch(tally, indices, settings, aborts, progress)
                    tally.wall += time.monotonic() - begun
                    tally.client_cpu += time.process_time() - client_before
                    server_after = _cpu(tally.target.pid)
                    if server_before is not None and server_after is not None:
                        tally.server_cpu = (tally.server_cpu or 0.0) + server_after - server_before
            cut_short = whole.cancelled_caught
            nursery.cancel_scope.cancel("workload done: stop the progress line")
    finally:
        for tally in tallies.values():
            tally.pool.close()
        if progress is not None:
            progress.finish()
    records: list[UpstreamRecord] = []
    sim_error = None
    if sim_url is not None:
        try:
            records = await _upstream_records(sim_url, list(tallies.values()), settings.grace)
        except (OSError, ProtocolError, ValueError, trio.TooSlowError) as exc:
            sim_error = f"{type(exc).__name__}: {exc}"
    runs = []
    for tally in tallies.values():
        results = sorted(tally.results, key=lambda r: r.index)
        mine = [r for r in records if r.tag is not None and r.tag.startswith(tally.run_id + "-")]
        summary = stats.summarize(
            tally.target.label,
            tally.target.url,
            results,
            tally.wall,
            connects=tally.pool.connects,
            client_cpu=tally.client_cpu,
            server_cpu=tally.server_cpu,
            propagation=(
                stats.propagation(results, mine, race_window=settings.race_window)
                if sim_url and not sim_error else None
            ),
        )
        runs.append(TargetRun(tally.target, tally.run_id, tuple(results), summary))
    return RunResult(run_id, started, settings, tuple(runs), sim_url, sim_error, cut_short)


async def _upstream_records(
    sim_url: str, tallies: Sequence[_Tally], grace: float
) -> list[UpstreamRecord]:
    """The upstream's records of this run; re-read for up to ``grace`` seconds while an
    aborted request's record still shows the upstream running."""
    sim = Endpoint.parse(sim_url)
    prefixes = tuple(f"{tally.run_id}-" for tally in tallies)
    aborted = {r.tag for tally in tallies for r in tally.results if r.outcome == "aborted"}
    target = sim.base_path + "/_sim/requests"

    def parse(raw: object) -> dict[str, list[UpstreamRecord]]:
        if not isinstance(raw, list):
            raise ValueError("GET /_sim/requests: expected a list")
        found: dict[str, list[UpstreamRecord]] = {}
        for item in raw:
            record = UpstreamRecord.from_json(item)
            if record.tag is not None and record.tag.startswith(prefixes):
                found.setdefault(record.tag, []).append(record)
        return found

    with trio.fail_after(SIM_FETCH_TIMEOUT):
        by_tag = parse(await fetch_json(sim, target))
    deadline = time.monotonic() + grace
    while True:  # bounded by the grace deadline
        unsettled = [
            tag for tag in aborted
            if any(r.outcome == "running" and r.client_gone_at is None for r in by_tag.get(tag, ()))
        ]
        if not unsettled or time.monotonic() >= deadline:
            break
        await trio.sleep(SIM_POLL_INTERVAL)
        with trio.fail_after(SIM_FETCH_TIMEOUT):
            if len(unsettled) > SIM_TAG_QUERIES:
                by_tag = parse(await fetch_json(sim, target))
                continue
            for tag in unsettled:
                query = f"{target}?tag={quote(tag, safe='')}"
                by_tag.update(parse(await fetch_json(sim, query)))
    return [record for records in by_tag.values() for record in records]
