"""Whose a reasoning signature is, carried inside the value a client of another dialect keeps.

Pure: strings in, strings out.
"""

from __future__ import annotations

import base64

import pytest

from gateway.wire.signatures import for_client, from_client


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("by", ["anthropic", "gemini"])
def test_a_signature_comes_back_with_the_dialect_that_wrote_it(by: str, client: str) -> None:
    held = for_client("EqSig+/=", by, client)
    assert from_client(held, client) == ("EqSig+/=", by)
    if by == client:
        assert held == "EqSig+/="  # the client's own: untouched


def test_a_gemini_client_holds_base64_its_sdk_can_decode() -> None:
    held = for_client("EqSig", "anthropic", "gemini")
    assert base64.b64decode(held, validate=True) == b"arouter.anthropic.EqSig"


@pytest.mark.parametrize("value", ["c2ln", "not base64!", "arouter.nobody.x"])
def test_anything_else_is_the_client_dialect_s_own(value: str) -> None:
    assert from_client(value, "gemini") == (value, "gemini")
    assert from_client(value, "anthropic") == (value, "anthropic")
