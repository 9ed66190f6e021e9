"""The production topology: nginx with the shipped config in front of two ``arouter serve``
processes that share PostgreSQL and Redis, with the fake upstream behind them.

Everything is real: nginx, PostgreSQL and Redis from the machine's binaries, the gateways as
subprocesses, the fake upstream on loopback. nginx's ``proxy_read_timeout`` is set to 2 s
here, so a stream silent for 4 s only survives because keepalive comments cross nginx.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.accounts import keys
from gateway.wire import sse
from gateway.wire.sse import KEEPALIVE
from tests.support.gateways import FAKE_PROVIDER_KEY, Sim
from tests.support.nginx_server import nginx
from tests.support.processes import ROOT, ARouter, Served, free_port, serve, write_config

ENV = {"AROUTER_TEST_FAKE_KEY": FAKE_PROVIDER_KEY}


def body(tag: str, directive: str, max_tokens: int = 10_000) -> dict[str, Any]:
    return {"model": "fake/lorem", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhi"}]}


async def add_key(url: str, **policy: Any) -> tuple[str, keys.ApiKey]:
    from gateway.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    try:
        secret, row = keys.generate(name="fleet", created_at=time.time(), **policy)
        await store.add_key(row)
        return secret, row
    finally:
        await store.aclose()


@pytest.fixture
async def fleet(tmp_path: Path, sim: Sim, postgres_db: str, redis_clean_url: str
                ) -> Any:
    config = write_config(tmp_path / "arouter.toml", sim, store_url=postgres_db,
                          redis_url=redis_clean_url)
    config.write_text(config.read_text()
                      + "[timeouts]\nkeepalive = 0.5\ncommit_grace = 0.3\ndrain = 2\n")
    ports = [free_port(), free_port()]
    async with (
        serve(tmp_path / "a", None, "--port", str(ports[0]), config=config,
              extra_env=ENV) as a,
        serve(tmp_path / "b", None, "--port", str(ports[1]), config=config,
              extra_env=ENV) as b,
    ):
        with nginx(tmp_path / "nginx", ports, read_timeout="2s") as url:
            yield url, (a, b), postgres_db


async def test_the_fleet_behind_nginx(fleet: Any, sim: Sim) -> None:
    url, _, database = fleet
    secret, _ = await add_key(database)
    auth = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        # Unbuffered: chunks arrive as they are produced, not in one burst at the end.
        arrivals: list[float] = []
        started = time.monotonic()
        async with client.stream("POST", "/v1/chat/completions", headers=auth,
                                 json=body("spread", "tokens=20 interval_ms=100")) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    arrivals.append(time.monotonic() - started)
        assert len(arrivals) >= 19
        assert arrivals[-1] - arrivals[0] > 1.5  # 19 intervals of 0.1 s, not a burst

        # Keepalive: 4 s of upstream silence, nginx's read timeout 2 s; comments keep it.
        response = await client.post("/v1/chat/completions", headers=auth,
                                     json=body("silent", "tokens=3 first_token_ms=4000"))
        assert response.status_code == 200
        # Every 0.5 s of the 4 s (less the 0.3 s commit grace): at least six comments.
        assert response.content.count(KEEPALIVE) >= 6
        assert response.text.endswith("data: [DONE]\n\n")

        # A client abort through nginx closes the upstream within 100 ms.
        async with client.stream("POST", "/v1/chat/completions", headers=auth,
                                 json=body("abort", "tokens=100000 interval_ms=10")) as response:
            chunks = 0
            async for line in response.aiter_lines():
                chunks += line.startswith("data: ")
                if chunks >= 3:
                    break
        left = time.monotonic()
    record = await sim.wait_record("abort", lambda r: r.client_gone_at is not None)
    assert record.client_gone_at is not None
    assert record.client_gone_at - left < 0.1, f"{(record.client_gone_at - left) * 1000:.0f} ms"

    # JSON, not HTML, for nginx's own refusals.
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        too_large = await client.post("/v1/chat/completions", headers=auth,
                                      content=b"x" * (17 * 1024 * 1024))
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == 413


async def test_credits_and_rate_limits_hold_across_both_instances(fleet: Any, sim: Sim) -> None:
    url, _, database = fleet
    from tests.support.gateways import reservation_for

    one = body("credit", "tokens=5", max_tokens=10)
    poor, _ = await add_key(database, balance=reservation_for(one))
    limited, _ = await add_key(database, rpm=4)

    async def burst(secret: str, count: int, payload: dict[str, Any]) -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async def one_request() -> None:
                response = await client.post("/v1/chat/completions", json=payload,
                                             headers={"authorization": f"Bearer {secret}"})
                statuses.append(response.status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(one_request)
        return sorted(statuses)

    assert await burst(poor, 30, one) == [200] + [402] * 29
    assert await burst(limited, 16, body("rpm", "tokens=3")) == [200] * 4 + [429] * 12


async def test_killing_one_instance_mid_stream(fleet: Any, sim: Sim) -> None:
    url, (a, _), database = fleet
    secret, _ = await add_key(database)
    auth = {"authorization": f"Bearer {secret}"}
    outcomes: dict[str, str] = {}
    started = trio.Semaphore(0)

    async def stream(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                async with client.stream(
                    "POST", "/v1/chat/completions", headers=auth,
                    json=body(f"k{n}", "tokens=150 interval_ms=20"),
                ) as response:
                    first = True
                    raw = b""
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if first:
                            first = False
                            started.release()
                events = [e.data for e in sse.Decoder().feed(raw)]
                outcomes[f"k{n}"] = "done" if events and events[-1] == "[DONE]" else "cut"
            except httpx.HTTPError as exc:
                outcomes[f"k{n}"] = f"terminated ({type(exc).__name__})"

    victim: Served = a
    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(stream, n)
        with trio.fail_after(10):
            for _ in range(6):
                await started.acquire()
        victim.process.send_signal(signal.SIGKILL)
    terminated = [k for k, v in outcomes.items() if v.startswith("terminated")]
    done = [k for k, v in outcomes.items() if v == "done"]
    # least_conn spread them: the victim's clients saw their stream end abnormally (never a
    # clean [DONE]); the other instance's streams finished.
    assert terminated and done and len(terminated) + len(done) == 6, outcomes
    # The next requests all go to the survivor.
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for n in range(6):
            response = await client.post("/v1/chat/completions", headers=auth,
                                         json=body(f"after{n}", "tokens=3"))
            assert response.status_code == 200
            assert response.text.endswith("data: [DONE]\n\n")


async def test_arouter_doctor_passes_through_nginx(fleet: Any) -> None:
    url, _, database = fleet
    secret, _ = await add_key(database)
    result = await trio.run_process(
        [*ARouter, "doctor", "--url", url, "--key", secret, "--silence", "4", "--json"],
        capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 0, checks
    assert set(checks) == {"reach", "key", "prices", "unbuffered", "keepalive", "abort"}
    assert "billing by the price table of 20" in checks["prices"]["detail"]
    assert all(c["passed"] for c in checks.values())
