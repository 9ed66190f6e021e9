"""Keys, credits, rate limits and the ledger, through a real gateway on loopback sockets.

The model ``fake/lorem`` costs 1 micro-dollar per prompt token and 2 per completion token
(``tests/conftest.py``), so every amount here is exact.
"""

from __future__ import annotations

import json
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from gateway import service
from gateway.accounts import keys
from gateway.config import AccountsConfig
from gateway.limits.base import Limits
from gateway.serve.server import running
from gateway.wire import sse
from tests.support.gateways import (
    FAKE_PROVIDER_KEY,
    GatewayFactory,
    Gw,
    Sim,
    make_config,
    new_key,
    reservation_for,
)
from tests.support.redis_server import redis_server

MAX_TOKENS = 10


def body(tag: str, directive: str = "", *, stream: bool = True,
         model: str = "fake/lorem", max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhello"}],
    }


async def post(gw: Gw, secret: str, payload: dict[str, Any],
               path: str = "/v1/chat/completions") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{gw.url}{path}", json=payload,
                                 headers={"authorization": f"Bearer {secret}"})


async def balance(gw: Gw, key_id: str) -> int | None:
    row = await gw.running.gateway.store.find_key(key_id)
    assert row is not None
    return row.balance


async def held(gw: Gw, key_id: str, limits: Limits) -> int:
    return (await gw.running.gateway.limiter.usage(key_id, limits)).concurrent


# -- credits --------------------------------------------------------------------------------


async def test_several_choices_reserve_the_output_of_each(gw: Gw, sim: Sim) -> None:
    # n=3 may produce three answers' worth of output: a balance for one is not enough.
    payload = {**body("three", stream=False), "n": 3}
    one = reservation_for(payload)
    three = one + 2 * payload["max_tokens"] * 2  # two more answers at 2 per token
    poor, _ = await new_key(gw, balance=one)
    refused = await post(gw, poor, payload)
    assert refused.status_code == 402, refused.text
    secret, key = await new_key(gw, balance=three)
    response = await post(gw, secret, payload)
    assert response.status_code == 200 and len(response.json()["choices"]) == 3
    [row] = await gw.wait_records(1, key_id=key.id)
    assert await balance(gw, key.id) == three - row.cost


async def test_fifty_parallel_requests_against_a_balance_for_one_admit_exactly_one(
    gw: Gw, sim: Sim
) -> None:
    payload = body("fifty")
    secret, key = await new_key(gw, balance=reservation_for(payload))
    statuses: list[int] = []
    bodies: list[dict[str, Any]] = []

    async def one() -> None:
        response = await post(gw, secret, payload)
        statuses.append(response.status_code)
        if response.status_code != 200:
            bodies.append(response.json())

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)

    assert sorted(statuses) == [200] + [402] * 49
    assert {b["error"]["type"] for b in bodies} == {"insufficient_credits"}
    [row] = await gw.wait_records(1, key_id=key.id)
    assert row.status == "ok" and row.cost > 0
    assert await balance(gw, key.id) == reservation_for(payload) - row.cost >= 0
    assert await gw.running.gateway.store.reservations() == []
    assert len(sim.records("fifty")) == 1  # refused requests never reach the upstream


async def test_cost_is_charged_from_the_providers_usage(gw: Gw, sim: Sim) -> None:
    secret, key = await new_key(gw, balance=1_000_000)
    response = await post(gw, secret, body("cost", "tokens=7"))
    usage = [json.loads(e.data) for e in sse.Decoder().feed(response.content)
             if e.data != "[DONE]"][-1]["usage"]
    [row] = await gw.wait_records(1, key_id=key.id)
    expected = usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2
    assert (row.cost, row.usage_estimated) == (expected, False)
    assert await balance(gw, key.id) == 1_000_000 - expected


async def test_the_402_names_the_amounts(gw: Gw) -> None:
    secret, _ = await new_key(gw, balance=3)
    response = await post(gw, secret, body("poor"))
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == 402
    assert "$0.000003" in error["message"]


# -- rate limits ------------------------------------------------------------------------------


