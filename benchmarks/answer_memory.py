"""What huge non-streamed upstream answers cost the gateway in memory (FAULTS F12).

    .venv/bin/python benchmarks/answer_memory.py [--concurrency 20] [--tokens 1000000]

Starts ``arouter sim`` and ``arouter serve`` (its own processes, a temp data dir, a config
whose ``fake`` provider is the sim), sends ``--concurrency`` non-streamed requests at once
whose answers are ``--tokens`` tokens long (about 7 bytes each), samples the gateway's RSS
every 20 ms while they run, and prints the peak above the idle RSS, per request. Talks to
127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
AROUTER = [sys.executable, "-m", "gateway"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    sim_port = _port()
    with tempfile.TemporaryDirectory(prefix="arouter-mem-") as data:
        config = Path(data) / "arouter.toml"
        config.write_text(f'[providers.fake]\ndialect = "openai"\nbase_url = '
                          f'"http://127.0.0.1:{sim_port}/v1"\nfree = true\n')
        env = {**os.environ, "AROUTER_DATA_DIR": data}
        sim = subprocess.Popen([*AROUTER, "sim", "--port", str(sim_port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gateway = subprocess.Popen([*AROUTER, "--config", str(config), "serve", "--port", "0"],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        try:
            banner = ""
            deadline = time.monotonic() + 30
            assert gateway.stdout is not None
            while "try: curl" not in banner and time.monotonic() < deadline:
                banner += gateway.stdout.readline()
            url = re.search(r"listening on (http://\S+)", banner)
            key = re.search(r"(lr_live_[0-9a-f]{12}_[0-9a-f]{48})", banner)
            assert url and key, banner
            return measure(gateway.pid, url.group(1), key.group(1), args)
        finally:
            for process in (gateway, sim):
                process.send_signal(signal.SIGTERM)  # our own children, by PID
                process.wait(timeout=30)


def measure(pid: int, url: str, key: str, args: argparse.Namespace) -> int:
    body = {"model": "fake/lorem", "max_tokens": args.tokens, "messages": [
        {"role": "user", "content": f"#sim tokens={args.tokens} interval_ms=0\nhi"}]}
    with httpx.Client(timeout=120) as client:  # warm: the first request's imports and pools
        client.post(f"{url}/v1/chat/completions", json={**body, "messages": [
            {"role": "user", "content": "#sim tokens=5\nhi"}]},
            headers={"authorization": f"Bearer {key}"})
    idle = _rss(pid)
    peak = idle
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, _rss(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def one(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=120) as client:
            response = client.post(f"{url}/v1/chat/completions", json=body,
                                   headers={"authorization": f"Bearer {key}"})
            kind = response.json().get("error", {}).get("type", "") if response.content else ""
            return response.status_code, kind

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            outcomes = list(pool.map(one, range(args.concurrency)))
    finally:
        running = False
        sampler.join()
    print(f"{args.concurrency} concurrent non-streamed answers of {args.tokens} tokens: "
          f"{sorted(set(outcomes))}")
    print(f"gateway RSS idle {idle / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB: "
          f"+{(peak - idle) / 2**20 / args.concurrency:.1f} MiB per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
