"""The fixed benchmark scenarios, gateway vs the fake upstream called directly, in one run.

    .venv/bin/python benchmarks/run.py [--only a,a@2,b] [--scale 0.25]

Starts ``arouter sim`` and ``arouter serve`` as separate processes (so each one's CPU time
is its own), runs ``arouter bench --compare`` for every scenario (gateway = A, the fake
upstream directly = B, in alternating batches so machine noise hits both alike), samples
the gateway's memory while streams are open, and writes ``benchmarks/results/latest.json``
and the table ``benchmarks/RESULTS.md`` with the machine, the versions and the date.

Everything talks to 127.0.0.1 only; every run is bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
AROUTER = [sys.executable, "-m", "gateway"]

# name -> (description, bench options). ``{half_a}``: half the gateway's throughput in
# scenario a of this run (else of the last recorded run): an offered load it can carry.
STREAM20 = ["--tokens", "20", "--interval-ms", "5"]
SCENARIOS: dict[str, tuple[str, list[str]]] = {
    "a": ("2000 streams, c=50, 20 tokens 5 ms apart", ["-n", "2000", "-c", "50", *STREAM20]),
    "a'": ("1000 streams, c=50, 200 tokens 1 ms apart",
           ["-n", "1000", "-c", "50", "--tokens", "200", "--interval-ms", "1"]),
    "a1": ("300 streams, one client at a time, 20 tokens 5 ms apart",
           ["-n", "300", "-c", "1", *STREAM20]),
    "a-open": ("2000 streams arriving at half a's saturated rate (Poisson, open loop)",
               ["-n", "2000", "-c", "500", "--rate", "{half_a}", *STREAM20]),
    "b": ("2000 non-streamed, c=50, 20 tokens 5 ms apart",
          ["-n", "2000", "-c", "50", *STREAM20, "--no-stream"]),
    "b1": ("300 non-streamed, one client at a time, 20 tokens 5 ms apart",
           ["-n", "300", "-c", "1", *STREAM20, "--no-stream"]),
    "c": ("200 streams of 2000 tokens, c=50, all abort at 300 ms",
          ["-n", "200", "-c", "50", "--tokens", "2000", "--interval-ms", "1",
           "--abort-fraction", "1", "--abort-at-ms", "300"]),
    "c-sat": ("200 streams of 2000 tokens, c=200 (saturated), all abort at 300 ms",
              ["-n", "200", "-c", "200", "--tokens", "2000", "--interval-ms", "1",
               "--abort-fraction", "1", "--abort-at-ms", "300"]),
    "d": ("2000 concurrent streams, 20 tokens/s (40 tokens)",
          ["-n", "2000", "-c", "2000", "--tokens", "40", "--interval-ms", "50",
           "--batch", "2000"]),
    # Per dialect path: the client's dialect (--route) to an upstream of one (--model).
    "p-oo": ("400 streams, c=20: OpenAI client, OpenAI upstream (the splice path)",
             ["-n", "400", "-c", "20", *STREAM20]),
    "p-aa": ("400 streams, c=20: Anthropic client, Anthropic upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--route", "messages",
              "--model", "fake-anthropic/lorem"]),
    "p-gg": ("400 streams, c=20: Gemini client, Gemini upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--route", "gemini",
              "--model", "fake-gemini/lorem"]),
    "p-ao": ("400 streams, c=20: Anthropic client, OpenAI upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--route", "messages"]),
    "p-oa": ("400 streams, c=20: OpenAI client, Anthropic upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--model", "fake-anthropic/lorem"]),
    "p-go": ("400 streams, c=20: Gemini client, OpenAI upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--route", "gemini"]),
    "p-ro": ("400 streams, c=20: OpenAI Responses client, OpenAI chat upstream",
             ["-n", "400", "-c", "20", *STREAM20, "--route", "responses"]),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _rss_kib(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) if match else 0
    return total


class RssSampler:
    """Peak resident memory of a process tree, sampled from a thread during a run."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _process(args: list[str], ready: str, env: dict[str, str]) -> Iterator[tuple[int, str]]:
    """Start a process, wait for ``ready`` on its stdout; yields (pid, stdout so far)."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=env, cwd=ROOT)
    try:
        assert process.stdout is not None
        seen = ""
        deadline = time.monotonic() + 60
        while ready not in seen:
            line = process.stdout.readline().decode()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"{args[3:]} did not start: {seen!r}")
            seen += line
        yield process.pid, seen
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _scaled(options: list[str], scale: float) -> list[str]:
    out = list(options)
    for flag in ("-n", "--batch"):
        if flag in out:
            i = out.index(flag) + 1
            out[i] = str(max(10, round(int(out[i]) * scale)))
    if "-c" in out and scale < 1:
        i = out.index("-c") + 1
        out[i] = str(min(int(out[i]), max(10, round(int(out[i]) * scale))))
    return out


def run_scenario(name: str, workers: int, scale: float, max_seconds: float,
                 half_a: float) -> dict[str, Any]:
    description, options = SCENARIOS[name]
    options = [o.replace("{half_a}", f"{half_a:.0f}") for o in options]
    if "--rate" in options:
        description += f" ({options[options.index('--rate') + 1]}/s)"
    tmp = Path(tempfile.mkdtemp(prefix="arouter-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(AROUTER_DATA_DIR=str(tmp), AROUTER_LOG_LEVEL="WARNING")
    sim_port, gw_port = _free_port(), _free_port()
    config = tmp / "arouter.toml"
    sim = f"http://127.0.0.1:{sim_port}"
    config.write_text(
        f'[server]\nport = {gw_port}\n'
        f'[providers.fake]\ndialect = "openai"\nbase_url = "{sim}/v1"\n'
        # The same fake upstream in its two other dialects (the per-dialect paths).
        f'[providers.fake-anthropic]\ndialect = "anthropic"\nbase_url = "{sim}"\n'
        f'[providers.fake-gemini]\ndialect = "gemini"\nbase_url = "{sim}"\n'
    )
    with _process([*AROUTER, "sim", "--port", str(sim_port)], "listening", env) as (sim_pid, _), \
            _process([*AROUTER, "--log-level", "WARNING", "--config", str(config), "serve",
                      "--workers", str(workers)], "try: curl", env) as (gw_pid, banner):
        key = re.search(r"lr_live_[0-9a-f]{12}_[0-9a-f]{48}", banner)
        assert key is not None
        time.sleep(1.0 + workers)  # spawned workers import and start
        baseline = _rss_kib(gw_pid)
        result_file = tmp / "result.json"
        model = [] if "--model" in options else ["--model", "fake/lorem"]
        bench = [
            *AROUTER, "bench", "--url", f"http://127.0.0.1:{gw_port}", "--key", key.group(),
            *model, "--gateway-pid", str(gw_pid),
            "--compare", f"http://127.0.0.1:{sim_port}", "--compare-pid", str(sim_pid),
            "--sim-url", f"http://127.0.0.1:{sim_port}", "--json", str(result_file),
            "--max-seconds", str(max_seconds), *_scaled(options, scale),
        ]
        with RssSampler(gw_pid) as rss:
            subprocess.run(bench, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                           timeout=max_seconds + 120)
        result = json.loads(result_file.read_text())
    concurrency = int(_scaled(options, scale)[_scaled(options, scale).index("-c") + 1])
    return {
        "scenario": name,
        "description": description,
        "workers": workers,
        "gateway_rss_baseline_kib": baseline,
        "gateway_rss_peak_kib": rss.peak,
        "kib_per_open_stream": (rss.peak - baseline) / concurrency,
        "result": result,
    }


def _half_a(runs: list[dict[str, Any]]) -> float:
    """Half the gateway's throughput in scenario a: of this run, else the last recorded."""
    previous = []
    if (RESULTS / "latest.json").exists():
        previous = json.loads((RESULTS / "latest.json").read_text()).get("runs", [])
    for run in [*reversed(runs), *previous]:
        if run["scenario"] == "a" and run["workers"] == 1:
            return float(run["result"]["targets"][0]["requests_per_s"]) / 2
    return 100.0


