"""Log lines never hold a key, wherever in the record it was put."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from gateway.errors import RequestError
from gateway.observe.logs import JsonFormatter, TextFormatter
from tests.support.gateways import GatewayFactory, Gw, new_key

KEY = "lr_live_0123456789ab_" + "a" * 48
PROVIDER = "sk-proj-abcdefghijklmnop"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "arouter.t", "levelno": logging.INFO,
                                  "levelname": "INFO", "msg": msg, "args": args})
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_json_lines_mask_keys_in_the_message_fields_and_nested_values() -> None:
    line = JsonFormatter().format(record(
        "saw %s", KEY, key=KEY, nested={"list": [PROVIDER, {"deep": f"Bearer {KEY}"}]},
        other=object()))
    assert KEY[-48:] not in line and "abcdefghijklmnop" not in line
    entry = json.loads(line)  # still valid JSON
    assert entry["key"] == "lr_live_0123456789ab_[redacted]"
    assert entry["nested"]["list"][0] == "sk-[redacted]"


def test_text_lines_mask_keys_too() -> None:
    line = TextFormatter().format(record("saw %s", KEY))
    assert KEY[-48:] not in line


def test_error_messages_mask_keys() -> None:
    error = RequestError(f"Unrecognized request argument supplied: {KEY}", param=KEY)
    assert KEY[-48:] not in error.message and KEY[-48:] not in str(error.param)


# -- what an operator finds in the log --------------------------------------------------------


def logged(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(message)]


async def test_refusals_are_logged_with_their_status_and_key(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="arouter")
    poor, poor_key = await new_key(gw, balance=1)
    async with httpx.AsyncClient(timeout=10) as client:
        for key, status in ((poor, 402), ("lr_live_000000000000_" + "0" * 48, 401)):
            response = await client.post(
                f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == status
    refused = {r.status: r for r in logged(caplog, "request refused")}  # type: ignore[attr-defined]
    assert set(refused) == {401, 402}
    assert refused[402].key_id == poor_key.id  # type: ignore[attr-defined]
    assert refused[402].levelno == logging.INFO
    assert refused[401].key_id is None  # type: ignore[attr-defined]
    assert "insufficient credits" in refused[402].reason  # type: ignore[attr-defined]


async def test_admin_actions_are_logged(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="arouter")
    monkeypatch.setenv("AROUTER_ADMIN_TOKEN", "t" * 40)
    admin = {"authorization": "Bearer " + "t" * 40}
    async with start_gateway() as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        created = (await client.post("/admin/keys", headers=admin,
                                     json={"name": "team-a", "balance_usd": "1"})).json()
        key_id = created["id"]
        await client.post(f"/admin/keys/{key_id}/top-up", headers=admin,
                          json={"amount_usd": "2.5"})
        await client.patch(f"/admin/keys/{key_id}", headers=admin, json={"rpm": 5})
        await client.post(f"/admin/keys/{key_id}/revoke", headers=admin)
    actions = [(r.getMessage(), r.key_id) for r in caplog.records  # type: ignore[attr-defined]
               if r.getMessage().startswith("admin: ")]
    assert actions == [("admin: key created", key_id), ("admin: key topped up", key_id),
                       ("admin: key updated", key_id), ("admin: key revoked", key_id)]
    topped = logged(caplog, "admin: key topped up")[0]
    assert topped.amount_micro_usd == 2_500_000  # type: ignore[attr-defined]
    assert topped.admin_client == "127.0.0.1"  # type: ignore[attr-defined]
    assert created["key"] not in caplog.text  # the secret never


async def test_a_failed_upstream_connect_logs_its_target_and_cause(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="arouter")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{gw.url}/v1/chat/completions", headers=gw.headers,
            json={"model": "dead/x", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    assert "127.0.0.1" not in response.text  # the client learns nothing of the topology
    [failed, *_] = logged(caplog, "upstream connect failed")
    assert failed.target == "http://127.0.0.1:1"  # type: ignore[attr-defined]
    assert failed.cause.startswith("ECONNREFUSED")  # type: ignore[attr-defined]
