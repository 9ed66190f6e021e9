"""The ``arouter`` command: ``serve``, ``sim``, ``bench``, ``keys``, ``db`` and ``doctor``.

``serve`` with no arguments runs the embedded default: 127.0.0.1:8080, a SQLite file in the
data directory, the simulator provider, and any real provider whose API key variable is set.
On the first start it creates an API key and prints it once; only its hash is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway import config as config_mod
from gateway import keys, logs
from gateway.config import Config, ConfigError
from gateway.errors import GatewayError
from gateway.keys import ApiKey
from gateway.pricing import MoneyError
from gateway.store.base import Store


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
    async with _opened(config) as store:
        if await store.count_keys():
            return None
        secret, row = keys.generate(name="default", created_at=time.time())
        await store.add_key(row)
        return secret


@asynccontextmanager
async def _opened(config: Config) -> AsyncIterator[Store]:
    from gateway.app import open_store

    store = open_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


async def _serve(config: Config, first: bool = True) -> None:
    from gateway.app import create_app
    from gateway.server import serve

    first_key = await _first_key(config) if first else None
    app = create_app(config)
    stop = trio.Event()

    async def on_signals() -> None:
        # The first SIGTERM/SIGINT drains: no new requests, open ones run until the drain
        # deadline. A second one ends them now; each still gets its terminal event and its
        # ledger row before the process exits 0.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if stop.is_set():
                    app.gateway.drain_now()
                else:
                    stop.set()

    async def serve_until_stopped(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        nursery.cancel_scope.cancel()  # served and settled: stop listening for signals

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals)
        bound = await nursery.start(serve_until_stopped)
        _banner(config, bound, first_key)


def _serve_workers(
    config: Config, workers: int, config_path: str | None, first: bool = True
) -> int:
    """N worker processes on one listening socket (``workers.py``)."""
    from gateway import workers as workers_mod
    from gateway.server import hypercorn_config

    first_key = trio.run(_first_key, config) if first else None
    # The workers rebuild the config from the environment (see app.from_environment), and
    # share their metrics through files (see metrics.py).
    os.environ["AROUTER_DATA_DIR"] = str(config.data_dir)
    metrics_dir = tempfile.mkdtemp(prefix="arouter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if config_path:
        os.environ["AROUTER_CONFIG"] = str(Path(config_path).resolve())
    hconfig = hypercorn_config(config)
    hconfig.worker_class = "trio"
    hconfig.application_path = "gateway.app:from_environment()"
    def bound() -> None:
        _banner(config, [f"http://{config.host}:{config.port}"], first_key)
        print(f"workers: {workers}", flush=True)

    try:
        return workers_mod.run(hconfig, workers, on_bound=bound)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _prices_line(config: Config) -> str:
    from gateway.catalog import Catalog

    catalog = Catalog(config)
    table = catalog.table
    line = f"prices: built-in table of {table.date.isoformat()} ({table.count()} models)"
    unpriced = catalog.unpriced()
    if unpriced:
        line += (f"; {len(unpriced)} reachable without a price, refused to keys with a "
                 f"balance: {', '.join(unpriced[:4])}{', ...' if len(unpriced) > 4 else ''}")
    return line


def _banner(config: Config, bound: list[str], first_key: str | None) -> None:
    url = bound[0] if bound else f"http://{config.host}:{config.port}"
    lines = [f"arouter listening on {url}  (data: {config.database_path})"]
    providers = ", ".join(sorted(config.providers))
    lines.append(f"providers: {providers}")
    lines.append(_prices_line(config))
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


def _policy_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Key policy options given on the command line, validated like the admin API's."""
    from gateway.admin import parse_policy

    raw: dict[str, Any] = {}
    if args.name is not None:
        raw["name"] = args.name
    if args.balance is not None:
        raw["balance_usd"] = None if args.balance == "none" else args.balance
    for name in ("rpm", "tpm", "max_concurrent"):
        value = getattr(args, name)
        if value is not None:
            raw[name] = None if value == "none" else _int_option(name, value)
    if args.models is not None:
        raw["models"] = [m for m in args.models.split(",") if m]
    if args.expires_in is not None:
        raw["expires_at"] = (None if args.expires_in == "none"
                             else time.time() + _duration(args.expires_in))
    return parse_policy(raw)


def _int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')}: expected an integer or 'none'") from None


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise UsageError("--expires-in: expected a duration like 90m, 12h or 30d")
    return int(number) * units[unit]


class UsageError(Exception):
    pass


def _dollars(view: dict[str, Any]) -> str:
    from gateway.pricing import format_usd

    return format_usd(view["balance_micro_usd"])


def _print_key(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(view, indent=2))
        return
    limits = view["limits"]
    expires = view["expires_at"]
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires)) if expires else "never"
    print(f"{view['id']}  {view['name'] or '-'}"
          f"{'  REVOKED' if view['revoked'] else ''}\n"
          f"  balance: {_dollars(view)}\n"
          f"  rpm: {limits['rpm'] or '-'}  tpm: {limits['tpm'] or '-'}  "
          f"concurrent: {limits['max_concurrent'] or '-'}\n"
          f"  models: {', '.join(view['models']) or 'all'}\n"
          f"  expires: {until}")