async def test_requests_per_minute_give_429_with_retry_after(gw: Gw) -> None:
    secret, _ = await new_key(gw, rpm=2)
    statuses = [(await post(gw, secret, body(f"rpm{i}"))).status_code for i in range(2)]
    refused = await post(gw, secret, body("rpm3"))
    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_concurrent_streams_are_capped_and_freed_when_one_ends(
    gw: Gw, sim: Sim
) -> None:
    secret, key = await new_key(gw, max_concurrent=1)
    limits = Limits(concurrent=1)
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "POST", f"{gw.url}/v1/chat/completions",
        json=body("slow", "tokens=3 interval_ms=200"),
        headers={"authorization": f"Bearer {secret}"},
    ) as first:
        assert first.status_code == 200
        assert await held(gw, key.id, limits) == 1
        second = await post(gw, secret, body("second"))
        assert second.status_code == 429
        await first.aread()
    await gw.wait_records(1, key_id=key.id)
    assert await held(gw, key.id, limits) == 0
    assert (await post(gw, secret, body("third"))).status_code == 200


# -- key policy -------------------------------------------------------------------------------


async def test_a_model_outside_the_allowlist_is_403(gw: Gw, sim: Sim) -> None:
    secret, _ = await new_key(gw, models=("fast",))
    refused = await post(gw, secret, body("allow"))
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert (await post(gw, secret, body("allow2", model="fast"))).status_code == 200
    assert [r.tag for r in sim.records()] == ["allow2"]


async def test_a_revocation_made_elsewhere_takes_effect_within_one_key_refresh(
    gw: Gw, sim: Sim
) -> None:
    secret, key = await new_key(gw)
    assert (await post(gw, secret, body("before"))).status_code == 200  # now cached
    # As `arouter keys revoke` does from another process: straight to the store.
    await gw.running.gateway.store.update_key(key.id, {"revoked": True})
    revoked_at = trio.current_time()
    refresh = gw.running.gateway.config.accounts.key_refresh
    with trio.fail_after(refresh * 5 + 5):  # generous: the machine is shared
        while (refused := await post(gw, secret, body("after"))).status_code == 200:  # noqa: ASYNC110
            await trio.sleep(refresh / 10)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid API key"
    # Within a refresh or two, not at some cache expiry far later.
    assert trio.current_time() - revoked_at < refresh * 5 + 5


