"""What a run tells a person: the JSON result, a text summary and an HTML report.

Rules:
- Reads a finished ``RunResult``; computes nothing that ``stats`` does not define (the
  histograms are ``stats.histogram`` over ``stats.choose_edges`` shared by both endpoints).
- The HTML is one self-contained file: inline CSS and SVG, no scripts, no network, so it
  opens anywhere and can be attached to an issue. Every text from outside is escaped.
- JSON numbers are milliseconds where a key says ``_ms``, seconds where it says ``_s``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any, Final

import attrs

from gateway.bench import stats
from gateway.bench.stats import Distribution, Histogram, Summary
from gateway.bench.svg import Series, format_ms, histogram_chart
from gateway.bench.workload import RunResult, Settings, TargetRun

__all__ = ["Chart", "charts", "render_html", "text_summary", "to_json", "write_html", "write_json"]

COLORS: Final = {"A": "#2563eb", "B": "#ea580c"}

# metric -> (chart title, values of one endpoint's run)
_METRICS: Final[dict[str, tuple[str, Callable[[TargetRun], list[float]]]]] = {
    "first_token": ("Time to first token", lambda run: [
        t for r in run.results if (t := r.time_to_first_token) is not None]),
    "total": ("Total time (completed requests)", lambda run: [
        r.total for r in run.results if r.outcome == "ok"]),
    "gap": ("Gap between content chunks", lambda run: [g for r in run.results for g in r.gaps]),
    "propagation": ("Cancel propagation (client close \u2192 upstream sees it)", lambda run: (
        list(run.summary.propagation.delays.values()) if run.summary.propagation else [])),
    "headers": ("Time to response headers", lambda run: [
        t for r in run.results if (t := r.time_to_headers) is not None]),
}


@attrs.frozen
class Chart:
    metric: str
    title: str
    histograms: dict[str, Histogram]  # endpoint label -> counts on shared edges
    distributions: dict[str, Distribution | None]


def charts(result: RunResult, bins: int = 40) -> list[Chart]:
    """One chart per metric that has values, both endpoints on shared bin edges."""
    out = []
    for metric, (title, values_of) in _METRICS.items():
        values = {run.target.label: values_of(run) for run in result.runs}
        chosen = stats.choose_edges(list(values.values()), bins)
        if chosen is None:
            continue
        edges, log = chosen
        out.append(Chart(
            metric,
            title,
            {label: stats.histogram(v, edges, log=log) for label, v in values.items()},
            {label: stats.describe(v) for label, v in values.items()},
        ))
    return out


def _settings_json(settings: Settings) -> dict[str, Any]:
    data = attrs.asdict(settings)
    if settings.abort_random_ms is not None:
        data["abort_random_ms"] = list(settings.abort_random_ms)
    return data


def to_json(result: RunResult, *, requests: bool = True) -> dict[str, Any]:
    """The whole result; ``requests`` adds one row per request."""
    data: dict[str, Any] = {
        "run_id": result.run_id,
        "started": datetime.datetime.fromtimestamp(result.started, datetime.UTC).isoformat(),
        "settings": _settings_json(result.settings),
        "cut_short": result.cut_short,
        "sim": {"url": result.sim_url, "error": result.sim_error},
        "targets": [run.summary.to_json() | {"run_id": run.run_id} for run in result.runs],
        "compare": result.ratios,
        "histograms": {
            chart.metric: {label: h.to_json() for label, h in chart.histograms.items()}
            for chart in charts(result)
        },
    }
    if requests:
        data["requests"] = [r.to_json() for run in result.runs for r in run.results]
    return data


def write_json(result: RunResult, path: Path) -> None:
    path.write_text(json.dumps(to_json(result), indent=1) + "\n")


def describe_workload(settings: Settings) -> str:
    parts = [
        f"{settings.requests} {'streamed' if settings.stream else 'non-streamed'} "
        f"{settings.route} requests",
        f"concurrency {settings.concurrency}" if settings.rate is None
        else f"open loop at {settings.rate:g}/s ({settings.arrivals}, at most "
             f"{settings.concurrency} in flight)",
        f"model {settings.model}",
    ]
    if settings.tokens is not None or settings.interval_ms is not None:
        tokens = settings.tokens if settings.tokens is not None else "default"
        every = f" every {settings.interval_ms:g} ms" if settings.interval_ms is not None else ""
        parts.append(f"{tokens} tokens{every}")
    if settings.abort_fraction:
        when = (f"at {settings.abort_at_ms:g} ms" if settings.abort_random_ms is None
                else "between {:g} and {:g} ms".format(*settings.abort_random_ms))
        parts.append(f"{settings.abort_fraction:.0%} aborted {when}")
    return ", ".join(parts)


def _dist_line(name: str, dist: Distribution | None) -> str:
    if dist is None:
        return f"  {name:<19} -"
    return (f"  {name:<19} p50 {format_ms(dist.p50):>9}  p99 {format_ms(dist.p99):>9}  "
            f"max {format_ms(dist.max):>9}  (n={dist.count})")


def _summary_lines(summary: Summary) -> list[str]:
    errors = summary.requests - summary.completed - summary.aborted
    lines = [
        f"{summary.target}  {summary.url}",
        f"  requests {summary.requests}  completed {summary.completed}  aborted "
        f"{summary.aborted}  errors {errors}  connections {summary.connects}  "
        f"wall {summary.wall:.3f} s",
        f"  throughput {summary.throughput:.1f} req/s  ({summary.requests_per_s:.1f} req/s "
        f"all outcomes)  tokens {summary.tokens_per_s:.0f}/s",
        _dist_line("time to headers", summary.headers),
        _dist_line("time to 1st token", summary.first_token),
        _dist_line("total (completed)", summary.total),
        _dist_line("inter-chunk gap", summary.gap),
    ]
    prop = summary.propagation
    if prop is not None:
        lines.append(_dist_line("cancel propagation", prop.distribution))
        lines.append(
            f"  {'':<19} aborted {prop.aborted}: measured {len(prop.delays)}, never cancelled "
            f"{len(prop.never_cancelled)}, raced {prop.raced} (window "
            f"{format_ms(prop.race_window)}), upstream done first "
            f"{prop.upstream_done_first}, "
            f"not reached {prop.not_reached}, ended otherwise {prop.ended_otherwise}"
        )
    if summary.errors:
        kinds = ", ".join(f"{kind} x{count}" for kind, count in summary.errors.items())
        lines.append(f"  errors: {kinds}")
    cpu = f"  CPU: bench {summary.client_cpu_per_request * 1000:.3f} ms/request"
    per = summary.server_cpu_per_completed
    if per is not None:
        cpu += f", gateway {per * 1000:.3f} ms/completed request"
    lines.append(cpu)
    return lines


def _plain_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _plain_ms(value: float | None) -> str:
    return "-" if value is None else format_ms(value)


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def text_summary(result: RunResult) -> str:
    lines = [f"arouter bench  run {result.run_id}  {describe_workload(result.settings)}"]
    if result.cut_short:
        lines.append(f"  cut short: --max-seconds {result.settings.max_seconds:g} passed")
    if result.sim_error:
        lines.append(f"  upstream records unavailable: {result.sim_error}")
    for run in result.runs:
        lines += _summary_lines(run.summary)
    ratios = result.ratios
    if ratios:
        lines.append("compare                  A            B        B/A      A/B")
        for name, row in ratios.items():
            unit = name in ("throughput", "tokens_per_s")
            a, b = row["a"], row["b"]
            show = _plain_rate if unit else _plain_ms
            lines.append(f"  {name:<16} {show(a):>11}  {show(b):>11}  "
                         f"{_ratio_text(row['b_over_a']):>7}  {_ratio_text(row['a_over_b']):>7}")
    return "\n".join(lines)


# -- HTML -------------------------------------------------------------------------------

_CSS: Final = """
:root { color-scheme: light; }
body { margin: 0; background: #f3f4f6; color: #111827;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 48px; box-sizing: border-box; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.sub { color: #4b5563; margin: 0 0 14px; }
.targets { display: flex; gap: 10px; flex-wrap: wrap; margin-bottom: 8px; }
.chip { background: #fff; border-radius: 999px; padding: 4px 12px 4px 8px;
  box-shadow: 0 1px 2px #0001; font-size: 13px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 6px; vertical-align: -1px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(172px, 1fr)); gap: 12px; }
.card { background: #fff; border-radius: 10px; padding: 12px 14px; box-shadow: 0 1px 3px #0002; }
.card .k { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 22px; font-weight: 650; margin-top: 2px; white-space: nowrap; }
.card .v small { font-size: 13px; font-weight: 500; color: #6b7280; }
.card .d { color: #4b5563; font-size: 12px; margin-top: 1px; }
.card .v2 { font-size: 18px; font-weight: 650; margin-top: 6px; white-space: nowrap; }
.card .v2 small { font-size: 12px; font-weight: 500; color: #6b7280; }
.card .n { margin-top: 6px; font-size: 12px; font-weight: 600; color: #374151; }
.card.good { border-top: 4px solid #16a34a; } .card.bad { border-top: 4px solid #dc2626; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
.panel { background: #fff; border-radius: 10px; padding: 10px 8px 4px;
  box-shadow: 0 1px 3px #0002; }
.panel svg { width: 100%; height: auto; display: block; }
.legend { font-size: 12px; color: #4b5563; padding: 0 10px 6px; }
table { border-collapse: collapse; background: #fff; border-radius: 10px; overflow: hidden;
  box-shadow: 0 1px 3px #0002; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 12px; text-align: right; border-bottom: 1px solid #f0f0f0; }
th:first-child, td:first-child { text-align: left; }
th { background: #f9fafb; font-weight: 600; color: #374151; }
.faster { color: #15803d; font-weight: 600; } .slower { color: #b91c1c; font-weight: 600; }
details { margin-top: 24px; } pre { background: #fff; padding: 12px; border-radius: 8px;
  overflow: auto; font-size: 12px; }
footer { color: #6b7280; font-size: 12px; margin-top: 28px; }
"""


DASH: Final = "\u2013"


def _ms(value: float | None) -> str:
    return DASH if value is None else escape(format_ms(value))


def _rate(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f}"


# One endpoint's line on a card: (label, value, detail), HTML already escaped.
_Row = tuple[str, str, str]


def _card(
    key: str, rows: list[_Row], *, note: str = "", mood: str = "", tagged: bool = False
) -> str:
    """A figure card: a big value (one endpoint) or a line per endpoint, each with its
    colour dot (``tagged``, or more than one row), with details."""
    if len(rows) == 1 and not tagged:
        _, value, detail = rows[0]
        body = f'<div class="v">{value}</div><div class="d">{detail}</div>'
    else:
        body = "".join(
            f'<div class="v2"><span class="dot" style="background:{COLORS.get(label, "#6b7280")}">'
            f'</span>{value}</div><div class="d">{detail}</div>'
            for label, value, detail in rows
        )
    if note:
        body += f'<div class="n">{note}</div>'
    cls = f"card {mood}".strip()
    return f'<div class="{cls}"><div class="k">{escape(key)}</div>{body}</div>'


def _ratio_note(a: float | None, b: float | None) -> str:
    if a is None or b is None or not a:
        return ""
    return f"B/A {b / a:.2f}"


def _cards(result: RunResult) -> str:
    summaries = [run.summary for run in result.runs]
    compare = len(summaries) == 2

    def dist_rows(name: str) -> list[_Row]:
        rows = []
        for s in summaries:
            d: Distribution | None = getattr(s, name)
            rows.append((s.target, _ms(d.p50 if d else None), f"p99 {_ms(d.p99 if d else None)}"))
        return rows

    def note(name: str) -> str:
        return _ratio_note(*(s.figure(name) for s in summaries)) if compare else ""

    cards = [_card(
        "throughput",
        [(s.target, f"{s.throughput:,.1f}<small> req/s</small>",
          f"{s.completed:,} of {s.requests:,} completed in {s.wall:.2f} s") for s in summaries],
        note=note("throughput"),
    )]
    if result.settings.stream:
        cards.append(_card(
            "tokens",
            [(s.target, f"{s.tokens_per_s:,.0f}<small>/s</small>", f"{s.tokens:,} received")
             for s in summaries],
            note=note("tokens_per_s"),
        ))
        cards.append(_card("first token p50", dist_rows("first_token"),
                           note=note("first_token.p50")))
    cards.append(_card("total p50 (completed)", dist_rows("total"), note=note("total.p50")))
    if result.settings.stream:
        cards.append(_card("chunk gap p50", dist_rows("gap"), note=note("gap.p50")))
    if any(s.propagation is not None and s.propagation.aborted for s in summaries):
        rows: list[_Row] = []
        leaks: list[_Row] = []
        for s in summaries:
            prop = s.propagation
            if prop is None:
                continue
            d = prop.distribution
            detail = f"p99 {_ms(d.p99)}, max {_ms(d.max)}" if d else "none measured"
            rows.append((s.target, _ms(d.p50 if d else None), detail))
            leaks.append((s.target, str(len(prop.never_cancelled)),
                          f"of {prop.aborted} aborted; {prop.raced} raced"))
        cards.append(_card("cancel propagation p50", rows))
        bad = any(row[1] != "0" for row in leaks)
        cards.append(_card("never cancelled", leaks, mood="bad" if bad else "good"))
    error_rows: list[_Row] = []
    for s in summaries:
        errors = s.requests - s.completed - s.aborted
        top = next(iter(s.errors.items()), None)
        detail = f"most: {escape(top[0])} ({top[1]})" if top else f"{s.aborted} aborted on purpose"
        error_rows.append((s.target, f"{errors:,}", detail))
    bad = any(row[1] != "0" for row in error_rows)
    cards.append(_card("errors", error_rows, mood="bad" if bad else "good"))
    cpu_rows = [(s.target, _ms(s.server_cpu_per_completed), "per completed request, with children")
                for s in summaries if s.server_cpu_per_completed is not None]
    if cpu_rows:
        cards.append(_card("gateway CPU", cpu_rows, tagged=compare))
    cards.append(_card(
        "bench CPU",
        [(s.target, _ms(s.client_cpu_per_request), "per request: this tool's own cost")
         for s in summaries],
    ))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _charts_html(result: RunResult) -> str:
    panels = []
    for chart in charts(result):
        series = [
            Series(label, COLORS.get(label, "#6b7280"), histogram, chart.distributions[label])
            for label, histogram in chart.histograms.items()
        ]
        zeros = sum(h.underflow for h in chart.histograms.values())
        counts = ", ".join(f"{label} n={h.total}" for label, h in chart.histograms.items())
        if chart.metric == "propagation":
            below = sum(1 for d in chart.distributions.values() if d and d.min < 0)
            if below:
                counts += (". Delays below 0: the close woke the upstream and the kernel ran it "
                           "before the bench read its clock (abort_close_us in the JSON)")
        if zeros and series[0].histogram.log:
            counts += f" ({zeros} of 0 ms or less left off the log axis)"
        panels.append(
            f'<div class="panel">{histogram_chart(chart.title, series)}'
            f'<div class="legend">{escape(counts)}. Dashed lines: p50 (long dashes) and p99 '
            "(short).</div></div>"
        )
    return '<div class="grid">' + "".join(panels) + "</div>"


def _outcomes_table(result: RunResult) -> str:
    kinds = sorted({k for run in result.runs for k in run.summary.errors})
    head = "".join(f"<th>{escape(run.target.label)}</th>" for run in result.runs)
    rows = []
    for name in ("requests", "completed", "aborted", "connects"):
        cells = "".join(f"<td>{getattr(run.summary, name)}</td>" for run in result.runs)
        rows.append(f"<tr><td>{name}</td>{cells}</tr>")
    for kind in kinds:
        cells = "".join(f"<td>{run.summary.errors.get(kind, 0)}</td>" for run in result.runs)
        rows.append(f"<tr><td>error: {escape(kind)}</td>{cells}</tr>")
    if any(run.summary.propagation for run in result.runs):
        for name, read in (
            ("upstream cancelled (measured)", lambda p: len(p.delays)),
            ("upstream never cancelled", lambda p: len(p.never_cancelled)),
            ("upstream completed within the race window (raced)", lambda p: p.raced),
            ("upstream done before abort", lambda p: p.upstream_done_first),
            ("abort before upstream reached", lambda p: p.not_reached),
            ("upstream ended otherwise", lambda p: p.ended_otherwise),
        ):
            cells = "".join(
                f"<td>{read(run.summary.propagation) if run.summary.propagation else DASH}</td>"
                for run in result.runs
            )
            rows.append(f"<tr><td>{name}</td>{cells}</tr>")
    return f"<table><tr><th>outcome</th>{head}</tr>{''.join(rows)}</table>"


_FIGURE_NAMES: Final = {
    "throughput": "throughput (completed req/s)",
    "tokens_per_s": "tokens per second",
    "headers.p50": "time to headers p50",
    "headers.p99": "time to headers p99",
    "first_token.p50": "time to first token p50",
    "first_token.p99": "time to first token p99",
    "total.p50": "total time p50",
    "total.p99": "total time p99",
    "gap.p50": "chunk gap p50",
    "gap.p99": "chunk gap p99",
}


def _compare_table(result: RunResult) -> str:
    ratios = result.ratios
    if not ratios:
        return ""
    rows = []
    for name, row in ratios.items():
        rate = name in ("throughput", "tokens_per_s")
        show = _rate if rate else _ms
        ratio = row["b_over_a"]
        better = ratio is not None and ((ratio > 1) if rate else (ratio < 1))
        cls = "" if ratio is None or abs(ratio - 1) < 0.02 else (
            "faster" if better else "slower")
        rows.append(
            f"<tr><td>{escape(_FIGURE_NAMES.get(name, name))}</td><td>{show(row['a'])}</td>"
            f"<td>{show(row['b'])}</td>"
            f'<td class="{cls}">{_ratio_text(ratio)}</td>'
            f'<td>{_ratio_text(row["a_over_b"])}</td></tr>'
        )
    return (
        "<h2>A against B</h2><p class=\"sub\">Both ran the same requests and the same aborts, "
        "in alternating batches (A B, B A, ...) so that machine noise hits both alike. "
        '<span class="faster">Green</span>: B did better than A; '
        '<span class="slower">red</span>: worse.</p>'
        "<table><tr><th>figure</th><th>A</th><th>B</th><th>B/A</th><th>A/B</th></tr>"
        + "".join(rows) + "</table>"
    )


def render_html(result: RunResult) -> str:
    targets = "".join(
        f'<span class="chip"><span class="dot" style="background:'
        f'{COLORS.get(run.target.label, "#6b7280")}"></span><b>{escape(run.target.label)}</b> '
        f"{escape(run.target.url)}</span>"
        for run in result.runs
    )
    when = datetime.datetime.fromtimestamp(result.started, datetime.UTC)
    warnings = []
    if result.cut_short:
        warnings.append("The run was cut short by --max-seconds.")
    if result.sim_error:
        warnings.append(f"The upstream's records could not be read: {result.sim_error}")
    warning = "".join(f'<p class="sub" style="color:#b91c1c">{escape(w)}</p>' for w in warnings)
    settings = json.dumps(_settings_json(result.settings), indent=1)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>arouter bench {escape(result.run_id)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>arouter bench <span style=\"color:#6b7280;font-weight:500\">run "
        f"{escape(result.run_id)}</span></h1>"
        f'<p class="sub">{escape(describe_workload(result.settings))}</p>'
        f'<div class="targets">{targets}</div>{warning}'
        f"<h2>At a glance</h2>{_cards(result)}"
        f"<h2>Latency</h2>{_charts_html(result)}"
        f"{_compare_table(result)}"
        f"<h2>Outcomes</h2>{_outcomes_table(result)}"
        f"<details><summary>Settings</summary><pre>{escape(settings)}</pre></details>"
        f"<footer>Generated {when:%Y-%m-%d %H:%M:%S} UTC by arouter bench. Times are the "
        "client's time.monotonic(); cancel propagation compares it with the upstream's own "
        "record of when its client left.</footer>"
        "</main></body></html>\n"
    )


def write_html(result: RunResult, path: Path) -> None:
    path.write_text(render_html(result))
