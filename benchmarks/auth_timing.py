"""Can a client tell a recently used key id from an unknown one by timing? (FAULTS F13)

    .venv/bin/python benchmarks/auth_timing.py [--samples 1000]

Starts ``arouter serve`` (SQLite, a temp data dir) as its own process, creates a key and uses
it once (so its row is cached), then sends ``GET /v1/key`` with a wrong secret for that id
and with a new unknown id each time, interleaved one for one (each first in half the pairs)
on one kept-alive connection, and prints each kind's latency percentiles and the difference
of the medians. Talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arouter-auth-") as data:
        env = {**os.environ, "AROUTER_DATA_DIR": data}
        env.pop("AROUTER_CONFIG", None)
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                   cwd=ROOT, text=True)
        try:
            banner = ""
            deadline = time.monotonic() + 30
            assert process.stdout is not None
            while "try: curl" not in banner and time.monotonic() < deadline:
                banner += process.stdout.readline()
            url = re.search(r"listening on (http://\S+)", banner)
            key = re.search(r"(lr_live_([0-9a-f]{12})_[0-9a-f]{48})", banner)
            assert url and key, banner
            return measure(url.group(1), key.group(1), key.group(2), args.samples)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def measure(url: str, secret: str, key_id: str, samples: int) -> int:
    wrong = {"authorization": f"Bearer lr_live_{key_id}_{'0' * 48}"}
    times: dict[str, list[float]] = {"known id, wrong secret": [], "unknown id": []}

    def unknown() -> dict[str, str]:  # a new id every time, as a prober's would be
        return {"authorization": f"Bearer lr_live_{secrets.token_hex(6)}_{'0' * 48}"}

    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/v1/key", headers={"authorization": f"Bearer {secret}"}).is_success
        for _ in range(50):  # warm both paths
            client.get("/v1/key", headers=wrong)
            client.get("/v1/key", headers=unknown())
        for i in range(samples):
            pair = [("known id, wrong secret", wrong), ("unknown id", unknown())]
            # Each kind goes first in half the pairs: the first of two back-to-back requests
            # on a connection is not timed like the second.
            for name, headers in pair if i % 2 else pair[::-1]:
                began = time.perf_counter()
                status = client.get("/v1/key", headers=headers).status_code
                times[name].append(time.perf_counter() - began)
                assert status == 401
    print(f"{samples} samples each, interleaved, GET /v1/key on one kept-alive connection")
    for name, values in times.items():
        q = statistics.quantiles(values, n=100)
        print(f"  {name:<23} p10 {q[9] * 1e6:7.0f} us  p50 {statistics.median(values) * 1e6:7.0f}"
              f" us  p90 {q[89] * 1e6:7.0f} us")
    a, b = (statistics.median(v) for v in times.values())
    print(f"  difference of medians: {(a - b) * 1e6:+.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