async def test_every_failed_key_costs_one_store_read_known_id_or_not(
    gw: Gw, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAULTS F13: a wrong secret for a cached (recently used) id must not answer faster
    than an unknown id: both read the store. Only keys that verify use the cache."""
    gateway = gw.running.gateway
    secret, key = await new_key(gw)
    reads: list[str] = []
    find_key = gateway.store.find_key

    async def counted(key_id: str) -> Any:
        reads.append(key_id)
        return await find_key(key_id)

    compared: list[str] = []

    def verify(presented: str, row: Any) -> Any:
        compared.append(presented)
        return keys.verify(presented, row)

    monkeypatch.setattr(gateway.store, "find_key", counted)
    monkeypatch.setattr(service, "verify", verify)
    assert (await post(gw, secret, body("warm"))).status_code == 200  # now cached
    wrong = f"lr_live_{key.id}_{'0' * 48}"
    unknown = f"lr_live_{'f' * 12}_{'0' * 48}"
    for _ in range(3):
        assert (await post(gw, wrong, body("w"))).status_code == 401
        assert (await post(gw, unknown, body("u"))).status_code == 401
        assert (await post(gw, secret, body("ok"))).status_code == 200
    assert reads.count(key.id) == 1 + 3  # the first lookup, then once per wrong secret
    assert reads.count("f" * 12) == 3  # once per attempt, never cached
    # The same hash comparisons too: the cached row's or a dummy's, then the stored row's.
    assert compared.count(wrong) == compared.count(unknown) == 2 * 3


async def test_an_expired_key_is_401(gw: Gw) -> None:
    secret, _ = await new_key(gw, expires_at=time.time() - 1)
    assert (await post(gw, secret, body("expired"))).status_code == 401


# -- the caller's view ------------------------------------------------------------------------


async def test_a_key_sees_its_balance_limits_and_its_own_generations(gw: Gw) -> None:
    secret, key = await new_key(gw, balance=2_500_000, rpm=100, max_concurrent=4)
    other, _ = await new_key(gw)
    response = await post(gw, secret, body("mine", "tokens=3"))
    generation_id = response.headers["x-generation-id"]
    await gw.wait_records(1, key_id=key.id)
    async with httpx.AsyncClient(timeout=10) as client:
        mine = await client.get(f"{gw.url}/v1/key", headers={"x-api-key": secret})
        row = await client.get(f"{gw.url}/v1/generation", params={"id": generation_id},
                               headers={"authorization": f"Bearer {secret}"})
        theirs = await client.get(f"{gw.url}/v1/generation", params={"id": generation_id},
                                  headers={"authorization": f"Bearer {other}"})
    data = mine.json()["data"]
    assert data["limits"] == {"rpm": 100, "tpm": None, "max_concurrent": 4}
    assert data["usage"]["concurrent"] == 0
    cost = row.json()["data"]["cost_micro_usd"]
    assert cost > 0 and row.json()["data"]["cost_usd"] == f"0.{cost:06d}"
    assert "cost" not in row.json()["data"]  # every amount says its unit
    assert data["balance_micro_usd"] == 2_500_000 - cost
    assert data["balance_usd"] == f"2.{500_000 - cost:06d}"
    assert "hash" not in data and secret not in mine.text
    assert row.json()["data"]["id"] == generation_id
    assert row.json()["data"]["status"] == "ok"
    assert theirs.status_code == 404  # another key's row does not exist, as far as it knows


async def test_a_refused_requests_id_is_explained_as_never_recorded(gw: Gw, sim: Sim) -> None:
    poor, _ = await new_key(gw, balance=1)
    refused = await post(gw, poor, body("refused"))
    assert refused.status_code == 402
    generation_id = refused.headers["x-generation-id"]
    async with httpx.AsyncClient(timeout=10) as client:
        asked = await client.get(f"{gw.url}/v1/generation", params={"id": generation_id},
                                 headers={"authorization": f"Bearer {poor}"})
        unknown = await client.get(f"{gw.url}/v1/generation", params={"id": "gen-" + "0" * 24},
                                   headers={"authorization": f"Bearer {poor}"})
    assert asked.status_code == 404
    message = asked.json()["error"]["message"]
    assert "refused before admission (402 insufficient_credits)" in message
    assert "never recorded" in message and "settled" not in message
    assert "never recorded" in unknown.json()["error"]["message"]


async def test_a_running_requests_id_is_explained_as_still_running(gw: Gw, sim: Sim) -> None:
    secret, _ = await new_key(gw)
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "POST", f"{gw.url}/v1/chat/completions",
        json=body("running", "tokens=100 interval_ms=20", max_tokens=100),
        headers={"authorization": f"Bearer {secret}"},
    ) as response:
        generation_id = response.headers["x-generation-id"]
        asked = await client.get(f"{gw.url}/v1/generation", params={"id": generation_id},
                                 headers={"authorization": f"Bearer {secret}"})
    assert asked.status_code == 404
    assert "still running" in asked.json()["error"]["message"]


# -- the admin API ----------------------------------------------------------------------------


async def test_the_admin_api_is_off_without_a_token(gw: Gw) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{gw.url}/admin/keys", headers=gw.headers)
    assert response.status_code == 403
    assert "AROUTER_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_the_admin_api_manages_keys(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "admin-" + "0" * 40
    monkeypatch.setenv("AROUTER_ADMIN_TOKEN", token)
    admin = {"authorization": f"Bearer {token}"}
    async with start_gateway() as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        for headers in ({}, gw.headers, {"authorization": "Bearer wrong"}):
            assert (await client.get("/admin/keys", headers=headers)).status_code == 401
        created = await client.post("/admin/keys", headers=admin, json={
            "name": "team-a", "balance_usd": "1.50", "rpm": 60, "models": ["fast"]})
        assert created.status_code == 201
        view = created.json()
        secret, key_id = view["key"], view["id"]
        assert view["balance_usd"] == "1.500000" and view["balance_micro_usd"] == 1_500_000
        assert view["limits"]["rpm"] == 60
        assert (await post(gw, secret, body("adm", model="fast"))).status_code == 200

        bad = await client.post("/admin/keys", headers=admin, json={"balance_usd": "-1"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "balance_usd"
        # A unit-less amount is refused by name, never read as micro-dollars (or dollars).
        for path, field in (("/admin/keys", "balance"), (f"/admin/keys/{key_id}/top-up",
                                                         "amount")):
            unitless = await client.post(path, headers=admin, json={field: 5})
            assert unitless.status_code == 400
            assert unitless.json()["error"]["param"] == field
            assert f"{field}_usd" in unitless.json()["error"]["message"]
        # Dollars, as on the CLI: PATCH balance_usd 5 is five dollars.
        five = await client.patch(f"/admin/keys/{key_id}", headers=admin,
                                  json={"balance_usd": 5})
        assert five.json()["balance_micro_usd"] == 5_000_000
        # An allowlist naming a model nobody serves is a typo until said otherwise.
        typo = await client.patch(f"/admin/keys/{key_id}", headers=admin,
                                  json={"models": ["fast", "sim/lorme"]})
        assert typo.status_code == 400 and typo.json()["error"]["param"] == "models"
        assert "'sim/lorme'" in typo.json()["error"]["message"]
        later = await client.patch(f"/admin/keys/{key_id}", headers=admin, json={
            "models": ["fast", "later/model"], "allow_unknown_models": True})
        assert later.json()["models"] == ["fast", "later/model"]
        unknown = await client.post("/admin/keys", headers=admin, json={"rpn": 1})
        assert unknown.status_code == 400 and "rpn" in unknown.json()["error"]["message"]

        topped = await client.post(f"/admin/keys/{key_id}/top-up", headers=admin,
                                   json={"amount_usd": "0.25"})
        shown = await client.get(f"/admin/keys/{key_id}", headers=admin)
        assert topped.json()["balance_usd"] == shown.json()["balance_usd"] == "5.250000"
        patched = await client.patch(f"/admin/keys/{key_id}", headers=admin,
                                     json={"rpm": None, "models": []})
        assert patched.json()["limits"]["rpm"] is None and patched.json()["models"] == []
        listed = await client.get("/admin/keys", headers=admin)
        assert key_id in {k["id"] for k in listed.json()["data"]}
        assert secret not in listed.text and "hash" not in listed.text

        await client.post(f"/admin/keys/{key_id}/revoke", headers=admin)
        assert (await post(gw, secret, body("adm2", model="fast"))).status_code == 401
        assert (await client.get("/admin/keys/000000000000", headers=admin)).status_code == 404


# -- every ending leaves one row and holds nothing --------------------------------------------


ENDINGS = [
    # (directive, abort after this many content chunks or None, expected status)
    ("tokens=4", None, "ok"),
    ("scenario=status_500", None, "upstream_error"),
    ("scenario=midstream_error tokens=6", None, "partial"),
    ("scenario=cut tokens=6", None, "partial"),
    ("tokens=400 interval_ms=5", 0, "client_abort"),  # before the first token arrives
    ("tokens=400 interval_ms=5", 3, "client_abort"),  # mid-stream
    ("scenario=slow_first_token first_token_ms=5000", 0, "client_abort"),
]


@pytest.mark.parametrize(("directive", "abort_after", "status"), ENDINGS)
async def test_every_ending_settles_one_row_and_frees_its_slot_and_credits(
    start_gateway: GatewayFactory, sim: Sim, directive: str, abort_after: int | None,
    status: str,
) -> None:
    # Aborts before the first token need the status line early: a short commit grace.
    grace = {"commit_grace": 0.001} if abort_after is not None else {}
    async with start_gateway(**grace) as gw:
        limits = Limits(rpm=1000, tpm=1_000_000, concurrent=5)
        secret, key = await new_key(gw, balance=10_000_000, rpm=1000, tpm=1_000_000,
                                    max_concurrent=5)
        payload = body("end", directive, max_tokens=400)
        if abort_after is None:
            await post(gw, secret, payload)
        else:
            async with httpx.AsyncClient(timeout=10) as client, client.stream(
                "POST", f"{gw.url}/v1/chat/completions", json=payload,
                headers={"authorization": f"Bearer {secret}"},
            ) as response:
                chunks = 0
                async for line in response.aiter_lines():
                    chunks += line.startswith("data: ")
                    if chunks >= abort_after:
                        break
        [row] = await gw.wait_records(1, key_id=key.id)
        assert row.status == status
        assert row.cancelled == (status == "client_abort")
        assert row.cost == row.prompt_tokens + 2 * row.completion_tokens
        assert await gw.running.gateway.store.reservations() == []
        assert await held(gw, key.id, limits) == 0
        assert await balance(gw, key.id) == 10_000_000 - row.cost
        await sim.wait_record("end", lambda r: r.ended_at is not None)


async def _abort_raw(url: str, secret: str, tag: str, after: float, *,
                     accepted: list[str] | None = None) -> None:
    """A streaming request over a raw socket, closed ``after`` seconds after it was sent
    (any phase, even before admission) or, with ``accepted``, after its status line arrived
    (an admitted request: the gateway answers nothing before admission succeeds)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body(tag, "tokens=100 interval_ms=2", max_tokens=100)).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        await stream.send_all(head + payload)
        if accepted is not None:
            first = await stream.receive_some(65536)
            assert first.startswith(b"HTTP/1.1 200"), first[:100]
            accepted.append(tag)
        with trio.move_on_after(after):
            while await stream.receive_some(65536):
                pass
    finally:
        await stream.aclose()


