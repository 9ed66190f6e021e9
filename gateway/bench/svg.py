"""Latency histograms drawn as inline SVG, for the HTML report (no plotting library).

Rules:
- Pure: histograms and distributions in, SVG markup (a ``str``) out. Every text that comes
  from outside (labels, titles) is XML-escaped.
- One chart draws one or two series on a shared axis: bins side by side, each series in its
  own colour, with dashed p50 and p99 markers and a ``<title>`` tooltip on every bar.
- A logarithmic axis (the histogram says so) gets 1-2-5 ticks; a linear one about six round
  ones. Values are shown in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Final

import attrs

from gateway.bench.stats import Distribution, Histogram

__all__ = ["Series", "format_ms", "histogram_chart"]

WIDTH: Final = 560
HEIGHT: Final = 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 14, 28, 38


@attrs.frozen
class Series:
    label: str
    color: str  # a CSS colour
    histogram: Histogram
    distribution: Distribution | None


def format_ms(seconds: float) -> str:
    """A duration for an axis or a label: ``0.42 ms``, ``12.3 ms``, ``1.25 s``."""
    ms = seconds * 1000
    size = abs(ms)
    if size >= 1000:
        return f"{ms / 1000:.3g} s"
    if size >= 100:
        return f"{ms:.0f} ms"
    if size >= 10:
        return f"{ms:.1f} ms"
    if size >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms" if size >= 0.001 else f"{ms:.2g} ms"


def _tick_label(seconds: float) -> str:
    return f"{round(seconds * 1000, 6):.6g}"


def _linear_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if lo <= value <= hi:
                ticks.append(value)
    if len(ticks) > 9:  # a wide range: decades only
        ticks = [t for t in ticks if f"{t:.0e}".startswith("1")]
    return ticks


def _count_ticks(tallest: int) -> list[int]:
    """Round ticks from 0 to at least ``tallest``, about four of them."""
    if tallest <= 0:
        return [0, 1]
    raw = tallest / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = max(1, int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)))
    return list(range(0, math.ceil(tallest / step) * step + 1, step))


def histogram_chart(title: str, series: Sequence[Series]) -> str:
    """One chart: ``series`` (one or two) drawn on the axis of their shared bin edges."""
    if not series:
        raise ValueError("a chart needs a series")
    first = series[0].histogram
    edges, log = first.edges, first.log
    lo, hi = edges[0], edges[-1]
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def x_of(value: float) -> float:
        if log:
            where = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
        else:
            where = (value - lo) / (hi - lo)
        return _LEFT + plot_w * min(max(where, 0.0), 1.0)

    tallest = max((max(s.histogram.counts, default=0) for s in series), default=0)
    count_ticks = _count_ticks(tallest)
    top = count_ticks[-1]

    def y_of(count: float) -> float:
        return _TOP + plot_h * (1 - count / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
        'class="chart" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="600" fill="#111827">'
        f"{escape(title)}</text>",
    ]
    for count in count_ticks:
        y = y_of(count)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{_LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end" '
            f'fill="#6b7280">{count}</text>'
        )
    ticks = _log_ticks(lo, hi) if log else _linear_ticks(lo, hi)
    base = _TOP + plot_h
    for tick in ticks:
        x = x_of(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#9ca3af"/>'
            f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" fill="#374151">'
            f"{_tick_label(tick)}</text>"
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" '
        f'fill="#6b7280">milliseconds{" (log scale)" if log else ""}</text>'
    )
    share = len(series)
    for rank, one in enumerate(series):
        label = escape(one.label)
        parts.append(f'<g fill="{escape(one.color)}">')
        for i, count in enumerate(one.histogram.counts):
            if not count:
                continue
            left, right = x_of(edges[i]), x_of(edges[i + 1])
            width = (right - left) / share
            x = left + width * rank + 0.4
            y = y_of(count)
            tip = (f"{label}: {count} between {format_ms(edges[i])} and "
                   f"{format_ms(edges[i + 1])}")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 0.8, 0.8):.1f}" '
                f'height="{base - y:.1f}" rx="1"><title>{tip}</title></rect>'
            )
        parts.append("</g>")
    parts.append(
        f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{base}" y2="{base}" stroke="#9ca3af"/>'
    )
    for rank, one in enumerate(series):
        if one.distribution is None:
            continue
        for name, value, dash in (("p50", one.distribution.p50, "4 3"),
                                  ("p99", one.distribution.p99, "2 3")):
            if not lo <= value <= hi:
                continue
            x = x_of(value)
            anchor = "start" if x < _LEFT + plot_w * 0.75 else "end"
            shift = 3 if anchor == "start" else -3
            y_text = _TOP + 10 + 12 * (rank * 2 + (name == "p99"))
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{base}" '
                f'stroke="{escape(one.color)}" stroke-width="1.5" stroke-dasharray="{dash}"/>'
                f'<text x="{x + shift:.1f}" y="{y_text}" text-anchor="{anchor}" '
                f'fill="{escape(one.color)}" font-weight="600" paint-order="stroke" '
                f'stroke="#fff" stroke-width="3">{name} {format_ms(value)}'
                "</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
