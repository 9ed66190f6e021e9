"""``arouter serve`` as a user runs it: a subprocess, its banner, the README's snippets.

The README's ``curl -N`` and OpenAI-SDK snippets are extracted from README.md and run
against a freshly started ``arouter serve`` (its address substituted for 127.0.0.1:8080).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ROOT, ARouter, serve
from tests.support.processes import env as _env
from tests.support.processes import free_port as _free_port

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
        "--max-concurrent", "3", "--models", "fast,sim/echo", "--allow-unknown-models",
        "--expires-in", "30d", "--json")
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


# ---------------------------------------------------------------------------------------
# A newcomer's first hour (issue #12)


async def _wait_ready(url: str) -> None:
    with trio.fail_after(30):
        while True:  # spawned workers take a moment to import and start
            probe = await trio.run_process(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/readyz"],
                capture_stdout=True, check=False)
            if probe.stdout == b"200":
                return
            await trio.sleep(0.2)


async def test_workers_serve_the_config_the_command_line_made(tmp_path: Path) -> None:
    """``--data-dir`` (and ``--log-level``) reach every worker, whatever the file says: the
    first key the supervisor prints is one the workers know."""
    file_dir, cli_dir = tmp_path / "from-file", tmp_path / "from-cli"
    config = tmp_path / "arouter.toml"
    config.write_text(f'[server]\ndata_dir = "{file_dir}"\n')
    log = tmp_path / "stderr.log"
    port = _free_port()
    async with serve(tmp_path, log, "--port", str(port), "--workers", "2", "--data-dir",
                     str(cli_dir), config=config,
                     extra_env={"AROUTER_LOG_LEVEL": "WARNING"}) as served:
        assert served.key is not None
        assert f"(store: SQLite {cli_dir / 'arouter.db'})" in served.banner
        await _wait_ready(served.url)
        for _ in range(4):  # whichever worker answers
            result = await trio.run_process(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{served.url}/v1/key",
                 "-H", f"Authorization: Bearer {served.key}"], capture_stdout=True)
            assert result.stdout == b"200"
    assert (cli_dir / "arouter.db").exists() and not file_dir.exists()
    # The workers log at the supervisor's level: their INFO start-up lines are not there,
    # their WARNING ones are, once per worker.
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [e for e in entries if e["level"] == "info"]
    stale = [e for e in entries if "price table is" in e["msg"]]
    assert len(stale) in (0, 2)  # the built-in table's age warning, if it is old


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    def help_of(*args: str) -> str:
        with pytest.raises(SystemExit) as exited:
            main([*args, "--help"])
        assert exited.value.code == 0
        return " ".join(capsys.readouterr().out.split())  # unwrapped

    top = help_of()
    assert "``" not in top
    assert "run the fake upstream (OpenAI, Anthropic and Gemini dialects)" in top
    options = top.split("options:", 1)[1]
    for option in ("--config FILE", "--log-level {", "--log-format {"):
        block = options.split(option, 1)[1].split(" -", 1)[0]
        assert len(block.split()) > 4, f"{option} has no help: {block!r}"
    served = help_of("serve").split("options:", 1)[1]
    for option in ("--host HOST", "--port PORT", "--data-dir DIR", "--workers WORKERS"):
        block = served.split(option, 1)[1].split(" -", 1)[0]
        assert len(block.split()) > 4, f"{option} has no help: {block!r}"
    assert "--allow-unknown-models" in help_of("keys", "create")


async def test_keys_list_shows_a_header_and_each_allowlist(tmp_path: Path) -> None:
    _, out, _ = await _arouter(tmp_path, "keys", "list")
    assert out == "no keys (arouter keys create --name NAME makes one)\n"
    _, out, _ = await _arouter(tmp_path, "keys", "create", "--name", "team-a", "--models",
                               "sim-echo,sim/lorem", "--balance", "3", "--json")
    limited = json.loads(out)["id"]
    _, out, _ = await _arouter(tmp_path, "keys", "create", "--name", "ops", "--json")
    everything = json.loads(out)["id"]
    await _arouter(tmp_path, "keys", "revoke", everything)
    _, out, _ = await _arouter(tmp_path, "keys", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATE", "BALANCE", "MODELS", "NAME"]
    assert sorted(row.split() for row in rows) == sorted([
        [limited, "active", "$3.000000", "sim-echo,sim/lorem", "team-a"],
        [everything, "revoked", "unlimited", "all", "ops"],
    ])
    # Columns line up under the header.
    assert {row.index(row.split()[3]) for row in rows} == {header.index("MODELS")}


async def test_keys_create_refuses_a_model_the_config_does_not_serve(tmp_path: Path) -> None:
    code, out, err = await _arouter(tmp_path, "keys", "create", "--models",
                                    "sim/echo,nonexistent", check=False)
    assert code == 2 and out == ""
    assert err.startswith("arouter: --models: Invalid model specified: 'nonexistent'. "
                          "Served here: sim-echo, sim-lorem, sim-embed, sim/echo, sim/lorem, "
                          "sim/embed. Fix the "
                          "name, or pass --allow-unknown-models")
    # A provider the service switches on by its key variable, absent from this shell.
    code, _, err = await _arouter(tmp_path, "keys", "create", "--models", "openai/gpt-4.1",
                                  check=False)
    assert code == 2 and "The provider 'openai' is not enabled: set OPENAI_API_KEY" in err
    _, out, _ = await _arouter(tmp_path, "keys", "list")
    assert out.startswith("no keys")  # refused before the store was touched
    _, out, _ = await _arouter(tmp_path, "keys", "create", "--models", "nonexistent",
                               "--allow-unknown-models", "--json")
    assert json.loads(out)["models"] == ["nonexistent"]
    code, _, err = await _arouter(tmp_path, "keys", "update", json.loads(out)["id"],
                                  "--models", "sim/ech0", check=False)
    assert code == 2 and "Invalid model specified: 'sim/ech0'. Close to: sim/echo" in err


async def test_a_start_without_a_first_key_says_how_to_make_one(tmp_path: Path) -> None:
    async with serve(tmp_path, None, "--port", "0", "--no-first-key") as served:
        assert served.key is None
        assert ("No API key exists yet (--no-first-key): make one with\n"
                "    arouter keys create --name NAME\n") in served.banner
    await _arouter(tmp_path, "keys", "create", "--name", "me")
    async with serve(tmp_path, None, "--port", "0", "--no-first-key") as served:
        assert "No API key exists yet" not in served.banner


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_first_ctrl_c_says_what_a_second_one_does(tmp_path: Path,
                                                           workers: str) -> None:
    log = tmp_path / "stderr.log"
    async with serve(tmp_path, log, "--port", "0", "--workers", workers) as served:
        await _wait_ready(served.url)
        served.process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            await served.process.wait()
        assert served.process.returncode == 0
    said = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert sum("a second Ctrl-C (SIGINT or SIGTERM) ends them now" in m for m in said) == 1


async def test_doctor_prints_each_check_as_it_completes(tmp_path: Path) -> None:
    """Piped, as in CI or `| tee`: each line arrives when its check ends, not at exit."""
    config = tmp_path / "arouter.toml"
    config.write_text("[timeouts]\nkeepalive = 0.5\n")
    async with serve(tmp_path, None, "--port", "0", config=config) as served:
        assert served.key is not None
        doctor = await trio.lowlevel.open_process(
            [*ARouter, "doctor", "--url", served.url, "--key", served.key, "--silence", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(tmp_path), cwd=ROOT)
        assert doctor.stdout is not None
        arrived: list[tuple[float, str]] = []
        buffer = b""
        with trio.fail_after(60):
            while chunk := await doctor.stdout.receive_some(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                arrived += [(trio.current_time(), line.decode()) for line in lines]
            await doctor.wait()
        ended = trio.current_time()
    assert doctor.returncode == 0, arrived
    assert arrived[0][1] == f"arouter doctor: {served.url}"
    reach = next(t for t, line in arrived if line.startswith("  PASS  reach"))
    # The keepalive check alone waits 3 s of silence after it.
    assert ended - reach > 2.5, arrived


async def test_google_generativeai_uses_the_builtin_slash_free_alias(tmp_path: Path) -> None:
    async with serve(tmp_path) as served:
        assert served.key is not None
        listing = await trio.run_process(
            ["curl", "-s", f"{served.url}/v1/models", "-H",
             f"Authorization: Bearer {served.key}"], capture_stdout=True)
        ids = [model["id"] for model in json.loads(listing.stdout)["data"]]
        assert ids[:2] == ["sim-echo", "sim-lorem"] and "sim/lorem" in ids
        python = _snippet("python", "import os\n\nimport google.generativeai")
        result = await trio.run_process(
            [sys.executable, "-c",
             python.replace("127.0.0.1:8080", served.url.removeprefix("http://"))],
            capture_stdout=True, env={**os.environ, "AROUTER_KEY": served.key})
        assert result.stdout.decode().split()[:3] == ["Lorem", "ipsum", "dolor"]


async def test_readme_runs_arouter_with_the_service_environment_file(tmp_path: Path) -> None:
    """The Deploy section's ``as_arouter``, on the shipped ``deploy/systemd/arouter.env``
    (root-only, as installed): the service user's command gets every value in it."""
    helper = _snippet("sh", "as_arouter() {")
    secrets = tmp_path / "arouter.env"
    shutil.copy(ROOT / "deploy" / "systemd" / "arouter.env", secrets)
    secrets.chmod(0o600)
    # A stand-in for arouter: who runs it, with which environment.
    probe = "/bin/sh -c 'id -un; env' arouter"
    helper = (helper.replace("/etc/arouter/arouter.env", str(secrets))
              .replace("/opt/arouter/venv/bin/arouter", probe))
    # Root reads the file and becomes the service user (nobody stands in for arouter);
    # anyone else can only check the reading.
    user = "nobody" if os.geteuid() == 0 else None
    helper = helper.replace("runuser -u arouter --", f"runuser -u {user} --" if user else "")
    result = await trio.run_process(["sh", "-c", f"{helper}\nas_arouter keys list"],
                                    capture_stdout=True, capture_stderr=True,
                                    env={"PATH": os.environ["PATH"]})
    assert result.stderr == b""
    who, *lines = result.stdout.decode().splitlines()
    assert who == (user or who)
    environ = dict(line.split("=", 1) for line in lines if "=" in line)
    assert environ["AROUTER_DATABASE_URL"] == (
        "postgresql://arouter:CHANGE-ME@127.0.0.1:5432/arouter")
    assert environ["AROUTER_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert environ["AROUTER_ADMIN_TOKEN"] == "" and environ["AROUTER_LOG_FORMAT"] == "json"
    assert environ["AROUTER_DATA_DIR"] == "/var/lib/arouter"
    # The recipe it replaces: xargs trips on the file's comments and quotes.
    assert not [block for block in re.findall(r"```sh\n(.*?)```", README, re.S)
                if "xargs" in block]
