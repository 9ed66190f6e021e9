"""What admission adds to a request at c=50, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/admission.py [--requests 5000] [--concurrency 50]

Fifty tasks each admit a request for a metered key (``Accounts.admit``, with the store, the
group-committing ledger and the credit leases of a real gateway process), hold it 5 ms as a
short upstream call would, and settle it (``Accounts.settle``); the time each ``admit``
takes is the figure. Beside it, the same loop with a store round trip per admission: the
reservation waited for through the group commit, as admission worked before leases (issue
16). PostgreSQL is a throwaway server started from the binaries on PATH in a temp folder
(skipped, and said so, if there are none). In-process, one Trio loop: what admission
itself costs, not the HTTP around it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.accounts import keys  # noqa: E402
from gateway.accounts.admission import Accounts  # noqa: E402
from gateway.accounts.ledger import Ledger  # noqa: E402
from gateway.accounts.price_table import builtin  # noqa: E402
from gateway.config import load  # noqa: E402
from gateway.limits.local import LocalLimiter  # noqa: E402
from gateway.observe.metrics import Metrics  # noqa: E402
from gateway.routing.catalog import Catalog  # noqa: E402
from gateway.store.base import Store  # noqa: E402
from gateway.store.rows import RequestRecord  # noqa: E402
from gateway.store.sqlite import SqliteStore  # noqa: E402
from gateway.wire.openai.request import parse_request  # noqa: E402

CONFIG = """
[providers.fake]
dialect = "openai"
base_url = "http://127.0.0.1:9/v1"
[providers.fake.prices.lorem]
prompt = 1
completion = 2
"""


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "max_ms": ordered[-1] * 1000}


async def _measure(store: Store, requests: int, concurrency: int,
                   round_trip: bool) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="arouter-admission-"))
    (folder / "arouter.toml").write_text(CONFIG)
    config = load(folder / "arouter.toml", {"AROUTER_DATA_DIR": str(folder)})
    catalog = Catalog(config, builtin())
    _, key = keys.generate(name="bench", created_at=time.time(), balance=10**13)
    await store.add_key(key)
    ledger = Ledger(store)
    accounts = Accounts(config, ledger, LocalLimiter(), Metrics(), "bench")
    body = {"model": "fake/lorem", "max_tokens": 20, "stream": True,
            "messages": [{"role": "user", "content": "Count to ten, slowly."}]}
    request = parse_request(body)
    route = catalog.resolve(request.model)
    waits: list[float] = []
    todo = iter(range(requests))

    async def admit(generation_id: str) -> Any:
        admission = await accounts.admit(key, request, route, generation_id, time.time())
        if round_trip:  # the reservation written before admission returns, as before
            error = await accounts.recorded(admission)
            assert error is None, error
        return admission

    async def client() -> None:
        for n in todo:
            started = trio.current_time()
            admission = await admit(f"g{n}")
            waits.append(trio.current_time() - started)
            await trio.sleep(0.005)
            record = admission.held.record(
                deployment="fake/lorem", upstream_dialect="openai", status="ok",
                http_status=200, prompt_tokens=10, completion_tokens=20, cached_tokens=0,
                reasoning_tokens=0, usage_estimated=False, cost=0, error_type=None,
                ttft_ms=1.0, duration_ms=5.0, cancelled=False, created_at=time.time())
            await accounts.settle(admission, record, route.targets[0])

    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        accounts.leases.spawn = nursery.start_soon
        begun = time.perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(concurrency):
                clients.start_soon(client)
        wall = time.perf_counter() - begun
        await ledger.aclose()
    rows = await store.records(key_id=key.id)
    assert len(rows) == requests and all(isinstance(r, RequestRecord) for r in rows)
    return {**_percentiles(waits), "admissions_per_s": requests / wall}


async def _backend(name: str, open_store: Callable[[], Awaitable[Store]], requests: int,
                   concurrency: int) -> None:
    for round_trip in (False, True):
        store = await open_store()
        try:
            figures = await _measure(store, requests, concurrency, round_trip)
        finally:
            await store.aclose()
        how = "store round trip (before)" if round_trip else "lease (now)"
        print(f"| {name} | {how} | {figures['p50_ms']:.3f} ms | {figures['p99_ms']:.3f} ms | "
              f"{figures['max_ms']:.1f} ms | {figures['admissions_per_s']:.0f}/s |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"{args.requests} admissions at c={args.concurrency}, each held 5 ms, then settled\n")
    print("| store | admission | p50 | p99 | max | admissions |\n|---|---|---|---|---|---|")
    folder = Path(tempfile.mkdtemp(prefix="arouter-admission-db-"))
    counter = iter(range(100))

    async def sqlite() -> Store:
        store = SqliteStore(folder / f"{next(counter)}.db")
        await store.open()
        return store

    trio.run(_backend, "SQLite", sqlite, args.requests, args.concurrency)
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tests.support.pg_server import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        print(f"| PostgreSQL | skipped: {exc} | | | | |")
        return 0
    try:
        from gateway.store.postgres import PostgresStore

        async def postgres() -> Store:
            store = PostgresStore(server.url)
            await store.open()
            return store

        async def fresh_database_each_time() -> None:
            await _backend("PostgreSQL", postgres, args.requests, args.concurrency)

        trio.run(fresh_database_each_time)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
