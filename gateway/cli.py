"""The ``arouter`` command: ``serve``, ``sim``, ``bench``, ``keys``, ``db``, ``doctor`` and
``config``.

``serve`` with no arguments runs the embedded default: 127.0.0.1:8080, a SQLite file in the
data directory, the simulator provider, and any real provider whose API key variable is set.

Rules:
1. Before serving, the store is opened and the address bound (``preflight.py``); either
   failing is one line saying what and what to do, exit status 1. Bad usage or a bad config
   file exits 2. Never a traceback for what the operator can fix.
2. The first API key is created only once the gateway listens and its store works, and is
   printed in the banner, once (only its hash is stored): a start that fails creates
   nothing. A start that creates no key (``--no-first-key``) on a store with none says how
   to make one.
3. The banner is printed when the gateway is ready, and names the store actually in use.
4. One source of truth: the ``Config`` built here from the file, the environment and the
   command line is the one every process serves (``--workers`` hands it to each worker).
"""

from __future__ import annotations

import argparse
import json
import logging
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
from gateway.accounts import keys
from gateway.accounts.pricing import MoneyError
from gateway.config import Config, ConfigError
from gateway.errors import GatewayError, StoreUnavailable
from gateway.observe import logs
from gateway.serve.preflight import CannotStart
from gateway.store.base import Store
from gateway.store.rows import ApiKey

log = logging.getLogger("arouter.cli")

DESCRIPTION = ("arouter: a self-hosted LLM API gateway. Start with `arouter serve`; each "
               "command has its own --help.")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


async def _first_key(config: Config, create: bool) -> tuple[str | None, bool]:
    """(the new key's secret, or None; whether the store holds no key at all). A key is
    created only with ``create`` and only if the store has none (rule 2)."""
    async with _opened(config) as store:
        if await store.count_keys():
            return None, False
        if not create:
            return None, True
        secret, row = keys.generate(name="default", created_at=time.time())
        await store.add_key(row)
        return secret, False


@asynccontextmanager
async def _opened(config: Config) -> AsyncIterator[Store]:
    """The store, open; a store that cannot be opened is ``CannotStart``, explained."""
    from gateway.app import open_store

    store = open_store(config)
    try:
        await store.open()
    except StoreUnavailable as exc:
        raise await _store_failure(config, exc) from None
    try:
        yield store
    finally:
        await store.aclose()


async def _store_failure(config: Config, exc: Exception) -> CannotStart:
    from gateway.serve.preflight import explain_store

    # Blocking probes (a TCP connect, one driver connect), each bounded.
    return CannotStart(await trio.to_thread.run_sync(explain_store, config, str(exc)))


async def _check_store(config: Config) -> None:
    async with _opened(config):
        pass


async def _serve(config: Config, first: bool, hconfig: Any, sockets: Any,
                 keys_hint: str) -> None:
    from hypercorn.utils import LifespanFailureError

    from gateway.app import create_app
    from gateway.serve.server import serve, tune_gc

    app = create_app(config)
    tune_gc()
    stop = trio.Event()

    async def on_signals() -> None:
        # The first SIGTERM/SIGINT drains: no new requests, open ones run until the drain
        # deadline. A second one ends them now; each still gets its terminal event and its
        # ledger row before the process exits 0.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if stop.is_set():
                    log.warning("ending open requests now: each gets its terminal event and "
                                "its ledger row")
                    app.gateway.drain_now()
                else:
                    # Said on the terminal, where the operator's finger is on Ctrl-C.
                    log.warning("stopping: new requests are refused, open ones may run "
                                "until the drain deadline; a second Ctrl-C (SIGINT or "
                                "SIGTERM) ends them now",
                                extra={"drain_seconds": config.deadlines.drain})
                    stop.set()

    async def serve_until_stopped(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status,
                    hconfig=hconfig, sockets=sockets)
        nursery.cancel_scope.cancel("served and settled")  # stop listening for signals

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signals)
            bound = await nursery.start(serve_until_stopped)
            if not app.gateway.ready:
                # Hypercorn's lifespan ends its startup wait even when the app's startup
                # failed, so "started" can come first; the failure is on its way up.
                with trio.move_on_after(5):
                    await trio.sleep_forever()
                raise CannotStart("the gateway did not start (see the log above)")
            first_key, none = await _first_key(config, first)  # listening, ready (rule 2)
            _banner(config, bound, first_key, keys_hint if none else None)
    except BaseExceptionGroup as group:
        # Several tasks end at once when one fails: say the one thing the operator can act
        # on (a store explained, else the app's own startup message).
        leaves = list(_leaves(group))
        for wanted in (CannotStart, LifespanFailureError):
            found = next((e for e in leaves if isinstance(e, wanted)), None)
            if isinstance(found, CannotStart):
                raise found from None
            if found is not None:
                raise await _startup_failure(config, found) from None
        raise


