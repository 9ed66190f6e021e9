"""The SSE codec: spec parsing rules, split-independence, limits, and the encoder."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire.sse import KEEPALIVE, Decoder, Event, SSEError, comment, encode

BOM = b"\xef\xbb\xbf"

OPENAI_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"h\xc3\xa9llo \xf0\x9f\x8c\x8d"},"finish_reason":null}]}\n\n'
)

# Realistic streams, each checked byte-at-a-time against a whole-buffer feed.
STREAMS = {
    "openai": OPENAI_CHUNK * 3 + b"data: [DONE]\n\n",
    "openai-crlf": (OPENAI_CHUNK * 2 + b"data: [DONE]\n\n").replace(b"\n", b"\r\n"),
    "openai-cr": (OPENAI_CHUNK * 2).replace(b"\n", b"\r"),
    "anthropic": (
        b'event: message_start\ndata: {"type":"message_start"}\n\n'
        b": ping\n\n"
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","delta":{"text":"h\xc3\xa9llo \xf0\x9f\x8c\x8d"}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    ),
    "mixed": (
        BOM + b"retry: 3000\r\nid: 7\r\n: comment\r\ndata: a\rdata:b\n\n\n\n"
        b"data:  two spaces\nevent\ndata\n\r\n"
        b"data: \xe2\x80\xa8 is not a line break\n\n"
        b"data: truncated"
    ),
}


def decode_all(stream: bytes, cuts: list[int] | None = None) -> tuple[list[Event], Decoder]:
    decoder = Decoder()
    if cuts is None:
        return decoder.feed(stream), decoder
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = max(start, cut)
    events += decoder.close()
    return events, decoder


def byte_at_a_time(stream: bytes) -> tuple[list[Event], Decoder]:
    return decode_all(stream, list(range(len(stream))))


def reference(stream: bytes) -> tuple[list[Event], int, bool, int]:
    """The spec's algorithm, written literally: (events, comments, pending, largest event).

    Deliberately naive (regex line split, per-line decode) so it shares no shortcut with
    the decoder. The largest event counts line bytes without line endings.
    """
    if stream.startswith(BOM):
        stream = stream[len(BOM) :]
    *lines, remainder = re.split(rb"\r\n|\r|\n", stream)
    events: list[Event] = []
    comments = 0
    data: list[str] = []
    fields: dict[str, str | int | None] = {"event": None, "id": None, "retry": None}
    started = False
    size = largest = 0
    for raw in lines:
        line = raw.decode("utf-8", "replace")
        if not line:
            if data:
                events.append(Event("\n".join(data), **fields))  # type: ignore[arg-type]
            data, fields, started, size = [], dict.fromkeys(fields), False, 0
            continue
        size += len(raw)
        largest = max(largest, size)
        if line.startswith(":"):
            comments += 1
            continue
        started = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            fields["event"] = value
        elif name == "id" and "\0" not in value:
            fields["id"] = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            fields["retry"] = int(value)
    largest = max(largest, size + len(remainder))
    return events, comments, started or bool(remainder), largest


# -- the parsing rules -------------------------------------------------------------------


def test_openai_chunks_in_one_read() -> None:
    events, decoder = decode_all(STREAMS["openai"])
    assert len(events) == 4
    assert events[0].data.startswith('{"id":"chatcmpl-1"')
    assert "héllo 🌍" in events[0].data
    assert events[-1] == Event("[DONE]")
    assert not decoder.pending


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(eol: bytes) -> None:
    stream = b"event: e\ndata: a\ndata: b\n\n: c\n\ndata: d\n\n".replace(b"\n", eol)
    events, decoder = decode_all(stream)
    assert events == [Event("a\nb", event="e"), Event("d")]
    assert decoder.comments == 1


def test_cr_ending_a_feed_and_lf_starting_the_next_are_one_line_ending() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [Event("a\nb")]


def test_cr_ending_a_feed_and_cr_starting_the_next_are_two_line_endings() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r\n") == [Event("a")]
    assert not decoder.pending


def test_comments_are_counted_not_dispatched() -> None:
    events, decoder = decode_all(b": one\n:two\ndata: x\n: three\n\n" + KEEPALIVE)
    assert events == [Event("x")]
    assert decoder.comments == 4


def test_multiline_data_joins_with_lf() -> None:
    events, _ = decode_all(b"data: a\ndata:\ndata: c\n\n")
    assert events == [Event("a\n\nc")]


def test_exactly_one_space_after_the_colon_is_stripped() -> None:
    events, _ = decode_all(b"data:x\n\ndata: x\n\ndata:  x\n\nevent:\ty\ndata\n\n")
    assert events == [Event("x"), Event("x"), Event(" x"), Event("", event="\ty")]


def test_line_without_colon_is_a_field_with_empty_value() -> None:
    events, _ = decode_all(b"data\n\nevent\ndata\n\n")
    assert events == [Event(""), Event("", event="")]


def test_event_without_data_is_not_dispatched() -> None:
    events, decoder = decode_all(b"event: ping\n\nid: 1\nretry: 5\n\n\n\ndata: x\n\n")
    assert events == [Event("x")]
    assert decoder.last_event_id == "1"
    assert decoder.retry == 5


def test_id_fields() -> None:
    events, decoder = decode_all(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid\ndata: c\n\n")
    assert events == [Event("a", id="1"), Event("b"), Event("c", id="")]
    assert decoder.last_event_id == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1000", 1000),
        (b"0", 0),
        (b"", None),
        (b"10a", None),
        (b"-1", None),
        (b" 1", None),
        (b"1.5", None),
        ("\uff11".encode(), None),  # FULLWIDTH DIGIT ONE: a digit, not ASCII
        (b"9" * 5000, None),  # beyond Python's int-from-str limit: ignored, not a crash
    ],
)
def test_retry_counts_only_ascii_digits(value: bytes, expected: int | None) -> None:
    events, _ = decode_all(b"retry: " + value + b"\ndata: x\n\n")
    assert events == [Event("x", retry=expected)]


def test_unknown_fields_are_ignored() -> None:
    events, _ = decode_all(b"foo: bar\nData: no\ndata : no\ndata: yes\n\n")
    assert events == [Event("yes")]


def test_one_bom_at_the_start_is_skipped_even_when_split() -> None:
    stream = BOM + b"data: x\n\n"
    assert byte_at_a_time(stream)[0] == [Event("x")]
    # A second BOM is content: it makes the first field name "\ufeffdata", which is unknown.
    assert decode_all(BOM + stream)[0] == []
    # A BOM later in the stream is content too.
    assert decode_all(b"data: x\n\n" + stream)[0] == [Event("x")]


def test_a_partial_bom_prefix_is_content() -> None:
    decoder = Decoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.pending
    assert decoder.feed(b"data: x\n\ndata: y\n\n") == [Event("y")]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_breaks_are_data(separator: str) -> None:
    payload = f'{{"content":"a{separator}b"}}'
    events, _ = decode_all(b"data: " + payload.encode() + b"\n\n")
    assert events == [Event(payload)]


def test_multibyte_code_point_split_across_feeds_decodes_whole() -> None:
    decoder = Decoder()
    raw = "data: héllo 🌍\n\n".encode()
    split = raw.index(b"\xf0") + 2
    assert decoder.feed(raw[:split]) == []
    assert decoder.feed(raw[split:]) == [Event("héllo 🌍")]


def test_invalid_utf8_is_replaced_per_line() -> None:
    events, _ = decode_all(b"data: a\xff\ndata: \xf0\x9f\n\n")
    assert events == [Event("a\ufffd\n\ufffd")]


@pytest.mark.parametrize("name", list(STREAMS))
def test_one_byte_at_a_time_matches_one_feed(name: str) -> None:
    stream = STREAMS[name]
    whole, whole_decoder = decode_all(stream)
    split, split_decoder = byte_at_a_time(stream)
    assert split == whole
    assert whole
    assert split_decoder.comments == whole_decoder.comments
    assert split_decoder.pending == whole_decoder.pending


def test_mixed_stream_events() -> None:
    events, decoder = decode_all(STREAMS["mixed"])
    assert events == [
        Event("a\nb", id="7", retry=3000),
        Event(" two spaces\n", event=""),
        Event("\u2028 is not a line break"),
    ]
    assert decoder.pending  # "data: truncated" never got its blank line


# -- end of input --------------------------------------------------------------------------


def test_pending_after_a_truncated_event() -> None:
    decoder = Decoder()
    decoder.feed(b"data: a\n\ndata: b\n")
    assert decoder.pending
    assert decoder.close() == []
    assert decoder.pending  # close() discards, but still tells


@pytest.mark.parametrize(
    "stream",
    [b"data: a\n\ndata: b", b"data: a\n\nevent: x\n", b"data: a\n\nfoo\n", b"dat"],
)
def test_pending_for_any_unfinished_line_or_field(stream: bytes) -> None:
    assert decode_all(stream)[1].pending


@pytest.mark.parametrize("stream", [b"", b"data: a\n\n", b"data: a\r\n\r\n", b": c\n", KEEPALIVE])
def test_not_pending_at_a_clean_end(stream: bytes) -> None:
    assert not decode_all(stream)[1].pending


# -- the size limit ------------------------------------------------------------------------


def test_event_of_exactly_max_bytes_passes_and_one_more_fails() -> None:
    # 10 bytes of lines: "data: abcd" (line endings do not count).
    assert Decoder(max_event_bytes=10).feed(b"data: abcd\r\n\r\n") == [Event("abcd")]
    with pytest.raises(SSEError):
        Decoder(max_event_bytes=10).feed(b"data: abcde\n\n")


def test_limit_is_per_event_not_per_stream() -> None:
    decoder = Decoder(max_event_bytes=16)
    assert len(decoder.feed(b"data: 0123456789\n\n" * 100)) == 100
    for _ in range(100):
        assert decoder.feed(b"data: 0123456789\n\n") == [Event("0123456789")]


@pytest.mark.parametrize(
    ("feeds", "refused"),
    [
        # A blank line at the start of a feed ends the event before it: 10 + 10 bytes.
        ([b"data: 0123456789\n", b"\ndata: 0123\n", b"data: 0123\n\n"], False),
        # Lines after the last blank line of a feed belong to the next event: 16 + 10 bytes.
        ([b"data: a\n\ndata: 0123456789\n", b"data: 0123\n\n"], True),
        ([b"data: a\r\n\r\ndata: 0123456789\r", b"\ndata: 012\r\n\r\n"], False),
    ],
)
def test_limit_counts_the_event_in_progress_across_feeds(feeds: list[bytes], refused: bool) -> None:
    decoder = Decoder(max_event_bytes=25)
    with pytest.raises(SSEError) if refused else contextlib.nullcontext():
        for feed in feeds:
            decoder.feed(feed)


def test_line_that_never_ends_is_refused_and_the_decoder_stays_failed() -> None:
    decoder = Decoder(max_event_bytes=1000)
    with pytest.raises(SSEError, match="1000 bytes"):
        for _ in range(100):
            decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEError):
        decoder.feed(b"\n\n")


def test_event_of_many_lines_is_refused() -> None:
    decoder = Decoder(max_event_bytes=1000)
    with pytest.raises(SSEError):
        for _ in range(100):
            decoder.feed(b"data: 0123456789\n")


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)


# -- the encoder ---------------------------------------------------------------------------


def test_encode() -> None:
    assert encode("x") == b"data: x\n\n"
    assert encode("") == b"data: \n\n"
    assert encode("a\nb", event="delta") == b"event: delta\ndata: a\ndata: b\n\n"
    assert encode("a\r\nb\rc\n") == b"data: a\ndata: b\ndata: c\ndata: \n\n"
    assert encode("é\u2028") == "data: é\u2028\n\n".encode()


def test_encode_refuses_an_event_name_with_a_line_break() -> None:
    with pytest.raises(ValueError):
        encode("x", event="a\nb")
    with pytest.raises(ValueError):
        encode("x", event="a\rb")


def test_comment() -> None:
    assert comment() == b": \n\n"
    assert comment("keepalive") == KEEPALIVE == b": keepalive\n\n"
    for bad in ["a\nb", "a\r"]:
        with pytest.raises(ValueError):
            comment(bad)


def test_round_trip_of_data_with_line_breaks() -> None:
    datas = ["a\nb", "\n", "\n\n", "trailing\n", "\nleading", ' {"x": "a\\nb"} ', "héllo 🌍"]
    stream = b"".join(encode(d) for d in datas)
    assert decode_all(stream)[0] == [Event(d) for d in datas]
    assert byte_at_a_time(stream)[0] == [Event(d) for d in datas]


# -- properties ----------------------------------------------------------------------------

cut_points = st.lists(st.integers(min_value=0, max_value=400), max_size=12)

events_strategy = st.lists(
    st.tuples(
        st.text(max_size=20),
        st.none() | st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    events=events_strategy,
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    keepalives=st.booleans(),
    cuts=cut_points,
)
def test_encoded_events_decode_to_themselves(
    events: list[tuple[str, str | None]],
    eol: bytes,
    bom: bool,
    keepalives: bool,
    cuts: list[int],
) -> None:
    separator = KEEPALIVE if keepalives else b""
    stream = separator.join(encode(data, event=event) for data, event in events)
    stream = (BOM if bom else b"") + stream.replace(b"\n", eol)
    decoded, decoder = decode_all(stream, cuts)
    expected = [
        Event(data.replace("\r\n", "\n").replace("\r", "\n"), event=event) for data, event in events
    ]
    assert decoded == expected
    assert not decoder.pending


stream_pieces = st.sampled_from(
    [
        b"data",
        b"data: 0123\n",
        b"data:",
        b"data: ",
        b"event:",
        b"id:",
        b"retry:",
        b"foo:",
        b":",
        b" ",
        b"x",
        b"1",
        b"\x00",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        BOM,
        b"\xc3\xa9",
        b"\xf0\x9f\x8c\x8d",
        b"\xf0\x9f",
        b"\xff",
        "\u2028".encode(),
    ]
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(stream_pieces, max_size=40), cuts=cut_points)
def test_any_stream_split_anywhere_matches_the_spec_reference(
    pieces: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pieces)
    events, comments, pending, _ = reference(stream)
    decoded, decoder = decode_all(stream, cuts)
    assert decoded == events
    assert decoder.comments == comments
    assert decoder.pending == pending


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(stream_pieces, max_size=40),
    cuts=cut_points,
    limit=st.integers(min_value=1, max_value=30),
)
def test_the_limit_does_not_depend_on_split_points(
    pieces: list[bytes], cuts: list[int], limit: int
) -> None:
    stream = b"".join(pieces)
    *_, largest = reference(stream)
    decoder = Decoder(max_event_bytes=limit)
    start = 0
    try:
        for cut in [*sorted(cuts), len(stream)]:
            decoder.feed(stream[start:cut])
            start = max(start, cut)
    except SSEError:
        assert largest > limit
    else:
        assert largest <= limit
