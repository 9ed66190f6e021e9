"""``arouter serve`` as a user runs it: a subprocess, its banner, the README's snippets.

The README's ``curl -N`` and OpenAI-SDK snippets are extracted from README.md and run
against a freshly started ``arouter serve`` (its address substituted for 127.0.0.1:8080).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import ROOT, ARouter, serve
from tests.processes import env as _env
from tests.processes import free_port as _free_port

README = (ROOT / "README.md").read_text()


def _snippet(language: str, start: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.S)
    return next(block for block in blocks if block.lstrip().startswith(start))


async def test_first_start_prints_a_key_once_and_readme_snippets_work(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    async with serve(tmp_path, log) as served:
        assert served.key is not None
        assert "shown only this once" in served.banner
        env = {**os.environ, "AROUTER_KEY": served.key}
        address = served.url.removeprefix("http://")

        curl = _snippet("sh", "curl -N").replace("127.0.0.1:8080", address)
        result = await trio.run_process(["sh", "-c", curl], capture_stdout=True, env=env)
        out = result.stdout.decode()
        assert out.count('"object":"chat.completion.chunk"') > 3
        assert '"choices":[],"usage":{"prompt_tokens"' in out
        assert out.endswith("data: [DONE]\n\n")

        python = _snippet("python", "import os").replace("127.0.0.1:8080", address)
        result = await trio.run_process([sys.executable, "-c", python], capture_stdout=True,
                                        env=env)
        printed = result.stdout.decode()
        assert printed.startswith(" How would you build the tallest building ever?")
        assert "usage: {'completion_tokens': 8," in printed  # eight words echoed

        # The Anthropic and Gemini snippets, through the same gateway and key.
        for marker in ("import anthropic", "from google import genai"):
            block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S)
                         if marker in b)
            result = await trio.run_process(
                [sys.executable, "-c", block.replace("127.0.0.1:8080", address)],
                capture_stdout=True, env=env)
            assert result.stdout.decode().split()[:3] == ["Lorem", "ipsum", "dolor"]

        # The key is stored hashed: its secret appears nowhere in the database file.
        database = (tmp_path / "arouter.db").read_bytes()
        assert served.key.encode() not in database
        assert served.key.split("_")[-1].encode() not in database

        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await served.process.wait()
        assert served.process.returncode == 0

    # Structured logs: one JSON object per line, the generation id on each settled request,
    # and the key nowhere (S4).
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    settled = [e for e in entries if e["msg"] == "generation settled"]
    assert len(settled) == 4
    assert all(e["generation_id"].startswith("gen-") and e["status"] == "ok" for e in settled)
    assert served.key.split("_")[-1] not in log.read_text()

    async with serve(tmp_path) as again:  # a second start keeps the first key
        assert again.key is None
        assert "Created the first API key" not in again.banner


async def test_keys_create_prints_a_working_key(tmp_path: Path) -> None:
    result = await trio.run_process([*ARouter, "keys", "create", "--name", "ci"],
                                    capture_stdout=True, env=_env(tmp_path), cwd=ROOT)
    key = result.stdout.decode().strip()
    assert re.fullmatch(r"lr_live_[0-9a-f]{12}_[0-9a-f]{48}", key)
    async with serve(tmp_path) as served:
        assert served.key is None  # a key existed already: nothing new is created
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                f"{served.url}/v1/models", "-H", f"Authorization: Bearer {key}"]
        result = await trio.run_process(curl, capture_stdout=True)
        assert result.stdout == b"200"


@pytest.mark.parametrize("config", ["[server]\nport = 'x'\n", "[nope]\n",
                                    "[timeouts]\nidle = -1\n"])
async def test_bad_config_fails_at_start_naming_the_key(tmp_path: Path, config: str) -> None:
    path = tmp_path / "arouter.toml"
    path.write_text(config)
    result = await trio.run_process([*ARouter, "--config", str(path), "serve"],
                                    capture_stderr=True, check=False, env=_env(tmp_path),
                                    cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("arouter: ")


async def test_workers_serve_from_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    async with serve(tmp_path, None, "--port", str(port), "--workers", "2") as served:
        assert served.key is not None
        with trio.fail_after(30):
            while True:  # the spawned workers take a moment to import and start
                probe = await trio.run_process(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://127.0.0.1:{port}/readyz"], capture_stdout=True, check=False)
                if probe.stdout == b"200":
                    break
                await trio.sleep(0.2)
        for _ in range(4):
            result = await trio.run_process(
                ["curl", "-sN", f"http://127.0.0.1:{port}/v1/chat/completions",
                 "-H", f"Authorization: Bearer {served.key}", "-H",
                 "Content-Type: application/json", "-d",
                 '{"model":"sim/echo","stream":true,"messages":[{"role":"user","content":"hi"}]}'],
                capture_stdout=True)
            assert result.stdout.endswith(b"data: [DONE]\n\n")
        # Whichever worker answers the scrape, it counts the requests of both.
        for _ in range(4):
            scrape = await trio.run_process(
                ["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_stdout=True)
            families = text_string_to_metric_families(scrape.stdout.decode())
            requests = sum(sample.value for family in families for sample in family.samples
                           if sample.name == "arouter_requests_total")
            assert requests == 4
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await served.process.wait()
        assert served.process.returncode == 0


async def _arouter(tmp_path: Path, *args: str, check: bool = True) -> tuple[int, str, str]:
    result = await trio.run_process([*ARouter, *args], capture_stdout=True,
                                    capture_stderr=True, check=check, env=_env(tmp_path),
                                    cwd=ROOT)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_keys_commands_manage_policy_and_balance(tmp_path: Path) -> None:
    _, out, err = await _arouter(
        tmp_path, "keys", "create", "--name", "team-a", "--balance", "2.5", "--rpm", "60",
        "--max-concurrent", "3", "--models", "fast,sim/echo", "--expires-in", "30d", "--json")
    created = json.loads(out)
    key_id, secret = created["id"], created["key"]
    assert re.fullmatch(r"lr_live_[0-9a-f]{12}_[0-9a-f]{48}", secret)
    assert created["balance_micro_usd"] == 2_500_000 and created["balance_usd"] == "2.500000"
    assert created["limits"] == {"rpm": 60, "tpm": None, "max_concurrent": 3}
    assert created["models"] == ["fast", "sim/echo"] and created["expires_at"] > 0

    _, out, _ = await _arouter(tmp_path, "keys", "top-up", key_id, "0.000001", "--json")
    assert json.loads(out)["balance_usd"] == "2.500001"
    _, out, _ = await _arouter(tmp_path, "keys", "update", key_id, "--rpm", "none",
                               "--tpm", "1000", "--json")
    assert json.loads(out)["limits"] == {"rpm": None, "tpm": 1000, "max_concurrent": 3}
    _, out, _ = await _arouter(tmp_path, "keys", "revoke", key_id)
    assert "REVOKED" in out and secret not in out
    _, out, _ = await _arouter(tmp_path, "keys", "list")
    assert key_id in out and "revoked" in out and "$2.500001" in out

    code, _, err = await _arouter(tmp_path, "keys", "top-up", key_id, "0.0000001", check=False)
    assert code == 2 and "micro-dollar" in err
    code, _, err = await _arouter(tmp_path, "keys", "show", "000000000000", check=False)
    assert code == 1 and "no key" in err
    code, _, err = await _arouter(tmp_path, "keys", "create", "--rpm", "many", check=False)
    assert code == 2 and "--rpm" in err


async def test_db_migrate_upgrades_an_old_schema_once(tmp_path: Path) -> None:
    import sqlite3

    from gateway.store.sqlite import MIGRATIONS

    # A database as the first release left it: schema version 1.
    db = sqlite3.connect(tmp_path / "arouter.db")
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
    db.close()
    _, out, _ = await _arouter(tmp_path, "db", "migrate")
    assert out == f"schema version 1 -> {len(MIGRATIONS)}\n"
    _, out, _ = await _arouter(tmp_path, "db", "migrate")
    assert out == f"schema version {len(MIGRATIONS)}: up to date\n"
