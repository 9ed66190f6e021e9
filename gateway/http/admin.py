"""Key management over HTTP: the admin API (its policy parsing is ``accounts/policy.py``).

Routes (JSON; ``Authorization: Bearer <admin token>``, never a user key):

    GET    /admin/keys                   every key's policy and balance
    POST   /admin/keys                   create; the answer holds the secret, once
    GET    /admin/keys/{id}              one key, with its current limiter usage
    PATCH  /admin/keys/{id}              change policy fields
    POST   /admin/keys/{id}/revoke
    POST   /admin/keys/{id}/top-up       {"amount_usd": "5.00"} (negative deducts)
    GET    /admin/generations/{id}       any ledger row
    GET    /admin/health                 deployments' circuits, drain state

Rules:
- The admin token comes from the environment (``AROUTER_ADMIN_TOKEN`` by default), never
  from the config file. Without one the admin API answers 403 "disabled". A wrong token,
  a user key, or none at all get the uniform 401 of ``accounts/keys.py``; comparison is
  constant-time.
- Bodies are strict JSON (``wire/jsonbody``); an unknown field is a 400 naming it.
- Money goes in as dollars, as on the CLI: ``balance_usd`` and ``amount_usd`` (a decimal
  string, or a JSON number read through its shortest form). The unit-less ``balance`` and
  ``amount`` are refused by name rather than guessed at. Answers show every amount twice
  (``balance_usd`` exact decimal string, ``balance_micro_usd`` integer; ``pricing.money``),
  parsed by ``accounts/policy.py``, which the CLI shares.
- A key's view never holds its hash; its secret appears only in the creation answer.
- A change made here drops this process's cached copy of the key; other processes see it
  within ``KEY_CACHE_SECONDS``, and revocation everywhere at once (``accounts/admission.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from quart import Blueprint, request

from gateway.accounts import keys
from gateway.accounts.policy import UNITLESS, dollars, key_view, parse_policy
from gateway.errors import (
    AuthenticationError,
    NotFound,
    PermissionDenied,
    RequestError,
)
from gateway.http.messages import dumps
from gateway.http.service import Service
from gateway.store.rows import ApiKey
from gateway.wire import jsonbody

log = logging.getLogger("arouter.admin")

def _same(presented: str, expected: str) -> bool:
    # Digests first, so the comparison's time depends on neither length.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def blueprint(gateway: Service) -> Blueprint:
    admin = Blueprint("admin", __name__, url_prefix="/admin")

    @admin.before_request
    async def require_admin() -> None:
        expected = gateway.config.accounts.admin_token
        if expected is None:
            raise PermissionDenied(
                "the admin API is disabled: set "
                f"{gateway.config.accounts.admin_token_env} to enable it"
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not _same(token, expected):
            raise AuthenticationError("Invalid admin token")

    async def body() -> dict[str, Any]:
        data = await request.get_data(as_text=False)
        raw = jsonbody.parse(data if isinstance(data, bytes) else data.encode())
        if not isinstance(raw, dict):
            raise RequestError("expected a JSON object")
        return raw

    def policy(raw: dict[str, Any]) -> dict[str, Any]:
        """Key policy from a body; an allowlisted model the gateway does not serve is a 400
        naming it (a typo would make a key refused the very model meant), unless the body
        says ``"allow_unknown_models": true`` (a model to be configured later)."""
        allow = raw.pop("allow_unknown_models", False)
        if not isinstance(allow, bool):
            raise RequestError("allow_unknown_models: expected true or false",
                               param="allow_unknown_models")
        parsed = parse_policy(raw)
        for name in () if allow else parsed.get("models", ()):
            if not gateway.catalog.serves(name):
                raise RequestError(f"models: {gateway.catalog.not_served(name)} (or send "
                                   '"allow_unknown_models": true)', param="models")
        return parsed

    async def found(key_id: str) -> ApiKey:
        key = await gateway.store.find_key(key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r}")
        return key

    def answer(value: Any, status: int = 200) -> Any:
        return dumps(value), status, {"content-type": "application/json"}

    def audit(action: str, key_id: str, **detail: Any) -> None:
        """Every change an admin makes, in the log: what, to which key, from where (the
        admin token is the only identity there is; never a secret)."""
        log.info("admin: %s", action, extra={"key_id": key_id, "admin_client":
                                             request.remote_addr, **detail})

    def changed(key_id: str, key: ApiKey | None, action: str, **detail: Any) -> Any:
        """The answer to a change of ``key_id``; this process forgets its cached copy."""
        if key is None:
            raise NotFound(f"no key {key_id!r}")
        gateway.forget_key(key_id)
        audit(action, key_id, **detail)
        return answer(key_view(key))

    @admin.get("/keys")
    async def list_keys() -> Any:
        return answer({"data": [key_view(k) for k in await gateway.store.list_keys()]})

    @admin.post("/keys")
    async def create_key() -> Any:
        secret, row = keys.generate(created_at=time.time(), **policy(await body()))
        await gateway.store.add_key(row)
        audit("key created", row.id, key_name=row.name, balance_micro_usd=row.balance)
        return answer({"key": secret, **key_view(row)}, 201)

    @admin.get("/keys/<key_id>")
    async def show_key(key_id: str) -> Any:
        key = await found(key_id)
        usage = await gateway.accounts.usage(key)
        return answer({**key_view(key), "usage": usage})

    @admin.patch("/keys/<key_id>")
    async def update_key(key_id: str) -> Any:
        changes = policy(await body())
        return changed(key_id, await gateway.store.update_key(key_id, changes), "key updated",
                       fields=sorted(changes))

    @admin.post("/keys/<key_id>/revoke")
    async def revoke_key(key_id: str) -> Any:
        return changed(key_id, await gateway.store.update_key(key_id, {"revoked": True}),
                       "key revoked")

    @admin.post("/keys/<key_id>/top-up")
    async def top_up(key_id: str) -> Any:
        raw = await body()
        for name in raw:
            if name in UNITLESS:
                raise RequestError(UNITLESS[name], param=name)
            if name != "amount_usd":
                raise RequestError(f"unknown field {name!r}", param=name)
        if "amount_usd" not in raw:
            raise RequestError('expected amount_usd, in dollars (e.g. "5.00")',
                               param="amount_usd")
        amount = dollars(raw["amount_usd"], "amount_usd")
        return changed(key_id, await gateway.store.top_up(key_id, amount), "key topped up",
                       amount_micro_usd=amount)

    @admin.get("/health")
    async def health() -> Any:
        """Each deployment's circuit as this process sees it, and the drain state."""
        return answer({
            "deployments": gateway.circuits.snapshot(),
            "ready": gateway.ready,
            "draining": gateway.draining,
            "open_requests": len(gateway.open_exchanges),
        })

    @admin.get("/generations/<generation_id>")
    async def generation(generation_id: str) -> Any:
        row = await gateway.store.record(generation_id)
        if row is None:
            raise NotFound(f"no generation {generation_id!r}")
        return answer({"data": row.public()})

    return admin
