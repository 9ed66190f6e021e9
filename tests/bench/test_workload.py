"""Whole runs on loopback: the bench against a gateway and against the fake upstream directly.

Every figure the bench reports about cancellation is recomputed here from the fake upstream's
own records (in-process, not over HTTP as the bench read them), request by request.

The gateway, the fake upstream and the bench share one Trio thread here, so at concurrency 8
the gateway takes 40-65 ms to forward a request: an abort at 20 ms would never reach the
upstream (measured: 18-20 of 20 "not reached"). The aborts therefore come at 50 ms, into
100 ms streams, where most of them land mid-stream.
"""

from __future__ import annotations

import json
import statistics
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

from gateway.bench import report, workload
from gateway.bench.samples import RequestResult
from gateway.bench.workload import RunResult, Settings, Target, TargetRun
from tests.support.gateways import GatewayFactory, Sim

SETTINGS = Settings(
    requests=40,
    concurrency=8,
    model="fake/lorem",
    tokens=10,
    interval_ms=10,
    abort_fraction=0.5,
    abort_at_ms=50,
    timeout=10,
    grace=2.0,
)


def expected_delays(sim: Sim, results: tuple[RequestResult, ...]) -> dict[str, float]:
    """client_gone_at - aborted_at per aborted request, from the upstream's records."""
    delays = {}
    for result in results:
        if result.outcome != "aborted":
            continue
        records = sim.records(result.tag)
        if not records:
            continue
        latest = max(records, key=lambda r: r.started_at)
        if latest.client_gone_at is not None:
            assert result.aborted_at is not None
            delays[result.tag] = latest.client_gone_at - result.aborted_at
    return delays


def check_run(run: TargetRun, sim: Sim, settings: Settings) -> None:
    summary = run.summary
    # Every request counted once, in order; exactly the planned ones aborted.
    assert [r.index for r in run.results] == list(range(settings.requests))
    assert summary.requests == settings.requests
    planned = {i for i, after in enumerate(workload.plan_aborts(settings)) if after is not None}
    assert len(planned) == round(settings.requests * settings.abort_fraction)
    assert {r.index for r in run.results if r.abort_after is not None} == planned
    assert {r.index for r in run.results if r.outcome == "aborted"} <= planned
    assert set(summary.outcomes) <= {"ok", "aborted"}, summary.errors
    assert summary.completed + summary.aborted == settings.requests
    assert summary.aborted > 0
    # Throughput is completed requests over the measured wall time.
    assert summary.wall > 0
    assert summary.throughput == summary.completed / summary.wall
    assert summary.tokens == sum(r.tokens for r in run.results)
    assert all(r.tokens == 10 for r in run.results if r.outcome == "ok")
    # Cancel propagation agrees with the upstream's records, request by request.
    prop = summary.propagation
    assert prop is not None
    delays = expected_delays(sim, run.results)
    assert dict(prop.delays) == delays
    assert prop.aborted == summary.aborted
    assert prop.never_cancelled == ()
    settled = len(delays) + prop.raced + prop.upstream_done_first + prop.not_reached
    assert settled == prop.aborted
    assert prop.ended_otherwise == 0
    assert delays, "no abort reached a running upstream stream"
    assert all(0 <= delay < 0.25 for delay in delays.values())
    dist = prop.distribution
    assert dist is not None and dist.count == len(delays)
    assert dist.max == max(delays.values())
    assert dist.p50 == pytest.approx(statistics.median(delays.values()), abs=1e-12)
    if len(delays) > 1:
        p99 = statistics.quantiles(delays.values(), n=100, method="inclusive")[98]
        assert dist.p99 == pytest.approx(p99, abs=1e-12)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.seen.append(tag)
        if tag not in {"meta", "br"}:  # void elements; SVG ones close themselves
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: object) -> None:
        self.seen.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (self.open[-5:], tag)
        self.open.pop()