async def test_a_thousand_aborted_streams_leave_nothing_held(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    rng = random.Random(5)
    async with start_gateway() as gw:
        limits = Limits(rpm=100_000, tpm=100_000_000, concurrent=200)
        secret, key = await new_key(gw, balance=1_000_000_000, rpm=100_000,
                                    tpm=100_000_000, max_concurrent=200)
        accepted: list[str] = []
        for batch in range(10):
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    # A quarter abort at any moment, even before admission; the rest once
                    # their stream has started.
                    nursery.start_soon(partial(
                        _abort_raw, gw.url, secret, f"k{batch}-{i}", rng.uniform(0.0, 0.1),
                        accepted=None if i % 4 == 0 else accepted,
                    ))
        with trio.fail_after(30):
            while await gw.running.gateway.store.reservations():  # noqa: ASYNC110
                await trio.sleep(0.01)
        rows = await gw.records(key_id=key.id)
        upstream_calls = {r.tag for r in sim.records()}
        assert len(accepted) == 750
        assert set(accepted) <= upstream_calls
        # Every accepted request has its row; every upstream call came from one.
        assert len(rows) >= len(upstream_calls) >= 750 and len(rows) <= 1000
        assert len({r.generation_id for r in rows}) == len(rows)
        assert await gw.running.gateway.store.reservations() == []
        assert await held(gw, key.id, limits) == 0
        assert await balance(gw, key.id) == 1_000_000_000 - sum(r.cost for r in rows)


# -- the store down ---------------------------------------------------------------------------


async def test_a_store_that_is_down_fails_closed_with_a_fast_503(gw: Gw, sim: Sim) -> None:
    secret, _ = await new_key(gw)
    assert (await post(gw, secret, body("up"))).status_code == 200
    await gw.running.gateway.store.aclose()  # the database went away
    # Admission itself makes no store call, so the first request to find the store gone
    # may have reached its upstream; it is answered 503 at its commit point (the store has
    # no row of it), and its upstream call is ended.
    with trio.fail_after(5):
        response = await post(gw, secret, body("down"))
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"
    if sim.records("down"):
        await sim.wait_record("down", lambda r: r.ended_at is not None)
    # From then on the store is suspect: each admission proves it first, and no upstream
    # is called while it does not answer.
    with trio.fail_after(5):
        again = await post(gw, secret, body("down2", stream=False))
    assert again.status_code == 503
    assert not sim.records("down2")


async def test_limits_are_shared_through_redis_and_degrade_to_local_when_it_dies(
    tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AROUTER_TEST_FAKE_KEY", FAKE_PROVIDER_KEY)
    with redis_server() as redis:
        config = make_config(tmp_path, sim.url)
        config = attrs.evolve(config, accounts=AccountsConfig(redis_url=redis.url))
        async with running(config) as run:
            gw = Gw(run, "")
            secret, _ = await new_key(gw, rpm=2)
            assert [(await post(gw, secret, body(f"r{i}"))).status_code
                    for i in range(3)] == [200, 200, 429]
            assert redis.command(b"DBSIZE") not in (b":0\r\n", b"")  # the buckets are in Redis
            redis.stop()
            # Redis is gone: requests are still limited, by this process alone, and said so.
            statuses = [(await post(gw, secret, body(f"d{i}"))).status_code for i in range(3)]
            assert statuses == [200, 200, 429]
            async with httpx.AsyncClient(timeout=10) as client:
                metrics = (await client.get(f"{gw.url}/metrics")).text
            assert "arouter_limiter_degraded 1.0" in metrics
