"""The transcript: accumulating deltas, and reported versus estimated usage."""

from __future__ import annotations

from gateway.canonical import (
    ChatRequest,
    Finish,
    Message,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.relay.transcript import Transcript
from gateway.tokens import estimate_prompt_tokens, estimate_tokens

REQUEST = ChatRequest(
    model="sim/echo",
    messages=(
        Message(role="system", content=(TextPart("Be terse."),)),  # 9 chars
        Message(role="user", content=(TextPart("Hello there"),)),  # 11 chars
    ),
)


def test_text_and_reasoning_accumulate_separately_in_order() -> None:
    transcript = Transcript()
    for event in (ReasoningDelta("think "), TextDelta("Hel"), ReasoningDelta("more"),
                  TextDelta("lo"), TextDelta("")):
        transcript.add(event)
    assert "".join(transcript.text) == "Hello"
    assert "".join(transcript.reasoning) == "think more"
    assert transcript.chars == len("think Hello" + "more")
    assert transcript.events == 5
    assert transcript.tool_calls == []


def test_tool_call_deltas_accumulate_by_index() -> None:
    transcript = Transcript()
    for event in (
        ToolCallDelta(index=1, id="call_b", name="now"),
        ToolCallDelta(index=0, id="call_a", name="lookup", arguments='{"q":'),
        ToolCallDelta(index=1, arguments="{}"),
        ToolCallDelta(index=0, arguments='"cat"'),
        ToolCallDelta(index=0, arguments="}"),
    ):
        transcript.add(event)
    assert transcript.tool_calls == [
        ToolCall("call_a", "lookup", '{"q":"cat"}'),
        ToolCall("call_b", "now", "{}"),
    ]
    assert transcript.chars == len("now" + "lookup" + '{"q":' + "{}" + '"cat"' + "}")


def test_later_deltas_without_id_or_name_keep_the_first_ones() -> None:
    transcript = Transcript()
    transcript.add(ToolCallDelta(index=0, id="call_1", name="f"))
    transcript.add(ToolCallDelta(index=0, id=None, name=None, arguments="x"))
    transcript.add(ToolCallDelta(index=0, id="", name="", arguments="y"))
    assert transcript.tool_calls == [ToolCall("call_1", "f", "xy")]


def test_tool_calls_are_ordered_by_index_even_with_gaps() -> None:
    transcript = Transcript()
    for index in (5, 2, 9):
        transcript.add(ToolCallDelta(index=index, id=f"c{index}", name="f"))
    assert [call.id for call in transcript.tool_calls] == ["c2", "c5", "c9"]


def test_finish_records_the_last_reason() -> None:
    transcript = Transcript()
    assert transcript.finish is None
    transcript.add(Finish("tool_calls"))
    transcript.add(Finish("length"))
    assert transcript.finish == "length"


def test_reported_usage_wins_over_the_estimate() -> None:
    transcript = Transcript()
    transcript.add(TextDelta("x" * 400))
    reported = Usage(prompt_tokens=12, completion_tokens=3, cached_tokens=2, reasoning_tokens=1)
    transcript.add(UsageReport(reported))
    transcript.add(TextDelta("more"))
    assert transcript.usage(REQUEST) == reported
    assert transcript.usage(REQUEST).estimated is False


def test_last_usage_report_wins() -> None:
    transcript = Transcript()
    transcript.add(UsageReport(Usage(1, 1)))
    transcript.add(UsageReport(Usage(10, 20)))
    assert transcript.usage(REQUEST) == Usage(10, 20)


def test_usage_is_estimated_from_what_was_relayed_without_a_report() -> None:
    transcript = Transcript()
    transcript.add(TextDelta("abcde"))  # 5
    transcript.add(ReasoningDelta("fg"))  # 2
    transcript.add(ToolCallDelta(index=0, id="c", name="fn", arguments="{}"))  # 2 + 2
    usage = transcript.usage(REQUEST)
    # prompt: "Be terse.\nHello there" is 21 chars -> 6 tokens, plus 4 per message
    assert usage == Usage(prompt_tokens=6 + 8, completion_tokens=3, estimated=True)
    assert usage.total_tokens == 17


def test_no_output_and_no_report_is_free() -> None:
    transcript = Transcript()
    transcript.add(Finish("stop"))  # events, but no output
    assert transcript.usage(REQUEST) == Usage()


def test_a_report_of_usage_without_output_is_billed() -> None:
    transcript = Transcript()
    reported = Usage(prompt_tokens=40, completion_tokens=0)
    transcript.add(UsageReport(reported))
    assert transcript.usage(REQUEST) == reported


def test_the_prompt_estimate_counts_text_and_framing() -> None:
    assert estimate_prompt_tokens(REQUEST) == 14


def test_estimate_rounds_characters_up_to_tokens() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 3, 4, 5, 8, 9)] == [0, 1, 1, 1, 2, 2, 3]


def test_prompt_estimate_counts_text_parts_and_message_framing() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            Message(role="user", content=(TextPart("abcd"), TextPart("efgh"))),
            Message(role="assistant", tool_calls=(ToolCall("c", "f", "{}"),)),
        ),
    )
    # "abcdefgh\n" is 9 chars -> 3 tokens, plus 4 for each of the two messages
    assert estimate_prompt_tokens(request) == 3 + 8


def test_signatures_and_encrypted_reasoning_are_kept_and_encrypted_counts_as_output() -> None:
    t = Transcript()
    for event in (ReasoningSignature("sig", "anthropic"), RedactedReasoning("x" * 40, "anthropic")):
        t.add(event)
    assert (t.signature, t.signed_by, t.redacted) == ("sig", "anthropic", ["x" * 40])
    # Served output (billed as thinking tokens by its provider): it counts toward the
    # output cap and the estimate, while a signature alone is no output.
    assert t.chars == 40