def check_files(result: RunResult, tmp_path: Path) -> str:
    json_path, html_path = tmp_path / "bench.json", tmp_path / "bench.html"
    report.write_json(result, json_path)
    report.write_html(result, html_path)
    data = json.loads(json_path.read_text())
    assert data["run_id"] == result.run_id
    assert len(data["requests"]) == sum(len(run.results) for run in result.runs)
    assert data["targets"][0]["throughput_rps"] == result.runs[0].summary.throughput
    html = html_path.read_text()
    tags = _Tags()
    tags.feed(html)
    tags.close()
    assert tags.open == [] and tags.seen.count("svg") >= 4, tags.seen.count("svg")
    assert "<svg" in html and "Cancel propagation" in html
    return html


async def test_run_through_the_gateway(
    sim: Sim, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    async with start_gateway() as gw:
        result = await workload.run(SETTINGS, [Target("A", gw.url, gw.key)], sim_url=sim.url)
    assert result.sim_error is None and not result.cut_short
    [run] = result.runs
    check_run(run, sim, SETTINGS)
    # The tags reached the upstream through the gateway: every completed request has one
    # record that completed and sent every token.
    for r in run.results:
        if r.outcome == "ok":
            [record] = sim.records(r.tag)
            assert (record.outcome, record.tokens_sent) == ("completed", 10)
    assert run.summary.connects < SETTINGS.requests  # keep-alive reuse
    html = check_files(result, tmp_path)
    assert gw.url in html
    assert "never cancelled" in report.text_summary(result)


async def test_run_against_the_fake_upstream_directly(sim: Sim, tmp_path: Path) -> None:
    settings = Settings(
        requests=30, concurrency=6, model="fake/lorem", tokens=10, interval_ms=2,
        abort_fraction=0.5, abort_random_ms=(5, 15), timeout=10, grace=2.0, seed=7,
    )
    result = await workload.run(settings, [Target("A", sim.url)], sim_url=sim.url, run_id="direct")
    [run] = result.runs
    assert run.run_id == "direct" and run.results[0].tag == "direct-0"
    check_run(run, sim, settings)
    aborts = [r.abort_after for r in run.results if r.abort_after is not None]
    assert all(0.005 <= a <= 0.015 for a in aborts) and len(set(aborts)) > 1
    check_files(result, tmp_path)


async def test_compare_alternates_batches(
    sim: Sim, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    settings = Settings(
        requests=24, concurrency=4, batch=6, model="fake/lorem", tokens=5, interval_ms=4,
        abort_fraction=0.25, abort_at_ms=10, timeout=10, grace=2.0,
    )
    async with start_gateway() as gw:
        result = await workload.run(
            settings, [Target("A", gw.url, gw.key), Target("B", sim.url)], sim_url=sim.url
        )
    a, b = result.runs
    assert (a.run_id, b.run_id) == (result.run_id + "a", result.run_id + "b")
    for run in result.runs:
        assert [r.index for r in run.results] == list(range(24))
        assert run.summary.propagation is not None
        assert run.summary.propagation.never_cancelled == ()
        assert dict(run.summary.propagation.delays) == expected_delays(sim, run.results)
    # The same abort plan on both sides.
    assert [r.abort_after for r in a.results] == [r.abort_after for r in b.results]
    # Batches alternate A B, B A, A B, B A: the upstream saw them in that order. (Only the
    # completed requests: a gateway may forward an aborted one after its batch is over.)
    order: list[tuple[str, int]] = []
    for record in sim.records():
        if record.outcome != "completed":
            continue
        label = "A" if record.tag and record.tag.startswith(a.run_id + "-") else "B"
        index = int((record.tag or "-0").rsplit("-", 1)[1])
        if not order or order[-1] != (label, index // 6):
            order.append((label, index // 6))
    assert order == [("A", 0), ("B", 0), ("B", 1), ("A", 1), ("A", 2), ("B", 2), ("B", 3),
                     ("A", 3)]
    ratios = result.ratios
    assert ratios is not None
    assert ratios["throughput"]["b_over_a"] == pytest.approx(
        b.summary.throughput / a.summary.throughput)
    html = check_files(result, tmp_path)
    assert "A against B" in html
    assert "B/A" in report.text_summary(result)


async def test_without_sim_url_no_propagation_is_claimed(sim: Sim) -> None:
    settings = Settings(requests=4, concurrency=2, model="fake/lorem", tokens=2, interval_ms=1,
                        timeout=10)
    result = await workload.run(settings, [Target("A", sim.url)])
    assert result.runs[0].summary.propagation is None
    assert result.runs[0].summary.completed == 4


async def test_unreachable_sim_url_is_reported_not_raised(sim: Sim) -> None:
    settings = Settings(requests=2, concurrency=1, model="fake/lorem", tokens=1, timeout=10)
    result = await workload.run(settings, [Target("A", sim.url)], sim_url="http://127.0.0.1:1")
    assert result.sim_error is not None and "Connection refused" in result.sim_error
    assert result.runs[0].summary.propagation is None
    assert "upstream records unavailable" in report.text_summary(result)


@pytest.mark.parametrize("route", ["chat", "messages", "gemini", "responses"])
@pytest.mark.parametrize("stream", [True, False])
async def test_every_client_dialect_through_the_gateway(
    sim: Sim, start_gateway: GatewayFactory, route: str, stream: bool
) -> None:
    """Each route's requests reach the upstream, its answers are read in its own wire
    format (tokens counted), and a streamed client's aborts reach the upstream too."""
    settings = attrs.evolve(SETTINGS, requests=16, concurrency=4, route=route, stream=stream,
                            abort_fraction=0.5 if stream else 0.0,
                            abort_at_ms=50 if stream else None)
    async with start_gateway() as gw:
        result = await workload.run(settings, [Target("A", gw.url, gw.key)], sim_url=sim.url)
    [run] = result.runs
    assert set(run.summary.outcomes) <= {"ok", "aborted"}, run.summary.errors
    finished = [r for r in run.results if r.outcome == "ok"]
    assert finished and all(r.tokens == 10 for r in finished)
    for r in finished:
        [record] = sim.records(r.tag)
        assert (record.outcome, record.tokens_sent) == ("completed", 10)
    if stream:
        assert all(r.first_token_at is not None for r in finished)
        prop = run.summary.propagation
        assert prop is not None and prop.never_cancelled == ()
        assert prop.delays, "no abort reached a running upstream stream"


async def test_open_loop_arrivals_are_due_on_schedule_and_waits_count(sim: Sim) -> None:
    """Evenly spaced arrivals at 100/s: each request is due exactly 10 ms after the last,
    and timed from then. With one in flight at a time and 100 ms answers, the later ones
    wait for the earlier: their wait is in their latency (no coordinated omission)."""
    settings = attrs.evolve(SETTINGS, requests=5, concurrency=1, rate=100.0, arrivals="fixed",
                            abort_fraction=0.0, abort_at_ms=None)
    result = await workload.run(settings, [Target("A", sim.url)])
    [run] = result.runs
    assert run.summary.completed == 5
    dues = [r.started_at for r in run.results]
    assert [round(d - dues[0], 9) for d in dues] == [0.0, 0.01, 0.02, 0.03, 0.04]
    last = run.results[-1]
    # Four 100 ms answers ran before it could start: due 40 ms in, done after 400 ms+.
    assert last.total > 0.3


def test_poisson_arrivals_are_drawn_from_the_seed() -> None:
    settings = Settings(rate=50.0, seed=3)
    first = [gap for gap, _ in zip(settings.arrival_gaps(), range(2000), strict=False)]
    again = [gap for gap, _ in zip(settings.arrival_gaps(), range(2000), strict=False)]
    assert first == again and len(set(first)) == len(first)
    assert statistics.mean(first) == pytest.approx(1 / 50, rel=0.1)
    assert Settings(rate=50.0, arrivals="fixed").arrival_gaps().__next__() == 0.02
    with pytest.raises(ValueError, match="route"):
        Settings(route="grpc")
