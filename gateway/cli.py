"""The ``arouter`` command: ``serve``, ``sim`` and ``keys``.

``serve`` with no arguments runs the embedded default: 127.0.0.1:8080, a SQLite file in the
data directory, the simulator provider, and any real provider whose API key variable is set.
On the first start it creates an API key and prints it once; only its hash is stored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import attrs
import trio

from gateway import config as config_mod
from gateway import keys, logs
from gateway.config import Config, ConfigError
from gateway.store.sqlite import SqliteStore


def _load_config(args: argparse.Namespace) -> Config:
    config = config_mod.load(Path(args.config) if args.config else None)
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if getattr(args, "data_dir", None):
        changes["data_dir"] = Path(args.data_dir)
    return attrs.evolve(config, **changes)


async def _first_key(config: Config) -> str | None:
    """Create and return a key if the store has none yet."""
    store = SqliteStore(config.database_path)
    await store.open()
    try:
        if await store.count_keys():
            return None
        secret, row = keys.generate(name="default", created_at=time.time())
        await store.add_key(row)
        return secret
    finally:
        await store.aclose()


async def _serve(config: Config) -> None:
    from gateway.app import create_app
    from gateway.server import serve

    first_key = await _first_key(config)
    app = create_app(config)

    async def until_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, app, config, shutdown_trigger=until_signal))
        _banner(config, bound, first_key)


def _serve_workers(config: Config, workers: int, config_path: str | None) -> int:
    """Hypercorn's own multi-process mode: the parent binds, N spawned workers serve."""
    import hypercorn.run

    from gateway.server import hypercorn_config

    first_key = trio.run(_first_key, config)
    # The workers rebuild the config from the environment (see app.from_environment), and
    # share their metrics through files (see metrics.py).
    os.environ["AROUTER_DATA_DIR"] = str(config.data_dir)
    metrics_dir = tempfile.mkdtemp(prefix="arouter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if config_path:
        os.environ["AROUTER_CONFIG"] = str(Path(config_path).resolve())
    hconfig = hypercorn_config(config)
    hconfig.workers = workers
    hconfig.worker_class = "trio"
    hconfig.application_path = "gateway.app:from_environment()"
    # Each worker drains on its own; the parent waits for them (issue: graceful drain).
    _banner(config, [f"http://{config.host}:{config.port}"], first_key)
    print(f"workers: {workers}", flush=True)
    try:
        return hypercorn.run.run(hconfig)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _banner(config: Config, bound: list[str], first_key: str | None) -> None:
    url = bound[0] if bound else f"http://{config.host}:{config.port}"
    lines = [f"arouter listening on {url}  (data: {config.database_path})"]
    providers = ", ".join(sorted(config.providers))
    lines.append(f"providers: {providers}")
    if first_key:
        lines += [
            "",
            "Created the first API key. It is shown only this once; store it now:",
            f"    {first_key}",
            "",
            f"    export AROUTER_KEY={first_key}",
        ]
    lines.append(f"try: curl -N {url}/v1/chat/completions -H \"Authorization: Bearer "
                 f"$AROUTER_KEY\" -H 'Content-Type: application/json' -d "
                 "'{\"model\":\"sim/lorem\",\"stream\":true,\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"hi\"}]}'")
    print("\n".join(lines), flush=True)


async def _create_key(config: Config, name: str) -> str:
    store = SqliteStore(config.database_path)
    await store.open()
    try:
        secret, row = keys.generate(name=name, created_at=time.time())
        await store.add_key(row)
        return secret
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arouter", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="TOML config file (default: $AROUTER_CONFIG)")
    parser.add_argument("--log-level", default=os.environ.get("AROUTER_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", choices=("json", "text"),
                        default=os.environ.get("AROUTER_LOG_FORMAT", "json"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (hypercorn multi-process mode); 1 = in-process")

    sim = sub.add_parser("sim", help="run the fake upstream (OpenAI dialect)", add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER,
                     help="see `arouter sim --help`: --host, --port, --scenario, ...")

    bench = sub.add_parser("bench", help="load-test an endpoint (cancellation, latency, CPU)")
    from gateway.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(bench)

    keys_cmd = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", default="")
    create.add_argument("--data-dir")

    # `arouter sim ...` hands its arguments to the fake upstream's own parser.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sim":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "serve":
            os.environ["AROUTER_LOG_LEVEL"] = args.log_level
            os.environ["AROUTER_LOG_FORMAT"] = args.log_format
            if args.workers > 1:
                return _serve_workers(_load_config(args), args.workers, args.config)
            else:
                trio.run(_serve, _load_config(args))
        elif args.command == "sim":
            from gateway.sim.server import main as sim_main

            return sim_main([*rest, *args.sim_args])
        elif args.command == "bench":
            from gateway.bench.cli import run_from_args

            return run_from_args(args)
        elif args.command == "keys":
            print(trio.run(_create_key, _load_config(args), args.name))
    except ConfigError as exc:
        print(f"arouter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
