"""Mutated requests at every route of a live ``arouter serve`` (hypothesis, bounded).

Each example is a real request over one kept-alive HTTP/1.1 connection to a real process
serving its built-in simulator: a valid body for a route, then mutated (fields dropped,
values replaced by any JSON, keys added, bytes flipped, inserted or cut), with a valid, a
wrong or no key. Whatever comes in:

- the gateway never answers a 5xx of its own (500, or a 502/503/504 that is not an upstream
  or availability error) — only 4xx refusals, or 200;
- it never drops a connection without an answer (the client library would raise);
- the process is alive and healthy afterwards.

The example count is bounded (``FUZZ_EXAMPLES``) so the suite stays fast; raise it locally
for a longer hunt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import ROOT

FUZZ_EXAMPLES = int(os.environ.get("AROUTER_FUZZ_EXAMPLES", "600"))
ADMIN = "fuzz-admin-" + "0" * 32

SEEDS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/chat/completions", {"model": "sim/echo", "max_tokens": 5, "stream": False,
                                      "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/chat/completions", {"model": "sim/lorem", "stream": True, "max_tokens": 5,
                                      "stream_options": {"include_usage": True},
                                      "messages": [{"role": "system", "content": "be"},
                                                   {"role": "user", "content": "hi"}]}),
    ("POST", "/v1/messages", {"model": "sim/echo", "max_tokens": 5, "stream": True,
                              "messages": [{"role": "user", "content": [
                                  {"type": "text", "text": "hi"}]}]}),
    ("POST", "/v1beta/models/sim-echo:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
      "generationConfig": {"maxOutputTokens": 5}}),
    ("POST", "/v1beta/models/sim-lorem:streamGenerateContent?alt=sse",
     {"contents": [{"parts": [{"text": "hi"}]}]}),
    ("POST", "/admin/keys", {"name": "fuzzed", "balance_usd": "1", "rpm": 10}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/key", None),
    ("GET", "/v1/generation?id=gen-000000000000000000000000", None),
    ("GET", "/admin/keys", None),
]
# Upstream and availability errors a 5xx may legitimately carry; anything else is a bug.
SERVED_5XX = {"upstream_error", "service_unavailable", "timeout", "output_limit",
              "UNAVAILABLE", "DEADLINE_EXCEEDED", "api_error", "overloaded_error"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*at, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*at, index))


@st.composite
def mutated(draw: st.DrawFn, seed: dict[str, Any]) -> bytes:
    """``seed`` with a few structural mutations, then possibly byte-level ones."""
    body: Any = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
    data = bytearray(json.dumps(body).encode())
    for _ in range(draw(st.integers(0, 2))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "cut"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real ``arouter serve`` on its built-in simulator: (url, its first key)."""
    data = tmp_path_factory.mktemp("fuzz")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(AROUTER_DATA_DIR=str(data), AROUTER_ADMIN_TOKEN=ADMIN)
    env.pop("AROUTER_CONFIG", None)
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               cwd=ROOT, text=True)
    try:
        banner = ""
        assert process.stdout is not None
        while "try: curl" not in banner:
            line = process.stdout.readline()
            assert line, f"arouter serve exited: {banner}"
            banner += line
        url = re.search(r"listening on (http://\S+)", banner)
        key = re.search(r"(lr_live_[0-9a-f]{12}_[0-9a-f]{48})", banner)
        assert url and key, banner
        yield url.group(1), key.group(1)
        assert process.poll() is None, "the gateway died under the fuzz"
        assert httpx.get(f"{url.group(1)}/healthz", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)  # our own child, by its PID
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, str]:
    method, path, seed = draw(st.sampled_from(SEEDS))
    body = None if seed is None else draw(mutated(seed))
    # Mostly the key the route takes, so that most requests get past authentication.
    right = "admin" if path.startswith("/admin/") else "valid"
    key = draw(st.sampled_from([right] * 6 + ["valid", "wrong", "none", "admin"]))
    return method, path, body, key


def test_mutated_requests_never_get_a_5xx_of_the_gateways_own_nor_silence(
    live: tuple[str, str], tmp_path: Path
) -> None:
    url, secret = live
    keys = {"valid": secret, "wrong": "lr_live_000000000000_" + "0" * 48, "admin": ADMIN}
    seen: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=30) as client:

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(requests())
        def one(example: tuple[str, str, bytes | None, str]) -> None:
            method, path, body, key = example
            headers = {"content-type": "application/json"}
            if key in keys:
                headers["authorization"] = f"Bearer {keys[key]}"
            # A dropped connection raises here (RemoteProtocolError): never allowed.
            response = client.request(method, path, content=body, headers=headers)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code != 500, (path, body, response.text)
            if response.status_code >= 500:
                error = response.json().get("error") or {}
                kind = error.get("type") or error.get("status")
                assert kind in SERVED_5XX, (path, body, response.status_code, response.text)
            if path.startswith(("/v1/", "/v1beta/", "/admin/")) and response.status_code != 200:
                assert response.headers["content-type"].startswith("application/json")

        one()
    print(f"\n{sum(seen.values())} requests: " + ", ".join(
        f"{status}x{count}" for status, count in sorted(seen.items())))
    assert 200 in seen and any(400 <= s < 500 for s in seen)  # both sides were exercised