async def _startup_failure(config: Config, exc: Exception) -> CannotStart:
    """The app's startup failed after the pre-flight passed: the store, gone meanwhile, or
    something else, said as the app said it."""
    try:
        await _check_store(config)
    except CannotStart as store:
        return store
    return CannotStart(f"the gateway failed to start: {exc}")


def _serve_workers(config: Config, workers: int, first: bool, hconfig: Any, sockets: Any,
                   log_settings: tuple[str, str], keys_hint: str) -> int:
    """N worker processes on one listening socket (``workers.py``), each serving this very
    ``config`` (rule 4)."""
    from hypercorn.utils import repr_socket_addr

    from gateway.serve import workers as workers_mod

    urls = [f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
            for sock in sockets.insecure_sockets]
    # The workers share their metrics through files (see metrics.py).
    metrics_dir = tempfile.mkdtemp(prefix="arouter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    hconfig.worker_class = "trio"

    def bound() -> None:
        # Listening (connections queue until a worker accepts) and the store works.
        first_key, none = _run(_first_key, config, first)
        _banner(config, urls, first_key, keys_hint if none else None)
        print(f"workers: {workers}", flush=True)

    try:
        return workers_mod.run(hconfig, workers, config, log_settings=log_settings,
                               sockets=sockets, on_bound=bound)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _address(config: Config) -> str:
    from gateway.serve.preflight import address

    return address(config.host, config.port)


def _run(fn: Any, *args: Any) -> Any:
    """``trio.run``, with a nursery's group of one known error unwrapped: the operator
    gets the line that error says, not a group's traceback."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(leaves[0], _KNOWN):
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[Any]) -> Any:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _prices_line(config: Config) -> str:
    from gateway.routing.catalog import Catalog

    catalog = Catalog(config)
    table = catalog.table
    line = f"prices: built-in table of {table.date.isoformat()} ({table.count()} models)"
    unpriced = catalog.unpriced()
    if unpriced:
        line += (f"; {len(unpriced)} reachable without a price, refused to keys with a "
                 f"balance: {', '.join(unpriced[:4])}{', ...' if len(unpriced) > 4 else ''}")
    return line


def _banner(config: Config, bound: list[str], first_key: str | None,
            keys_hint: str | None = None) -> None:
    from gateway.serve.preflight import store_label

    url = bound[0] if bound else f"http://{_address(config)}"
    lines = [f"arouter listening on {url}  (store: {store_label(config)})"]
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
    elif keys_hint:
        lines += ["", "No API key exists yet (--no-first-key): make one with", f"    {keys_hint}",
                  ""]
    lines.append(f"try: curl -N {url}/v1/chat/completions -H \"Authorization: Bearer "
                 f"$AROUTER_KEY\" -H 'Content-Type: application/json' -d "
                 "'{\"model\":\"sim/lorem\",\"stream\":true,\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"hi\"}]}'")
    print("\n".join(lines), flush=True)


def _policy_from_args(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Key policy options given on the command line, validated like the admin API's; the
    model allowlist also against the catalog (``_check_models``)."""
    from gateway.accounts.policy import parse_policy

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
        raw["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
        if not args.allow_unknown_models:
            _check_models(config, raw["models"])
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


def _check_models(config: Config, names: list[str]) -> None:
    """Every allowlisted name must be one the gateway would serve: a typo would otherwise
    make a key that is refused (403) for the model its owner meant."""
    from gateway.routing.catalog import Catalog

    catalog = Catalog(config)
    for name in names:
        if not catalog.serves(name):
            raise UsageError(f"--models: {catalog.not_served(name, listing=True)} Fix the "
                             "name, or pass --allow-unknown-models for a model you will "
                             "configure later")


class UsageError(Exception):
    pass


# Errors whose message is all the operator needs (no traceback), and their exit status.
_KNOWN: tuple[type[Exception], ...] = (ConfigError, UsageError, GatewayError, CannotStart)


def _dollars(view: dict[str, Any]) -> str:
    from gateway.accounts.pricing import format_usd

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


def _key_table(views: list[dict[str, Any]]) -> str:
    """``keys list``: one line per key under a header, with its model allowlist."""
    now = time.time()
    rows = [("ID", "STATE", "BALANCE", "MODELS", "NAME")]
    for view in views:
        expires = view["expires_at"]
        state = ("revoked" if view["revoked"]
                 else "expired" if expires is not None and expires <= now else "active")
        rows.append((view["id"], state, _dollars(view), ",".join(view["models"]) or "all",
                     view["name"] or "-"))
    if len(rows) == 1:
        return "no keys (arouter keys create --name NAME makes one)"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                                row[4]]) for row in rows)


