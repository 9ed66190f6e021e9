"""``arouter serve`` as a user runs it: a subprocess, its banner, the README's snippets.

The README's ``curl -N`` and OpenAI-SDK snippets are extracted from README.md and run
against a freshly started ``arouter serve`` (its address substituted for 127.0.0.1:8080).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ARouter = [sys.executable, "-m", "gateway"]


@attrs.frozen
class Served:
    url: str
    key: str | None
    banner: str
    process: trio.Process


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["AROUTER_DATA_DIR"] = str(data_dir)
    env.pop("AROUTER_CONFIG", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(
    data_dir: Path, log: Path | None = None, *options: str
) -> AsyncIterator[Served]:
    # A real file descriptor for the child; opened once, closed in the finally below.
    log_file = open(log or os.devnull, "ab")  # noqa: SIM115, ASYNC230
    process = await trio.lowlevel.open_process(
        [*ARouter, "serve", *(options or ("--port", "0"))],
        stdout=subprocess.PIPE,
        stderr=log_file,
        env=_env(data_dir),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        with trio.fail_after(30):
            while b"try: curl" not in banner:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"arouter serve exited early: {banner!r}"
                banner += chunk
        text = banner.decode()
        url = re.search(r"listening on (http://\S+)", text)
        key = re.search(r"^\s+(lr_live_[0-9a-f]{12}_[0-9a-f]{48})$", text, re.M)
        assert url is not None
        yield Served(url.group(1), key.group(1) if key else None, text, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        log_file.close()


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
