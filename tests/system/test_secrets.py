"""Canary keys: no client key and no provider key appears in any log line, error body,
response header, metric or database column, whatever the requests do.

A real ``arouter serve`` runs at DEBUG with its log captured; the client key (valid, and a
same-shaped wrong one) is presented every way a dialect allows and smuggled into fields
that are echoed in errors; the provider key is the fake upstream's, which the upstream
refuses in one scenario. Then everything the gateway wrote is searched for the canaries.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from gateway.accounts import keys
from gateway.store.sqlite import SqliteStore
from tests.support.gateways import FAKE_PROVIDER_KEY, Sim
from tests.support.processes import ENV, serve, write_config


async def test_no_key_leaks_into_logs_bodies_metrics_or_the_database(
    tmp_path: Path, sim: Sim
) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data / "arouter.db")
    await store.open()
    secret, row = keys.generate(name="canary", created_at=time.time(), balance=5_000_000)
    await store.add_key(row)
    await store.aclose()
    wrong = secret[:-6] + "abcdef"  # the same id, a wrong secret
    unknown = keys.generate()[0]
    log = tmp_path / "stderr.log"
    config = write_config(tmp_path / "arouter.toml", sim)
    seen: list[str] = []

    def message(tag: str, directive: str = "") -> list[dict[str, str]]:
        return [{"role": "user", "content": f"#sim tag={tag} {directive}\nhello"}]

    async with serve(data, log, "--port", "0", config=config,
                     extra_env={**ENV, "AROUTER_LOG_LEVEL": "DEBUG"}) as served:
        base = served.url
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            requests = []
            for presented in (secret, wrong, unknown):
                bearer = {"authorization": f"Bearer {presented}"}
                requests += [
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": "fake/lorem", "stream": True, "messages": message("ok")}),
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": "fake/lorem", "messages": message("ok2")}),
                    # The key where errors echo a value: the model name, an unknown field.
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": presented, "messages": message("m")}),
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": "fake/lorem", presented: 1, "messages": message("f")}),
                    # The provider refuses our provider key; a mid-stream failure.
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": "fake/lorem", "messages": message("u", "scenario=status_401")}),
                    ("POST", "/v1/chat/completions", bearer,
                     {"model": "fake/lorem", "stream": True,
                      "messages": message("e", "scenario=midstream_error")}),
                    ("POST", "/v1/messages", {"x-api-key": presented},
                     {"model": "fake/lorem", "max_tokens": 5, "messages": message("a")}),
                    ("POST", f"/v1beta/models/fake-gemini:generateContent?key={presented}", {},
                     {"contents": [{"parts": [{"text": "hi"}]}]}),
                    ("GET", "/v1/key", bearer, None),
                    ("GET", f"/v1/generation?id={presented}", bearer, None),
                    ("GET", "/admin/keys", bearer, None),
                    ("GET", "/v1/models", {"authorization": f"Basic {presented}"}, None),
                ]
            for method, path, headers, payload in requests:
                response = await client.request(method, path, headers=headers, json=payload)
                seen.append(f"{response.status_code} {response.headers} {response.text}")
            statuses = [int(s.split()[0]) for s in seen]
            assert statuses.count(200) >= 4 and 401 in statuses and 400 in statuses
            seen.append((await client.get("/metrics")).text)

    logged = log.read_text()
    assert "generation settled" in logged  # the DEBUG lines were written
    database = b"".join(p.read_bytes() for p in data.glob("arouter.db*"))
    canaries = [secret, secret.split("_")[-1], wrong.split("_")[-1], unknown.split("_")[-1],
                FAKE_PROVIDER_KEY, FAKE_PROVIDER_KEY.removeprefix("sk-")]
    for canary in canaries:
        assert canary not in logged, f"a key in the log: {canary[:12]}..."
        leaks = [text[:300] for text in seen if canary in text]
        assert not leaks, f"a key in a response: {leaks}"
        assert canary.encode() not in database, f"a key in the database: {canary[:12]}..."