async def _keys_command(config: Config, args: argparse.Namespace) -> int:
    from gateway.accounts.policy import key_view
    from gateway.accounts.pricing import parse_usd

    command = args.keys_command
    # Options are checked before the store is touched: a refused command changes nothing.
    policy = _policy_from_args(config, args) if command in ("create", "update") else {}
    async with _opened(config) as store:
        if command == "create":
            secret, row = keys.generate(created_at=time.time(), **policy)
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
            else:
                print(_key_table(found))
            return 0
        key: ApiKey | None
        if command == "show":
            key = await store.find_key(args.id)
        elif command == "revoke":
            key = await store.update_key(args.id, {"revoked": True})
        elif command == "update":
            key = await store.update_key(args.id, policy)
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

    try:
        return await open_store(config).migrate()  # without open(), which would migrate first
    except StoreUnavailable as exc:
        raise await _store_failure(config, exc) from None


def _add_policy_options(parser: argparse.ArgumentParser, *, name_default: str | None) -> None:
    parser.add_argument("--name", default=name_default)
    parser.add_argument("--balance", metavar="USD",
                        help="credit balance in dollars (exact, e.g. 5 or 0.25); 'none' for "
                             "no balance limit")
    parser.add_argument("--rpm", help="requests per minute ('none': no limit)")
    parser.add_argument("--tpm", help="tokens per minute ('none': no limit)")
    parser.add_argument("--max-concurrent", dest="max_concurrent",
                        help="open requests at once ('none': no limit)")
    parser.add_argument("--models", help="comma-separated model allowlist (empty: all); "
                                         "each must be a model the config serves")
    parser.add_argument("--allow-unknown-models", action="store_true",
                        help="accept --models names the config does not serve (yet)")
    parser.add_argument("--expires-in", dest="expires_in",
                        help="expiry from now: 90m, 12h, 30d ('none': never)")


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the SQLite store lives (default: [server] data_dir, else "
                             "$AROUTER_DATA_DIR, else ~/.local/share/arouter)")


