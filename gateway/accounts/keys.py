"""API keys: ``lr_live_<id>_<secret>``, of which only a hash is ever stored.

Rules (FAULTS.md S1-S3, A20):
- 12 hex characters of public id, 48 of secret (192 bits from ``secrets``).
- The store keeps ``sha256(key)``; lookup is by the public id, comparison constant-time,
  and an unknown id still costs one comparison so the two failures look alike.
- Every way of failing gives the same ``AuthenticationError``; no message names the key,
  its hash or a table.
- Pure except for ``secrets``: presenting a key to a store is the caller's business.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from gateway.errors import AuthenticationError
from gateway.store.rows import POLICY_FIELDS, ApiKey

PREFIX = "lr_live_"
_KEY = re.compile(r"lr_live_([0-9a-f]{12})_[0-9a-f]{48}")
_DUMMY_HASH = hashlib.sha256(b"arouter: no such key").hexdigest()


def generate(name: str = "", created_at: float = 0.0, **policy: Any) -> tuple[str, ApiKey]:
    """A new key: the secret string (shown once) and the row to store."""
    unknown = set(policy) - set(POLICY_FIELDS)
    if unknown:
        raise TypeError(f"not a key policy field: {sorted(unknown)}")
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_hex(24)}"
    row = ApiKey(id=key_id, hash=hash_key(key), name=name, created_at=created_at, **policy)
    return key, row


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_bearer(values: list[bytes]) -> tuple[str, str]:
    """(key id, key) from the raw ``Authorization`` header values, or AuthenticationError."""
    if len(values) != 1:
        raise AuthenticationError()
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError()
    return parse_key(token)


def parse_key(token: str) -> tuple[str, str]:
    """(key id, key) from a bare presented key (``x-api-key``, ``x-goog-api-key``, ``?key=``)."""
    match = _KEY.fullmatch(token)
    if match is None:
        raise AuthenticationError()
    return match.group(1), token


def verify(key: str, row: ApiKey | None) -> ApiKey:
    """Constant-time check of a presented key against its stored row (or its absence)."""
    ok = hmac.compare_digest(hash_key(key), row.hash if row is not None else _DUMMY_HASH)
    if row is None or not ok or row.revoked or row.expired(time.time()):
        raise AuthenticationError()
    return row