async def _keys_command(config: Config, args: argparse.Namespace) -> int:
    from gateway.admin import key_view
    from gateway.pricing import parse_usd

    command = args.keys_command
    async with _opened(config) as store:
        if command == "create":
            secret, row = keys.generate(created_at=time.time(), **_policy_from_args(args))
            await store.add_key(row)
            if args.json:
                print(json.dumps({"key": secret, **key_view(row)}, indent=2))
            else:
                print(secret)
                print("(shown only this once; only its hash is stored)", file=sys.stderr)
            return 0
        if command == "list":
            found = [key_view(k) for k in await store.list_keys()]
            if args.json:
                print(json.dumps(found, indent=2))
            for view in [] if args.json else found:
                state = "revoked" if view["revoked"] else "active"
                print(f"{view['id']}  {state:7}  {_dollars(view):>18}  {view['name']}")
            return 0
        key: ApiKey | None
        if command == "show":
            key = await store.find_key(args.id)
        elif command == "revoke":
            key = await store.update_key(args.id, {"revoked": True})
        elif command == "update":
            key = await store.update_key(args.id, _policy_from_args(args))
        else:  # top-up
            try:
                key = await store.top_up(args.id, parse_usd(args.amount))
            except MoneyError as exc:
                raise UsageError(f"amount: {exc}") from None
        if key is None:
            print(f"arouter: no key {args.id!r}", file=sys.stderr)
            return 1
        _print_key(key_view(key), args.json)
        return 0


async def _migrate(config: Config) -> tuple[int, int]:
    from gateway.app import open_store

    return await open_store(config).migrate()  # without open(), which would migrate first


def _add_policy_options(parser: argparse.ArgumentParser, *, name_default: str | None) -> None:
    parser.add_argument("--name", default=name_default)
    parser.add_argument("--balance", metavar="USD",
                        help="credit balance in dollars (exact, e.g. 5 or 0.25); 'none' for "
                             "no balance limit")
    parser.add_argument("--rpm", help="requests per minute ('none': no limit)")
    parser.add_argument("--tpm", help="tokens per minute ('none': no limit)")
    parser.add_argument("--max-concurrent", dest="max_concurrent",
                        help="open requests at once ('none': no limit)")
    parser.add_argument("--models", help="comma-separated model allowlist (empty: all)")
    parser.add_argument("--expires-in", dest="expires_in",
                        help="expiry from now: 90m, 12h, 30d ('none': never)")


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
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes on one socket (default: [server] workers); "
                            "1 = in-process")
    serve.add_argument("--no-first-key", dest="first_key", action="store_false",
                       help="do not create (and print) a key when the store has none: for "
                            "fleets, where keys are made with `arouter keys create`")

    sim = sub.add_parser("sim", help="run the fake upstream (OpenAI dialect)", add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER,
                     help="see `arouter sim --help`: --host, --port, --scenario, ...")

    bench = sub.add_parser("bench", help="load-test an endpoint (cancellation, latency, CPU)")
    from gateway.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(bench)

    keys_cmd = sub.add_parser("keys", help="manage API keys (the store in the config)")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    _add_policy_options(create, name_default="")
    listing = keys_sub.add_parser("list", help="every key, its state and balance")
    show = keys_sub.add_parser("show", help="one key's policy and balance")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (new requests refused at once)")
    update = keys_sub.add_parser("update", help="change a key's policy")
    _add_policy_options(update, name_default=None)
    top_up = keys_sub.add_parser("top-up", help="add dollars to a key's balance")
    for command in (show, revoke, update, top_up):
        command.add_argument("id", help="the key's public id (12 hex characters)")
    top_up.add_argument("amount", help="dollars, exact (e.g. 10 or 2.50; negative to deduct)")
    for command in (create, listing, show, revoke, update, top_up):
        command.add_argument("--data-dir")
        command.add_argument("--json", action="store_true", help="print JSON")

    doctor = sub.add_parser("doctor", help="check a running deployment (through nginx)")
    from gateway.doctor import add_arguments as add_doctor_arguments

    add_doctor_arguments(doctor)

    db_cmd = sub.add_parser("db", help="the store's schema")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--data-dir")

    # `arouter sim ...` hands its arguments to the fake upstream's own parser.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sim":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "serve":
            os.environ["AROUTER_LOG_LEVEL"] = args.log_level
            os.environ["AROUTER_LOG_FORMAT"] = args.log_format
            config = _load_config(args)
            workers = args.workers or config.workers
            if workers > 1:
                return _serve_workers(config, workers, args.config, args.first_key)
            else:
                trio.run(_serve, config, args.first_key)
        elif args.command == "sim":
            from gateway.sim.server import main as sim_main

            return sim_main([*rest, *args.sim_args])
        elif args.command == "bench":
            from gateway.bench.cli import run_from_args

            return run_from_args(args)
        elif args.command == "keys":
            return trio.run(_keys_command, _load_config(args), args)
        elif args.command == "doctor":
            from gateway.doctor import run_from_args as doctor_main

            return doctor_main(args)
        elif args.command == "db":
            before, after = trio.run(_migrate, _load_config(args))
            print(f"schema version {before} -> {after}" if after != before
                  else f"schema version {after}: up to date")
    except (ConfigError, UsageError, GatewayError) as exc:
        print(f"arouter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
