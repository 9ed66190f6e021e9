"""A fallback's name replaces the asked model's in an opening not yet sent, exactly once.

Pure enough: an ``Exchange`` with each dialect's encoder, no sockets.
"""

from __future__ import annotations

import pytest
import trio

from gateway.canonical import ChatRequest, Message, TextDelta, TextPart
from gateway.config import Deadlines, ProviderConfig
from gateway.relay.exchange import Exchange
from gateway.routing.targets import Target
from gateway.wire.anthropic.render import StreamEncoder as AnthropicEncoder
from gateway.wire.encoder import Encoder
from gateway.wire.openai.render import StreamEncoder as OpenAIEncoder


def exchange(encoder: Encoder) -> Exchange:
    request = ChatRequest(model="asked", messages=(Message("user", (TextPart("hi"),)),))
    target = Target(ProviderConfig(name="p", dialect="openai"), "m")
    return Exchange(generation_id="gen-1", request=request, target=target,
                    deadlines=Deadlines(), encoder=encoder)


async def test_the_opening_names_the_fallback_once_in_every_dialect() -> None:
    encoders: list[tuple[Encoder, bytes]] = [
        (OpenAIEncoder("gen-1", "asked", 0), b'"role"'),
        (AnthropicEncoder("gen-1", "asked"), b"event: message_start")]
    for encoder, opening in encoders:
        ex = exchange(encoder)
        ex.rename("fallback")
        ex.emit(TextDelta("x"))
        sent = bytes(ex.pending)
        assert sent.count(opening) == 1
        assert b'"asked"' not in sent and b'"fallback"' in sent


async def test_an_opening_already_sent_stays_as_it_was() -> None:
    ex = exchange(OpenAIEncoder("gen-1", "asked", 0))
    ex.opening_sent, ex.pending = True, bytearray()
    ex.rename("fallback")
    ex.emit(TextDelta("x"))
    assert b'"fallback"' in bytes(ex.pending) and b'"role"' not in bytes(ex.pending)
    await trio.lowlevel.checkpoint()


async def test_an_anthropic_opening_already_sent_is_never_sent_twice() -> None:
    # Anthropic names the model only in message_start: once that went out (the commit
    # grace passed before any token), a fallback's name has nowhere to go, and a second
    # message_start would restart the client's message.
    ex = exchange(AnthropicEncoder("gen-1", "asked"))
    ex.opening_sent, ex.pending = True, bytearray()
    ex.rename("fallback")
    ex.emit(TextDelta("x"))
    assert b"message_start" not in bytes(ex.pending)
    await trio.lowlevel.checkpoint()


async def test_an_upstreams_own_opening_replaces_ours_only_while_unsent() -> None:
    start = {"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "usage": {"input_tokens": 7, "output_tokens": 1}}}
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}}
    for sent in (False, True):
        ex = exchange(AnthropicEncoder("gen-1", "asked"))
        if sent:
            ex.opening_sent, ex.pending = True, bytearray()
        ex.emit_frame("message_start", "", start, ())
        ex.emit_frame("content_block_start", '{"x":1}', block, (TextDelta("x"),))
        out = bytes(ex.pending)
        assert out.count(b"event: message_start") == (0 if sent else 1)
        assert (b'"input_tokens":7' in out) is not sent and b"msg_up" not in out
        assert out.endswith(b'event: content_block_start\ndata: {"x":1}\n\n')
    await trio.lowlevel.checkpoint()


async def test_frames_held_before_any_answer_are_bounded() -> None:
    # A hostile upstream streaming events that say nothing (no text, no end) cannot grow
    # the memory an attempt holds before it answers.
    from gateway.errors import UpstreamProtocolError
    from gateway.relay.attempts import Attempt
    from gateway.relay.exchange import HIGH_WATER

    ex = exchange(AnthropicEncoder("gen-1", "asked"))
    attempt = Attempt(ex, ex.target, 0.0)
    ping = {"type": "ping"}
    with pytest.raises(UpstreamProtocolError):
        for _ in range(HIGH_WATER // 1000 + 2):
            attempt.emit_frame("ping", "x" * 1000, ping, ())
    assert ex.winner is None
    await trio.lowlevel.checkpoint()
