"""``arouter bench``: options in, a run, a summary on stdout, JSON and HTML files out.

Mounted by ``gateway.cli`` as a subcommand (``add_arguments`` + ``run_from_args``), or run
alone with ``main``. Rules: option errors exit 2 through argparse; the run itself exits 0,
or 1 when an endpoint finished no request at all (nothing completed, nothing aborted on
purpose), so a script notices a bench that measured nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from gateway.bench import report, workload
from gateway.bench.http1 import Endpoint
from gateway.bench.progress import Progress
from gateway.bench.routes import ROUTES

__all__ = ["add_arguments", "main", "run_from_args"]

DESCRIPTION = (
    "Load generator for an OpenAI-, Anthropic- or Gemini-compatible endpoint: throughput, "
    "time to headers and to the first token, gaps between chunks, errors, and (with "
    "--sim-url) how fast client aborts reach the upstream. Closed loop (-c workers) or open "
    "loop (--rate arrivals per second). Each request's last user message carries a '#sim "
    "tokens=T interval_ms=I tag=<run>-<i>' line for the fake upstream (arouter sim)."
)


def _url(text: str) -> str:
    try:
        Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _range_ms(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        pair = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LO:HI in milliseconds") from None
    if not 0 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 <= LO <= HI")
    return pair


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be positive")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options, on ``parser`` (a subparser of ``arouter`` or a parser of its own)."""
    target = parser.add_argument_group("endpoint")
    target.add_argument("--url", type=_url, default="http://127.0.0.1:8080",
                        help="base URL; /v1/chat/completions is added (default: %(default)s)")
    target.add_argument("--key", default=None,
                        help="API key sent as a Bearer token (default: $AROUTER_KEY)")
    target.add_argument("--model", default="sim/lorem", help="model name (default: %(default)s)")
    target.add_argument("--route", choices=sorted(ROUTES), default="chat",
                        help="the client dialect: chat (/v1/chat/completions), messages "
                        "(/v1/messages), gemini (/v1beta/models/M:streamGenerateContent), "
                        "responses (/v1/responses) (default: %(default)s)")
    target.add_argument("--gateway-pid", type=int, metavar="PID",
                        help="charge this process and its children's CPU time to --url")
    work = parser.add_argument_group("workload")
    work.add_argument("--requests", "-n", type=_positive_int, default=100, metavar="N",
                      help="requests per endpoint (default: %(default)s)")
    work.add_argument("--concurrency", "-c", type=_positive_int, default=10, metavar="C",
                      help="requests in flight at once; with --rate, the most in flight "
                      "(default: %(default)s)")
    work.add_argument("--rate", type=_positive_float, metavar="R",
                      help="open loop: R requests arrive per second whatever the answers "
                      "do, each timed from when it was due (default: closed loop)")
    work.add_argument("--arrivals", choices=["poisson", "fixed"], default="poisson",
                      help="with --rate: Poisson arrivals or evenly spaced "
                      "(default: %(default)s)")
    work.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                      help="stream responses (default: yes)")
    work.add_argument("--tokens", type=int, metavar="T",
                      help="tokens per answer, via '#sim tokens=T' (default: the upstream's)")
    work.add_argument("--interval-ms", type=float, metavar="I",
                      help="milliseconds between tokens, via '#sim interval_ms=I'")
    work.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                      help="per request (default: %(default)s)")
    work.add_argument("--seed", type=int, default=0, help="for the abort plan")
    work.add_argument("--max-seconds", type=float, default=3600.0, metavar="SECONDS",
                      help="end the run after this long, dropping requests in flight "
                      "(default: %(default)s)")
    aborts = parser.add_argument_group("aborts")
    aborts.add_argument("--abort-fraction", type=_fraction, default=0.0, metavar="F",
                        help="this fraction of requests closes its connection early")
    when = aborts.add_mutually_exclusive_group()
    when.add_argument("--abort-at-ms", type=float, metavar="A",
                      help="abort this long after the request starts")
    when.add_argument("--abort-random-ms", type=_range_ms, metavar="LO:HI",
                      help="abort at a uniformly random time in LO..HI ms")
    aborts.add_argument("--sim-url", type=_url, metavar="URL",
                        help="the fake upstream (arouter sim): read its records after the run "
                        "to measure cancel propagation")
    aborts.add_argument("--grace", type=float, default=1.0, metavar="SECONDS",
                        help="wait up to this long for the upstream to see aborts "
                        "(default: %(default)s)")
    aborts.add_argument("--race-window-ms", type=float, default=50.0, metavar="MS",
                        help="an upstream that completes this soon after an abort without "
                        "seeing it raced the abort, rather than never being cancelled; the "
                        "run's own p99 cancel delay widens it (default: %(default)s)")
    compare = parser.add_argument_group("compare")
    compare.add_argument("--compare", type=_url, metavar="URL2",
                         help="run the same workload against URL2 in alternating batches")
    compare.add_argument("--compare-key", help="API key for URL2 (default: --key)")
    compare.add_argument("--compare-pid", type=int, metavar="PID",
                         help="charge this process tree's CPU time to URL2")
    compare.add_argument("--batch", type=_positive_int, metavar="N",
                         help="requests per batch under --compare (default: a tenth of "
                         "the requests, at least 2 per worker)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    out.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report")
    out.add_argument("--progress", action="store_true",
                     help="show progress on stderr even when it is not a terminal")
    out.add_argument("--run-id", help="tag prefix (default: random)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bench the parsed options describe; returns the exit status."""
    key = args.key if args.key is not None else os.environ.get("AROUTER_KEY")
    try:
        settings = workload.Settings(
            requests=args.requests,
            concurrency=args.concurrency,
            stream=args.stream,
            model=args.model,
            tokens=args.tokens,
            interval_ms=args.interval_ms,
            abort_fraction=args.abort_fraction,
            abort_at_ms=args.abort_at_ms,
            abort_random_ms=args.abort_random_ms,
            timeout=args.timeout,
            seed=args.seed,
            batch=args.batch,
            grace=args.grace,
            race_window=args.race_window_ms / 1000,
            max_seconds=args.max_seconds,
            route=args.route,
            rate=args.rate,
            arrivals=args.arrivals,
        )
    except ValueError as exc:
        print(f"arouter bench: {exc}", file=sys.stderr)
        return 2
    targets = [workload.Target("A", args.url, key, args.gateway_pid)]
    if args.compare:
        compare_key = args.compare_key if args.compare_key is not None else key
        targets.append(workload.Target("B", args.compare, compare_key, args.compare_pid))
    progress = None
    if args.progress or sys.stderr.isatty():
        progress = Progress(settings.requests * len(targets), sys.stderr, tty=sys.stderr.isatty())
    try:
        result = trio.run(functools.partial(
            workload.run, settings, targets, sim_url=args.sim_url, run_id=args.run_id,
            progress=progress,
        ))
    except KeyboardInterrupt:
        return 130
    print(report.text_summary(result), flush=True)
    if args.json:
        report.write_json(result, args.json)
    if args.html:
        report.write_html(result, args.html)
    idle = [run for run in result.runs if not run.summary.completed + run.summary.aborted]
    return 1 if idle else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arouter bench", description=DESCRIPTION)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
