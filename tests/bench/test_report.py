"""The JSON, text and HTML/SVG renderings of a result."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from gateway.bench import report, stats
from gateway.bench.samples import RequestResult
from gateway.bench.svg import Series, format_ms, histogram_chart
from gateway.bench.workload import RunResult, Settings, Target, TargetRun

SVG = "{http://www.w3.org/2000/svg}"


def _results(label: str, scale: float) -> list[RequestResult]:
    out = []
    for i in range(50):
        r = RequestResult(index=i, target=label, tag=f"x{label}-{i}", stream=True,
                          started_at=10.0, headers_at=10.0 + 0.001 * scale,
                          first_token_at=10.0 + 0.002 * scale * (1 + i % 7),
                          ended_at=10.05 + 0.001 * i * scale, tokens=5)
        r.gaps.extend([0.0, 0.001 * scale, 0.05 * scale])
        out.append(r)
    return out


def _result(compare: bool) -> RunResult:
    runs = []
    for label, scale in (("A", 1.0), ("B", 0.5))[: 2 if compare else 1]:
        results = _results(label, scale)
        summary = stats.summarize(label, f"http://127.0.0.1:1/<{label}>", results, 1.0)
        target = Target(label, f"http://127.0.0.1:1/<{label}>")
        runs.append(TargetRun(target, f"x{label}", tuple(results), summary))
    return RunResult("r<1>", 0.0, Settings(requests=50), tuple(runs), None, None, False)


def test_chart_is_well_formed_svg_with_escaped_labels() -> None:
    values = [0.001 * i for i in range(1, 100)]
    chosen = stats.choose_edges([values])
    assert chosen is not None
    edges, log = chosen
    hist = stats.histogram(values, edges, log=log)
    chart = histogram_chart("a <b> & c", [
        Series("A&B", "#2563eb", hist, stats.describe(values)),
        Series("B", "#ea580c", hist, None),
    ])
    root = ET.fromstring(chart)
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == "a <b> & c"  # type: ignore[union-attr]
    bars = root.findall(f".//{SVG}rect")
    assert len(bars) == 2 * sum(1 for c in hist.counts if c)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("p50 ") for t in texts) and any(t.startswith("p99 ") for t in texts)


def test_format_ms() -> None:
    assert [format_ms(v) for v in (0.00042, 0.0042, 0.042, 0.42, 4.2)] == [
        "0.420 ms", "4.20 ms", "42.0 ms", "420 ms", "4.2 s"]


def test_html_and_json_of_a_comparison() -> None:
    result = _result(compare=True)
    html = report.render_html(result)
    assert html.count("<svg") == 4  # first token, total, gap, headers; no aborts, no propagation
    assert "&lt;A&gt;" in html and "<A>" not in html  # URLs are escaped
    assert "A against B" in html
    data = report.to_json(result)
    json.dumps(data)  # serialisable as it is
    assert data["compare"]["throughput"]["b_over_a"] == 1.0
    assert set(data["histograms"]) == {"first_token", "total", "gap", "headers"}
    gap = data["histograms"]["gap"]
    assert gap["A"]["log"] and gap["A"]["underflow"] == 50  # the zero gaps
    assert "B/A" in report.text_summary(result)


def test_single_endpoint_has_no_compare_table() -> None:
    result = _result(compare=False)
    assert "A against B" not in report.render_html(result)
    assert report.to_json(result, requests=False).get("requests") is None
