"""The settlement outbox: rows the store refused survive on disk until it takes them."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from gateway.accounts.outbox import Outbox
from gateway.serve.server import running
from gateway.store.rows import Settlement
from gateway.store.sqlite import SqliteStore
from tests.support.gateways import FAKE_PROVIDER_KEY, Sim, add_key, make_config
from tests.support.rows import make_key, record, reservation


async def test_rows_round_trip_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    key = attrs.make_class("K", ["id"])("0123456789ab")
    outbox = Outbox(tmp_path / "outbox", "me")
    rows = [Settlement(record(key, f"g{n}", cost=n)) for n in range(3)]  # type: ignore[arg-type]
    await outbox.append(rows[:2])
    await outbox.append(rows[2:])
    with (tmp_path / "outbox" / "me.jsonl").open("a") as file:
        file.write('{"generation_id": "torn')  # the process died mid-write
    [(path, found)] = (await outbox.files()).items()
    assert found == rows
    await outbox.keep_only(rows[1:2])
    assert (await outbox.files())[path] == rows[1:2]
    await outbox.keep_only([])
    assert await outbox.files() == {}


async def test_a_settlement_the_store_refused_is_replayed_with_its_real_usage(
    tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AROUTER_TEST_FAKE_KEY", FAKE_PROVIDER_KEY)
    config = make_config(tmp_path, sim.url, drain=1.0)
    secret = await add_key(config)
    body = {"model": "fake/lorem", "stream": True, "messages": [
        {"role": "user", "content": "#sim tag=ob tokens=20 interval_ms=20\nhi"}]}
    async with running(config) as run:
        async with httpx.AsyncClient(timeout=30) as client, client.stream(
            "POST", f"{run.url}/v1/chat/completions", json=body,
            headers={"authorization": f"Bearer {secret}"},
        ) as response:
            closed = False
            async for _ in response.aiter_lines():
                if not closed:
                    closed = True
                    await run.gateway.store.aclose()  # the database goes away mid-stream
        with trio.fail_after(10):
            while not run.gateway.ledger.unsettled:  # noqa: ASYNC110
                await trio.sleep(0.01)
        [file] = list((tmp_path / "outbox").glob("*.jsonl"))
        [line] = file.read_text().splitlines()
        assert json.loads(line)["status"] == "ok"
    # The process is gone with the row only in its outbox; the next start replays it.
    async with running(config) as again:
        [row] = await again.gateway.store.records()
        assert (row.status, row.usage_estimated, row.completion_tokens) == ("ok", False, 20)
        assert await again.gateway.store.reservations() == []


async def test_the_database_and_the_outbox_are_private_files(tmp_path: Path) -> None:
    """Keys' hashes, balances and usage: 0600 files in 0700 folders, from creation on."""
    import stat

    data = tmp_path / "fresh" / "data"
    store = SqliteStore(data / "arouter.db")
    await store.open()
    key = await make_key(store)
    await store.reserve([reservation(key, 0, "g1")])  # the WAL has writes
    outbox = Outbox(data / "outbox", "i1")
    await outbox.append([Settlement(record(key, "g1", cost=1))])
    try:
        for path in (data, data / "outbox"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        for path in (data / "arouter.db", data / "arouter.db-wal", data / "arouter.db-shm",
                     outbox.path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        await store.aclose()
    # A database made world-readable by an older version is narrowed at the next open.
    (data / "arouter.db").chmod(0o644)
    await store.open()
    await store.aclose()
    assert stat.S_IMODE((data / "arouter.db").stat().st_mode) == 0o600
