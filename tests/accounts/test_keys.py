"""API keys: the generated format, what is stored, bearer parsing, and uniform failures."""

from __future__ import annotations

import hashlib
import re

import attrs
import pytest

from gateway.accounts.keys import generate, hash_key, parse_bearer, verify
from gateway.errors import AuthenticationError
from gateway.store.rows import ApiKey

KEY_FORMAT = re.compile(r"lr_live_([0-9a-f]{12})_([0-9a-f]{48})")


def auth_failure(values: list[bytes]) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        parse_bearer(values)
    return info.value


# ---------------------------------------------------------------------------------------
# generate


def test_generated_key_format_and_row() -> None:
    key, row = generate(name="ci", created_at=1234.5)
    match = KEY_FORMAT.fullmatch(key)
    assert match is not None
    assert row == ApiKey(id=match.group(1), hash=hash_key(key), name="ci", created_at=1234.5)
    assert row.revoked is False


def test_generated_keys_are_distinct_and_use_every_hex_digit() -> None:
    generated = [generate()[0] for _ in range(200)]
    matches = [KEY_FORMAT.fullmatch(key) for key in generated]
    ids = {m.group(1) for m in matches if m}
    secrets = {m.group(2) for m in matches if m}
    assert len(set(generated)) == len(ids) == len(secrets) == 200
    # 200 x 48 hex characters from a 192-bit source use every digit, none overwhelmingly.
    digits = "".join(secrets)
    assert set(digits) == set("0123456789abcdef")
    assert max(digits.count(d) for d in set(digits)) < len(digits) / 8


def test_only_the_sha256_of_the_whole_key_is_stored() -> None:
    key, row = generate(name="n")
    secret = key.rsplit("_", 1)[1]
    assert row.hash == hashlib.sha256(key.encode()).hexdigest()
    stored = repr(attrs.asdict(row))
    assert key not in stored
    for start in range(0, len(secret) - 8):
        assert secret[start:start + 8] not in stored


def test_hash_key_is_stable_and_distinguishes_keys() -> None:
    key, _ = generate()
    assert hash_key(key) == hash_key(key)
    assert hash_key(key) != hash_key(key[:-1] + ("0" if key[-1] != "0" else "1"))


# ---------------------------------------------------------------------------------------
# parse_bearer

KEY, ROW = generate(name="fixture")
KEY_ID = ROW.id


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert parse_bearer([scheme + b" " + KEY.encode()]) == (KEY_ID, KEY)


BAD_HEADERS: list[tuple[str, list[bytes]]] = [
    ("no header", []),
    ("two headers", [b"Bearer " + KEY.encode(), b"Bearer " + KEY.encode()]),
    ("two headers, one bad", [b"Bearer " + KEY.encode(), b"Basic x"]),
    ("empty", [b""]),
    ("scheme only", [b"Bearer"]),
    ("scheme and space", [b"Bearer "]),
    ("two spaces", [b"Bearer  " + KEY.encode()]),
    ("tab", [b"Bearer\t" + KEY.encode()]),
    ("leading space", [b" Bearer " + KEY.encode()]),
    ("trailing space", [b"Bearer " + KEY.encode() + b" "]),
    ("key only", [KEY.encode()]),
    ("basic scheme", [b"Basic " + KEY.encode()]),
    ("token scheme", [b"Token " + KEY.encode()]),
    ("bearers", [b"Bearers " + KEY.encode()]),
    ("crlf", [b"Bearer " + KEY.encode() + b"\r\n"]),
    ("injected header", [b"Bearer " + KEY.encode() + b"\r\nX-Evil: 1"]),
    ("trailing newline", [b"Bearer " + KEY.encode() + b"\n"]),
    ("nul", [b"Bearer " + KEY.encode() + b"\x00"]),
    ("nul inside", [b"Bearer " + KEY.encode()[:20] + b"\x00" + KEY.encode()[21:]]),
    ("latin-1 byte", [b"Bearer " + KEY.encode()[:-1] + b"\xff"]),
    ("uppercase hex", [b"Bearer lr_live_" + KEY.encode()[8:].upper()]),
    ("test prefix", [b"Bearer lr_test_" + KEY.encode()[8:]]),
    ("id one short", [b"Bearer lr_live_" + b"a" * 11 + b"_" + b"b" * 48]),
    ("id one long", [b"Bearer lr_live_" + b"a" * 13 + b"_" + b"b" * 48]),
    ("secret one short", [b"Bearer lr_live_" + b"a" * 12 + b"_" + b"b" * 47]),
    ("secret one long", [b"Bearer lr_live_" + b"a" * 12 + b"_" + b"b" * 49]),
    ("non-hex secret", [b"Bearer lr_live_" + b"a" * 12 + b"_" + b"g" * 48]),
    ("no separator", [b"Bearer lr_live_" + b"a" * 12 + b"b" * 48]),
    ("key twice", [b"Bearer " + KEY.encode() + b" " + KEY.encode()]),
    ("sql injection", [b"Bearer ' OR 1=1; --"]),
    ("sql union", [b"Bearer lr_live_" + b"a" * 12 + b"_' UNION SELECT hash FROM keys --"]),
    ("sql sleep", [b"Bearer '; SELECT pg_sleep(5)--"]),
]


@pytest.mark.parametrize(
    "values", [case[1] for case in BAD_HEADERS], ids=[case[0] for case in BAD_HEADERS]
)
def test_malformed_authorization_is_the_uniform_failure(values: list[bytes]) -> None:
    error = auth_failure(values)
    assert type(error) is AuthenticationError
    assert error.message == "Invalid API key"
    assert error.status == 401
    assert KEY not in str(error) and KEY_ID not in str(error)


# ---------------------------------------------------------------------------------------
# verify


def test_right_key_verifies_against_its_row() -> None:
    assert verify(KEY, ROW) is ROW


def failure(key: str, row: ApiKey | None) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        verify(key, row)
    return info.value


def test_every_verification_failure_looks_the_same() -> None:
    other_secret = f"lr_live_{KEY_ID}_{'0' * 48}"
    errors = [
        failure(other_secret, ROW),  # right id, wrong secret
        failure(KEY, None),  # unknown id
        failure(KEY, attrs.evolve(ROW, revoked=True)),  # revoked
        failure(generate()[0], ROW),  # someone else's key against this row
    ]
    assert {type(e) for e in errors} == {AuthenticationError}
    assert {(e.status, e.type, e.message, str(e), e.param) for e in errors} == {
        (401, "authentication_error", "Invalid API key", "Invalid API key", None)
    }
    for error in errors:
        for leaked in (KEY, KEY_ID, ROW.hash, ROW.hash[:8], other_secret):
            assert leaked not in repr(error)


def test_parse_bearer_and_verify_fail_identically() -> None:
    from_header = auth_failure([b"Bearer nope"])
    from_row = failure(KEY, None)
    assert (type(from_header), str(from_header)) == (type(from_row), str(from_row))