def _versions() -> dict[str, str]:
    names = ("trio", "hypercorn", "quart", "quart-trio", "httpx", "h11", "httptools")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def _p(stats: dict[str, Any] | None, key: str) -> float | None:
    return None if not stats else stats.get(key)


def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _cpu_per_request(target: dict[str, Any]) -> float | None:
    # Per request sent, aborted ones included (scenario c completes none).
    cpu = target.get("gateway_cpu_s")
    return None if cpu is None or not target["requests"] else 1000 * cpu / target["requests"]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _first(target: dict[str, Any]) -> dict[str, Any]:
    """Time to the first token of a stream, to the whole answer of a non-streamed one."""
    return target["first_token_ms"] or target["total_ms"] or {}


def _added(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    ours, theirs = _p(_first(a), key), _p(_first(b), key)
    return "-" if ours is None or theirs is None else f"{ours - theirs:+.1f} ms"


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| scenario | workers | gateway CPU / request | throughput vs direct | "
        "TTFT p50 gw / direct | added TTFT p50 / p99 | gap p99 gw / direct | "
        "cancel p99 gw / direct | never cancelled | errors | memory / open stream |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        a, b = run["result"]["targets"]
        prop_a, prop_b = a.get("propagation") or {}, b.get("propagation") or {}

        def p99(stats: dict[str, Any]) -> float | None:
            delays = stats.get("delay_ms") or {}
            value = delays.get("p99")
            return float(value) if value is not None else None

        errors = sum(a["errors"].values())
        rows.append(
            f"| {run['scenario']} | {run['workers']} | "
            f"{_fmt(_cpu_per_request(a), ' ms')} | "
            f"{_ratio(a['requests_per_s'], b['requests_per_s'])} "
            f"({a['requests_per_s']:.0f} / {b['requests_per_s']:.0f} req/s) | "
            f"{_fmt(_p(_first(a), 'p50'), ' ms', 1)} / "
            f"{_fmt(_p(_first(b), 'p50'), ' ms', 1)} | "
            f"{_added(a, b, 'p50')} / {_added(a, b, 'p99')} | "
            f"{_fmt(_p(a['gap_ms'], 'p99'), ' ms', 1)} / {_fmt(_p(b['gap_ms'], 'p99'), ' ms', 1)}"
            f" | {_fmt(p99(prop_a), ' ms')} / {_fmt(p99(prop_b), ' ms')} | "
            f"{prop_a.get('never_cancelled', '-')} | {errors} | "
            f"{_fmt(run['kib_per_open_stream'], ' KiB', 1)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenarios, each optionally @WORKERS "
                        f"(e.g. a@2); default: all of {list(SCENARIOS)} with one worker")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply request counts (and cap concurrency) for a quick run")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--table-only", action="store_true",
                        help="re-render RESULTS.md from results/latest.json")
    args = parser.parse_args(argv)
    if args.table_only:
        report = json.loads((RESULTS / "latest.json").read_text())
        _write(report)
        return 0
    runs: list[dict[str, Any]] = []
    items = args.only.split(",")
    for item in items:
        if item.partition("@")[0] not in SCENARIOS:
            parser.error(f"unknown scenario {item!r}")
    for item in items:
        name, _, workers = item.partition("@")
        print(f"scenario {name} with {workers or 1} worker(s) ...", file=sys.stderr, flush=True)
        runs.append(run_scenario(name, int(workers or 1), args.scale, args.max_seconds,
                                 _half_a(runs)))
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "versions": _versions(),
        "scale": args.scale,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=1))
    _write(report)
    return 0


def _write(report: dict[str, Any]) -> None:
    machine, runs, scale = report["machine"], report["runs"], report["scale"]
    text = (
        f"# Benchmark results\n\n{report['date']} · {machine['cpu']} · {machine['cores']} cores"
        f" · Python {machine['python']} · "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + (f" · scale {scale}" if scale != 1 else "")
        + "\n\nGateway = `arouter serve` in front of `arouter sim`; direct = `arouter sim`"
        " spoken to in the client's own dialect. Load generator, gateway and fake upstream"
        " share the machine's cores. TTFT is the whole answer's time for non-streamed"
        " scenarios; \"added\" is gateway minus direct at the same percentile.\n\n"
        + "\n".join(dict.fromkeys(f"- **{r['scenario']}**: {r['description']}"
                                  for r in runs)) + "\n\n"
        + table(runs) + "\n"
    )
    (ROOT / "benchmarks" / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
