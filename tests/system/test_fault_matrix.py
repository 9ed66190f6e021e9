"""The fault matrix: FAULTS.md section C through real sockets, in every client dialect,
streamed and not.

Each case runs on a fresh gateway (circuits are per process, and a 429 opens one) with short
named deadlines, and asserts: the HTTP status or the dialect's terminal event; which
deployments were tried and how each attempt ended (the ledger's ``attempts``); exactly one
ledger row; and that every upstream connection the case opened is closed afterwards. Every
OpenAI-dialect body is also held to the byte-exact rule: ``data: [DONE]`` only ever follows
a real finish, never a failure.

(Section E's rows are elsewhere: store down in ``accounts/test_admission.py``, Redis down there too,
SIGTERM in ``system/test_drain.py``, SIGKILL in ``system/test_accounts_processes.py``.)
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import pytest

from gateway.config import ModelRoute, Routing
from gateway.wire import sse
from tests.support.gateways import GatewayFactory, Gw, Sim
from tests.support.streams import check_done_rule

DEADLINES = {"first_token": 0.5, "idle": 0.5, "total": 1.5, "commit_grace": 1.4}
ROUTING = Routing(max_attempts=2, backoff=0.05)
DIALECTS = ("openai", "anthropic", "gemini")


@attrs.frozen
class Row:
    id: str
    directive: str
    # Pre-commit: the HTTP status. After the commit point (streams only): 200 and the
    # terminal error event. None: a clean answer.
    status: int | None
    attempts: tuple[str, ...]  # outcomes, in order, of a streamed request
    unary: tuple[int | None, tuple[str, ...]] | None = None  # (status, attempts) if different
    model: str = "lorem"
    retry_after: str | None = None
    midstream: bool = False  # streams end with the terminal error event after data


ROWS = [
    Row("C1-500", "scenario=status_500", 502, ("upstream_error", "upstream_error")),
    Row("C1-502", "scenario=status_502", 502, ("upstream_error", "upstream_error")),
    Row("C1-503", "scenario=status_503", 503, ("service_unavailable",) * 2),
    # The deployment is cooled down for the Retry-After: no second call; the 429 is relayed.
    Row("C2-429", "scenario=status_429 retry_after=7", 429, ("rate_limit_error",),
        retry_after="7"),
    Row("C3-529", "scenario=status_529", 503, ("service_unavailable",) * 2),
    # Our own credentials refused: not retried on the same deployment.
    Row("C4-401", "scenario=status_401", 502, ("upstream_error",)),
    Row("C5-refused", "", 502, ("upstream_error", "upstream_error"), model="dead"),
    Row("C6-invalid-json", "scenario=invalid_json", 502, ("upstream_error",) * 2),
    Row("C7-no-headers", "scenario=no_headers", 504, ("timeout", "timeout")),
    Row("C8-stall", "scenario=stall tokens=6", 200, ("timeout",), midstream=True,
        unary=(504, ("timeout", "timeout"))),
    Row("C9-drip", "tokens=100 interval_ms=300", 200, ("timeout",), midstream=True,
        unary=(504, ("timeout", "timeout"))),
    Row("C10-endless", "tokens=100000 interval_ms=10", 200, ("timeout",), midstream=True,
        unary=(504, ("timeout", "timeout"))),
    Row("C11-cut", "scenario=cut tokens=6", 200, ("upstream_error",), midstream=True,
        unary=(502, ("upstream_error",) * 2)),
    Row("C12-reset", "scenario=reset tokens=6", 200, ("upstream_error",), midstream=True,
        unary=(502, ("upstream_error",) * 2)),
    Row("C13-midstream", "scenario=midstream_error tokens=6", 200, ("upstream_error",),
        midstream=True, unary=(502, ("upstream_error",) * 2)),
    Row("C18-no-usage", "scenario=no_usage", None, ("ok",)),
]


def request(dialect: str, model: str, text: str, stream: bool, key: str) -> tuple[str, dict[
        str, str], dict[str, Any]]:
    """(path, headers, body) of one generation request in ``dialect``."""
    messages = [{"role": "user", "content": text}]
    if dialect == "openai":
        return ("/v1/chat/completions", {"authorization": f"Bearer {key}"},
                {"model": model, "stream": stream, "messages": messages})
    if dialect == "anthropic":
        return ("/v1/messages", {"x-api-key": key},
                {"model": model, "stream": stream, "max_tokens": 256, "messages": messages})
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return (f"/v1beta/models/{model}:{method}", {"x-goog-api-key": key},
            {"contents": [{"role": "user", "parts": [{"text": text}]}]})


def ending(dialect: str, raw: bytes) -> str:
    """How a streamed body ended: "finished", "error" (the terminal event) or "cut"."""
    events = sse.Decoder().feed(raw)
    if dialect == "openai":
        check_done_rule(raw)
        if events and events[-1].data == "[DONE]":
            return "finished"
        last = json.loads(events[-1].data) if events else {}
        if last.get("choices") and last["choices"][0].get("finish_reason") == "error":
            return "error"
        return "cut"
    if dialect == "anthropic":
        names = [e.event for e in events]
        if names and names[-1] == "error":
            assert "message_stop" not in names
            return "error"
        return "finished" if names and names[-1] == "message_stop" else "cut"
    chunks = [json.loads(e.data) for e in events]
    if chunks and "error" in chunks[-1]:
        assert not any(c.get("candidates", [{}])[0].get("finishReason") for c in chunks[:-1])
        return "error"
    finished = chunks and chunks[-1].get("candidates", [{}])[0].get("finishReason")
    return "finished" if finished else "cut"


def route_for(row: Row, dialect: str) -> str:
    # Gemini SDK-style paths refuse a "/": every case goes through an alias.
    return f"m-{row.model}"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
async def test_fault_matrix(
    start_gateway: GatewayFactory, sim: Sim, row: Row, dialect: str, stream: bool
) -> None:
    provider = "dead" if row.model == "dead" else "fake"
    models = {f"m-{row.model}": ModelRoute(f"m-{row.model}", provider, row.model)}
    tag = f"{row.id}-{dialect}-{stream}"
    status, attempts = (row.status, row.attempts)
    if not stream and row.unary is not None:
        status, attempts = row.unary
    async with start_gateway(routing=ROUTING, models=models, **DEADLINES) as gw:
        path, headers, body = request(dialect, route_for(row, dialect),
                                      f"#sim tag={tag} {row.directive}\nhello", stream, gw.key)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            response = await client.post(path, json=body, headers=headers)
        raw = response.content
        [record] = await gw.wait_records(1)
        await assert_upstreams_closed(gw, sim, tag)

    outcomes = tuple(a.split("=", 1)[1] for a in record.attempts.split(";"))
    assert outcomes == attempts, record.attempts
    if status is None:
        assert response.status_code == 200
        if stream:
            assert ending(dialect, raw) == "finished"
        assert record.status == "ok" and record.usage_estimated == (row.id == "C18-no-usage")
    elif status == 200:
        assert stream and row.midstream
        assert response.status_code == 200
        assert ending(dialect, raw) == "error", raw[-400:]
        assert record.status == "partial" and record.error_type == attempts[-1]
    else:
        assert response.status_code == status, raw[:300]
        assert "error" in response.json()
        assert response.headers.get("retry-after") == row.retry_after
        assert record.status == "upstream_error" and record.http_status == status
        assert record.completion_tokens == 0
    if dialect == "openai":
        check_done_rule(raw)


async def assert_upstreams_closed(gw: Gw, sim: Sim, tag: str) -> None:
    """Every upstream request of this case has ended: none is still being answered."""
    for record in sim.records(tag):
        await sim.wait_record(tag, lambda r, i=record.id: r.id == i and r.ended_at is not None)
    assert all(r.outcome != "running" for r in sim.records(tag))
    del gw