def _keys_hint(args: argparse.Namespace) -> str:
    """The command that makes a key in the store this ``serve`` uses."""
    config = f" --config {args.config}" if args.config else ""
    data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
    return f"arouter{config} keys create --name NAME{data_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arouter", description=DESCRIPTION)
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $AROUTER_CONFIG; none: the built-in "
                             "defaults). Every key: docs/configuration.md")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default=os.environ.get("AROUTER_LOG_LEVEL", "INFO").upper(),
                        help="log messages of this level and above, on stderr (default: "
                             "$AROUTER_LOG_LEVEL, else INFO)")
    parser.add_argument("--log-format", choices=("json", "text"),
                        default=os.environ.get("AROUTER_LOG_FORMAT", "json"),
                        help="one JSON object per line, or text for humans (default: "
                             "$AROUTER_LOG_FORMAT, else json)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="address to listen on (default: [server] host, else "
                                      "127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int,
                       help="port to listen on (default: [server] port, else 8080; 0 picks "
                            "a free one)")
    _data_dir_option(serve)
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes on one socket (default: [server] workers); "
                            "1 = in-process")
    serve.add_argument("--no-first-key", dest="first_key", action="store_false",
                       help="do not create (and print) a key when the store has none: for "
                            "fleets, where keys are made with `arouter keys create`")

    sim = sub.add_parser("sim", add_help=False,
                         help="run the fake upstream (OpenAI, Anthropic and Gemini dialects)")
    sim.add_argument("sim_args", nargs=argparse.REMAINDER,
                     help="see `arouter sim --help`: --host, --port, --scenario, ...")

    bench = sub.add_parser("bench", help="load-test an endpoint (cancellation, latency, CPU)")
    from gateway.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(bench)

    keys_cmd = sub.add_parser("keys", help="manage API keys (the store in the config)")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    _add_policy_options(create, name_default="")
    listing = keys_sub.add_parser("list", help="every key: state, balance, models, name")
    show = keys_sub.add_parser("show", help="one key's policy and balance")
    revoke = keys_sub.add_parser("revoke", help="revoke a key (new requests refused at once)")
    update = keys_sub.add_parser("update", help="change a key's policy")
    _add_policy_options(update, name_default=None)
    top_up = keys_sub.add_parser("top-up", help="add dollars to a key's balance")
    for command in (show, revoke, update, top_up):
        command.add_argument("id", help="the key's public id (12 hex characters)")
    top_up.add_argument("amount", help="dollars, exact (e.g. 10 or 2.50; negative to deduct)")
    for command in (create, listing, show, revoke, update, top_up):
        _data_dir_option(command)
        command.add_argument("--json", action="store_true", help="print JSON")

    doctor = sub.add_parser("doctor", help="check a running deployment (through nginx)")
    from gateway.doctor import add_arguments as add_doctor_arguments

    add_doctor_arguments(doctor)

    db_cmd = sub.add_parser("db", help="the store's schema")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending schema migrations")
    _data_dir_option(migrate)

    config_cmd = sub.add_parser("config", help="the configuration's reference")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("reference", help="print every config key and environment "
                                            "variable, as Markdown (docs/configuration.md)")

    # `arouter sim ...` hands its arguments to the fake upstream's own parser.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "sim":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logs.configure(args.log_level, args.log_format)
    try:
        if args.command == "serve":
            return _serve_command(args)
        elif args.command == "sim":
            from gateway.sim.server import main as sim_main

            return sim_main([*rest, *args.sim_args])
        elif args.command == "bench":
            from gateway.bench.cli import run_from_args

            return run_from_args(args)
        elif args.command == "keys":
            code: int = _run(_keys_command, _load_config(args), args)
            return code
        elif args.command == "doctor":
            from gateway.doctor import run_from_args as doctor_main

            return doctor_main(args)
        elif args.command == "db":
            before, after = _run(_migrate, _load_config(args))
            print(f"schema version {before} -> {after}" if after != before
                  else f"schema version {after}: up to date")
        elif args.command == "config":
            from gateway.config_reference import render

            print(render(), end="")
    except CannotStart as exc:
        print(f"arouter: {exc}", file=sys.stderr)
        return 1
    except _KNOWN as exc:
        print(f"arouter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    """Pre-flight (the store, then the address: rule 1), then serve in this process or in
    workers."""
    from gateway.serve.preflight import listen

    config = _load_config(args)
    workers = args.workers or config.workers
    _run(_check_store, config)
    hconfig, sockets = listen(config)
    if workers > 1:
        return _serve_workers(config, workers, args.first_key, hconfig, sockets,
                              (args.log_level, args.log_format), _keys_hint(args))
    _run(_serve, config, args.first_key, hconfig, sockets, _keys_hint(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
