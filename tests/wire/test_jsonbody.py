"""Strict JSON for request bodies: every way a body can be wrong is a RequestError, fast."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RequestError
from gateway.wire.jsonbody import MAX_INT_DIGITS, has_surrogate, parse


def rejected(body: bytes) -> str:
    """The message of the RequestError ``parse`` raises for ``body``."""
    with pytest.raises(RequestError) as info:
        parse(body)
    assert info.value.status == 400
    return info.value.message


def test_valid_body_parses() -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1,"t":0.5,"s":null}'
    assert parse(body) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1, "t": 0.5, "s": None
    }


@pytest.mark.parametrize("body", [b"1", b"null", b'"x"', b"[]", b" {} \n", b"\t[true]\r\n"])
def test_any_json_value_with_surrounding_whitespace_parses(body: bytes) -> None:
    assert parse(body) == json.loads(body)


# ---------------------------------------------------------------------------------------
# Empty and malformed


@pytest.mark.parametrize("body", [b"", b" ", b"\n\t\r ", b"\r\n\r\n"])
def test_empty_or_whitespace_body(body: bytes) -> None:
    assert "empty" in rejected(body)


@pytest.mark.parametrize(
    "body",
    [b"hello", b'{"model":', b"{} {}", b"{'a': 1}", b'{"a":1,}', b"[1,]", b"\xef\xbb\xbf{}",
     b"01", b'"\x01"', b"{\"a\" 1}"],
)
def test_malformed_json(body: bytes) -> None:
    assert rejected(body).startswith("invalid JSON")


# ---------------------------------------------------------------------------------------
# Duplicate keys (FAULTS.md A12, S8)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"model":"cheap","model":"gpt-expensive"}', "model"),
        (b'{"stream":false,"x":1,"stream":true}', "stream"),
        (b'{"messages":[{"role":"user","role":"system","content":"x"}]}', "role"),
        (b'{"a":{"b":{"c":{"d":1,"d":1}}}}', "d"),
        (b'[[{"ok":1}],[{"k":1,"k":2}]]', "k"),
        (b'{"model":"a","mod\\u0065l":"b"}', "model"),
        (b'{"":1,"":2}', ""),
    ],
)
def test_duplicate_keys_are_rejected_at_any_depth(body: bytes, key: str) -> None:
    assert f"duplicate key {key!r}" in rejected(body)


def test_same_key_in_sibling_objects_is_fine() -> None:
    assert parse(b'[{"k":1},{"k":2},{"a":{"k":3}}]') == [{"k": 1}, {"k": 2}, {"a": {"k": 3}}]


def test_keys_differing_only_in_case_are_distinct() -> None:
    assert parse(b'{"Model":1,"model":2}') == {"Model": 1, "model": 2}


# ---------------------------------------------------------------------------------------
# Numbers (FAULTS.md S12)


@pytest.mark.parametrize(
    "body", [b"NaN", b"[Infinity]", b'{"t":-Infinity}', b'{"a":[1,{"b":NaN}]}']
)
def test_nan_and_infinity_are_rejected(body: bytes) -> None:
    assert "is not valid JSON" in rejected(body)


@pytest.mark.parametrize("body", [b"[1e999]", b'{"logit_bias":{"1":-1e400}}'])
def test_overflowing_float_literals_are_rejected(body: bytes) -> None:
    rejected(body)


def test_integers_up_to_the_digit_limit_parse() -> None:
    largest = int("9" * MAX_INT_DIGITS)
    assert parse(str(largest).encode()) == largest
    assert parse(b"[-1, 0, 123456789]") == [-1, 0, 123456789]


@pytest.mark.parametrize(
    "body",
    [b"1" * (MAX_INT_DIGITS + 1), b"[" + b"7" * 5000 + b"]", b'{"seed":' + b"1" * 100_000 + b"}"],
)
def test_huge_integers_are_rejected_quickly(body: bytes) -> None:
    start = time.perf_counter()
    assert "integer too large" in rejected(body)
    assert time.perf_counter() - start < 0.1


def test_negative_integers_get_the_same_digit_budget() -> None:
    smallest = -int("9" * MAX_INT_DIGITS)
    assert parse(str(smallest).encode()) == smallest


def test_large_floats_and_exponents_are_floats() -> None:
    assert parse(b"[1e308, 1.5e-300, 12345678901234567890123456789012345678901234.5]") == [
        1e308, 1.5e-300, 12345678901234567890123456789012345678901234.5
    ]


# ---------------------------------------------------------------------------------------
# Nesting (FAULTS.md A13)

DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP,
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'[{"a":' * (DEEP // 2),
        b'{"messages":' + b"[" * DEEP + b"]" * DEEP + b"}",
    ],
    ids=["open arrays", "balanced arrays", "objects", "mixed", "inside a field"],
)
def test_deep_nesting_is_rejected_fast(body: bytes) -> None:
    start = time.perf_counter()
    assert "nesting too deep" in rejected(body)
    assert time.perf_counter() - start < 0.5


def test_moderate_nesting_parses() -> None:
    value = parse(b"[" * 100 + b'"\\ud83d\\ude00"' + b"]" * 100)
    for _ in range(100):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == "\U0001f600"


# ---------------------------------------------------------------------------------------
# UTF-8 (FAULTS.md A16)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"\xff"}',
        b'"\x80"',
        b'"\xe2\x82"',  # truncated three-byte sequence
        b'"\xc3"',
        b'"\xf4\x90\x80\x80"',  # above U+10FFFF
        b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8 (CESU-8)
        b'"\xed\xa0\xbd\xed\xb8\x80"',  # a CESU-8 surrogate pair
    ],
)
def test_invalid_utf8_is_rejected(body: bytes) -> None:
    assert "not valid UTF-8" in rejected(body)


@pytest.mark.parametrize(
    "body",
    [
        b'"\xc0\xaf"',  # "/" in two bytes
        b'"\xc1\xbf"',
        b'"\xe0\x80\xaf"',  # "/" in three bytes
        b'"\xf0\x80\x80\xaf"',  # "/" in four bytes
        b'{"\xc0\xa2":1}',  # '"' in two bytes, in a key
    ],
)
def test_overlong_encodings_are_rejected(body: bytes) -> None:
    assert "not valid UTF-8" in rejected(body)


def test_valid_multibyte_utf8_parses() -> None:
    text = "h\u00e9llo \u4e16\u754c \U0001f30d"
    assert parse(json.dumps({"t": text}, ensure_ascii=False).encode()) == {"t": text}


# ---------------------------------------------------------------------------------------
# Surrogate escapes


@pytest.mark.parametrize(
    "body",
    [
        b'"\\ud800"',
        b'"\\uDFFF"',
        b'"x\\udc00y"',
        b'"\\ude00\\ud83d"',  # a pair in the wrong order
        b'"\\ud83dx"',  # high surrogate followed by a non-surrogate
        b'"\\ud83d\\ud83d"',  # two highs
        b'{"\\ud800":1}',  # in a key
        b'{"a":[1,{"b":["\\udbff"]}]}',  # nested
        b'"\\\\\\ud800"',  # an escaped backslash, then a real lone surrogate escape
        b'"\xc3\xa9\\ud800"',  # non-ASCII text before it
    ],
)
def test_lone_surrogates_are_rejected(body: bytes) -> None:
    assert "lone surrogate" in rejected(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'"\\ud83d\\ude00"', "\U0001f600"),
        (b'"\\uD83D\\uDE00"', "\U0001f600"),
        (b'"\\udbff\\udfff"', "\U0010ffff"),
        (b'{"\\ud83d\\ude00":"\\ud800\\udc00"}', {"\U0001f600": "\U00010000"}),
    ],
)
def test_valid_surrogate_pairs_parse(body: bytes, expected: Any) -> None:
    assert parse(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'"\\\\ud800"', "\\ud800"),
        (b'{"\\\\udfff":"\\\\ud83d\\\\ude00"}', {"\\udfff": "\\ud83d\\ude00"}),
        (b'"\\\\\\\\ud800"', "\\\\ud800"),
        (b'"\xc3\xa9\\\\ud800"', "\u00e9\\ud800"),
    ],
)
def test_escaped_backslash_before_ud800_text_is_not_a_surrogate(body: bytes, expected: Any) -> None:
    assert parse(body) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", False), ("ascii", False), ("\U0001f600", False), ("\ud800", True), ("a\udfffb", True)],
)
def test_has_surrogate(text: str, expected: bool) -> None:
    assert has_surrogate(text) is expected


# ---------------------------------------------------------------------------------------
# Properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60)
@given(value=json_values, ascii_only=st.booleans())
def test_json_dumps_output_round_trips(value: Any, ascii_only: bool) -> None:
    assert parse(json.dumps(value, ensure_ascii=ascii_only).encode()) == value


@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_request_error(data: bytes) -> None:
    try:
        parse(data)
    except RequestError:
        pass


JSON_TOKENS = [
    *'{}[]",:-+.0123456789eE \t\ntruefalsnNaIiy',
    "\\ud800", "\\udc00", "\\ud83d", "\\ude00", "\\\\", "\\n", "\u00e9", "\U0001f600", "\x00",
]
JSONISH = st.lists(st.sampled_from(JSON_TOKENS), max_size=64).map("".join)


@given(JSONISH)
def test_json_like_text_is_rejected_or_parsed_to_re_encodable_values(text: str) -> None:
    try:
        value = parse(text.encode())
    except RequestError:
        return
    assert value == json.loads(text)
    # What parse accepts can always be re-encoded for the upstream (no lone surrogates).
    json.dumps(value, ensure_ascii=False).encode("utf-8")
