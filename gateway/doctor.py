"""``arouter doctor``: checks a running deployment from the outside, the way clients see it.

Pointed at the public address (usually nginx), with a key, it runs six checks using the
built-in simulator models (no provider is called, nothing is charged but their zero cost):

    reach        /healthz and /readyz answer 200
    key          the key is accepted (GET /v1/key)
    prices       which dated price table the gateway bills by (GET /v1/models), and how old
    unbuffered   a stream's chunks arrive spread over time, not in one burst at the end
                 (a proxy buffering the response would hold them all back)
    keepalive    a stream that stays silent longer than the proxy's read timeout is kept
                 alive by the gateway's keepalive comments, and then completes
    abort        a client that leaves mid-stream: the gateway sees it and stops the
                 upstream (the ledger row says client_abort, settled long before the
                 stream's natural end)

Each check reports what it measured as soon as it completes (a line, flushed: the keepalive
check alone takes ``--silence`` seconds, and a pipe must not hold the others back); the exit
status is 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import trio

from gateway.accounts.price_table import STALE_AFTER_DAYS
from gateway.accounts.pricing import format_usd

CHECKS = 6


@attrs.define
class Check:
    name: str
    passed: bool = False
    detail: str = ""


def _body(model: str, directive: str) -> dict[str, Any]:
    return {"model": model, "stream": True, "max_tokens": 4000,
            "messages": [{"role": "user", "content": f"#sim {directive}\narouter doctor"}]}


class Doctor:
    def __init__(self, url: str, key: str, model: str, silence: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"authorization": f"Bearer {key}"}
        self.model = model
        self.silence = silence

    async def reach(self, client: httpx.AsyncClient, check: Check) -> None:
        health = await client.get(f"{self.url}/healthz")
        ready = await client.get(f"{self.url}/readyz")
        check.passed = health.status_code == 200 and ready.status_code == 200
        check.detail = f"/healthz {health.status_code}, /readyz {ready.status_code}"

    async def key(self, client: httpx.AsyncClient, check: Check) -> None:
        response = await client.get(f"{self.url}/v1/key", headers=self.headers)
        check.passed = response.status_code == 200
        if check.passed:
            data = response.json()["data"]
            check.detail = f"key {data['id']} ({data['name'] or 'unnamed'}), " \
                           f"balance {format_usd(data['balance_micro_usd'])}"
        else:
            check.detail = f"GET /v1/key answered {response.status_code}"

    async def prices(self, client: httpx.AsyncClient, check: Check) -> None:
        response = await client.get(f"{self.url}/v1/models", headers=self.headers)
        dated = response.headers.get("x-arouter-price-table")
        check.passed = response.status_code == 200 and dated is not None
        if not check.passed:
            check.detail = f"GET /v1/models answered {response.status_code} without a date"
            return
        assert dated is not None
        age = (datetime.date.today() - datetime.date.fromisoformat(dated)).days
        check.detail = f"billing by the price table of {dated} ({age} days old)"
        if age > STALE_AFTER_DAYS:
            check.detail += ": check the providers' prices and override them in the config"

    async def unbuffered(self, client: httpx.AsyncClient, check: Check) -> None:
        tokens, interval = 10, 0.2
        arrivals = await self._arrivals(client, f"tokens={tokens} interval_ms={interval * 1000:g}")
        if len(arrivals) < 2:
            check.detail = f"only {len(arrivals)} content chunks arrived"
            return
        spread = arrivals[-1] - arrivals[0]
        planned = (tokens - 1) * interval
        check.passed = spread >= planned * 0.5
        check.detail = (f"{len(arrivals)} chunks over {spread:.2f} s (planned {planned:.1f} s); "
                        f"first after {arrivals[0]:.2f} s")

    async def keepalive(self, client: httpx.AsyncClient, check: Check) -> None:
        started = time.monotonic()
        comments, done, first = 0, False, None
        async with client.stream(
            "POST", f"{self.url}/v1/chat/completions", headers=self.headers,
            json=_body(self.model, f"tokens=2 first_token_ms={self.silence * 1000:g}"),
        ) as response:
            if response.status_code != 200:
                check.detail = f"status {response.status_code}"
                return
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    comments += 1
                elif line.startswith("data: {") and '"content"' in line and first is None:
                    first = time.monotonic() - started
                done = done or line == "data: [DONE]"
        check.passed = done and comments > 0
        check.detail = (f"{comments} keepalive comments during {self.silence:g} s of silence; "
                        f"first token after {first or 0:.1f} s; "
                        + ("completed" if done else "the stream was cut"))

    async def abort(self, client: httpx.AsyncClient, check: Check) -> None:
        natural = 1000 * 0.02  # what the stream would take if nobody left
        started = time.monotonic()
        async with client.stream(
            "POST", f"{self.url}/v1/chat/completions", headers=self.headers,
            json=_body(self.model, "tokens=1000 interval_ms=20"),
        ) as response:
            generation_id = response.headers.get("x-generation-id", "")
            chunks = 0
            async for line in response.aiter_lines():
                chunks += line.startswith("data: ")
                if chunks >= 3:
                    break
        left_at = time.monotonic() - started
        row = None
        with trio.move_on_after(10):
            while row is None:
                found = await client.get(f"{self.url}/v1/generation", headers=self.headers,
                                         params={"id": generation_id})
                if found.status_code == 200:
                    row = found.json()["data"]
                else:
                    await trio.sleep(0.1)
        if row is None:
            check.detail = "no ledger row for the aborted stream within 10 s"
            return
        ran = row["duration_ms"] / 1000
        check.passed = row["status"] == "client_abort" and ran < natural / 2
        check.detail = (f"left after {left_at:.2f} s; the gateway stopped the upstream and "
                        f"settled it as {row['status']} after {ran:.2f} s "
                        f"(it would have run {natural:.0f} s)")

    async def _arrivals(self, client: httpx.AsyncClient, directive: str) -> list[float]:
        started = time.monotonic()
        arrivals = []
        async with client.stream("POST", f"{self.url}/v1/chat/completions",
                                 headers=self.headers,
                                 json=_body(self.model, directive)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    arrivals.append(time.monotonic() - started)
        return arrivals

    async def run(self, on_check: Callable[[Check], None] = lambda check: None) -> list[Check]:
        """Every check in order; ``on_check`` gets each one as it completes."""
        steps: list[tuple[str, Callable[[httpx.AsyncClient, Check], Awaitable[None]]]] = [
            ("reach", self.reach), ("key", self.key), ("prices", self.prices),
            ("unbuffered", self.unbuffered),
            ("keepalive", self.keepalive), ("abort", self.abort),
        ]
        checks = []
        timeout = httpx.Timeout(10.0, read=self.silence + 30)
        async with httpx.AsyncClient(timeout=timeout) as client:
            for name, step in steps:
                check = Check(name)
                try:
                    await step(client, check)
                except httpx.HTTPError as exc:
                    check.passed, check.detail = False, f"{type(exc).__name__}: {exc}"
                checks.append(check)
                on_check(check)
                if name == "reach" and not check.passed:
                    break  # nothing else can work
        return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1",
                        help="the deployment's public address, usually nginx")
    parser.add_argument("--key", required=True, help="an API key (lr_live_...)")
    parser.add_argument("--model", default="sim/lorem",
                        help="a simulator model (no provider is called)")
    parser.add_argument("--silence", type=float, default=20.0,
                        help="seconds of upstream silence for the keepalive check; longer "
                             "than the gateway's keepalive interval (15 s) and, to prove "
                             "anything, than the proxy's read timeout")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    doctor = Doctor(args.url, args.key, args.model, args.silence)
    if args.json:
        checks = trio.run(doctor.run)
        print(json.dumps([attrs.asdict(c) for c in checks], indent=2))
    else:
        print(f"arouter doctor: {args.url}", flush=True)
        checks = trio.run(doctor.run, _print_check)
    ok = len(checks) == CHECKS and all(c.passed for c in checks)
    print("all checks passed" if ok else "some checks failed", file=sys.stderr)
    return 0 if ok else 1


def _print_check(check: Check) -> None:
    print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<11} {check.detail}", flush=True)
