"""What a Responses API client's body means: input items into canonical messages, and every
field read, translated or refused by name. Pure: dicts in, ``ChatRequest`` out."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.canonical import ImagePart, ResponseFormat, TextPart, ToolCall, ToolChoice
from gateway.errors import RequestError
from gateway.wire.responses.request import parse_request
from gateway.wire.signatures import for_client


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    request = parse_request(body(instructions="be brief"))
    assert [(m.role, m.text) for m in request.messages] == [("system", "be brief"),
                                                           ("user", "hi")]
    assert request.dialect == "responses" and request.stream is False


def test_items_fold_into_turns_as_the_chat_dialects_hold_them() -> None:
    signature = for_client("sig-1", "anthropic", "responses")
    request = parse_request(body(input=[
        {"role": "user", "content": "weather?"},  # the shorthand message
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                         "text": "think"}],
         "encrypted_content": signature},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "message", "role": "developer", "content": [
            {"type": "input_text", "text": "now answer"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"}]},
    ]))
    user, assistant, tool, developer = request.messages
    assert user.text == "weather?"
    assert assistant.role == "assistant" and assistant.text == "Let me look."
    assert assistant.tool_calls == (ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)
    assert (assistant.reasoning, assistant.signature, assistant.signed_by) == (
        "think", "sig-1", "anthropic")
    assert tool.role == "tool" and tool.tool_call_id == "call_1" and tool.text == "sunny"
    assert developer.role == "system"
    assert developer.content == (TextPart("now answer"), ImagePart("https://x/y.png", "high"))
    assert request.features["images"] == "input_image"


def test_encrypted_reasoning_comes_back_as_redacted_for_its_writer() -> None:
    wrapped = for_client("redacted:opaque", "anthropic", "responses")
    [_, assistant] = parse_request(body(input=[
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "summary": [], "encrypted_content": wrapped}])).messages
    assert assistant.redacted == ("opaque",) and assistant.signed_by == "anthropic"


def test_history_comes_before_the_input() -> None:
    history = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "one"}]}]
    request = parse_request(body(input="second"), history)
    assert [(m.role, m.text) for m in request.messages] == [
        ("user", "first"), ("assistant", "one"), ("user", "second")]


def test_what_every_upstream_reads_is_translated_through_the_canonical_model() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = parse_request(body(
        max_output_tokens=100, temperature=0.5, top_p=0.9, parallel_tool_calls=False,
        user="u", text={"format": {"type": "json_schema", "name": "r", "schema": schema,
                                   "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"},
                "strict": True}],
        tool_choice={"type": "function", "name": "f"}))
    assert (request.max_tokens, request.temperature, request.top_p) == (100, 0.5, 0.9)
    assert request.response_format == ResponseFormat("json_schema", schema, "r", None, True)
    assert request.reasoning is not None and request.reasoning.effort == "low"
    assert request.reasoning.include is True  # a summary asked for: thoughts come back
    assert request.tool_choice == ToolChoice("tool", "f")
    assert request.tools[0].strict is True
    assert set(request.features) >= {"temperature", "top_p", "user", "parallel_tool_calls",
                                     "response_format", "reasoning", "strict_tools"}


def test_what_the_gateway_itself_honours_is_no_feature() -> None:
    request = parse_request(body(store=False, metadata={"a": "b"}, previous_response_id="x",
                                 include=["reasoning.encrypted_content"],
                                 truncation="disabled", stream=True))
    assert request.features == {} and request.stream is True


def test_a_field_without_a_canonical_meaning_is_named() -> None:
    request = parse_request(body(prompt_cache_key="k", text={"verbosity": "low"},
                                 service_tier="priority"))
    assert request.features == {"responses:prompt_cache_key": "prompt_cache_key",
                                "responses:text.verbosity": "text.verbosity",
                                "paid:service_tier": "service_tier"}


@pytest.mark.parametrize(("fields", "param"), [
    ({"input": 3}, "input"),
    ({"input": []}, "input"),
    ({"model": ""}, "model"),
    ({"tools": [{"type": "made_up"}]}, "tools.0.type"),
    ({"tools": [{"type": "mcp", "server_url": "https://x"}]}, "tools.0.type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input.0.content.0.file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input.0.content.0.file_id"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
    ({"input": [{"type": "made_up_call", "call_id": "c"}]}, "input.0.type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAAB..."}]},
     "input.0.encrypted_content"),  # OpenAI's own: no upstream here reads it
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"api_base": "http://evil"}, "api_base"),
    ({"mock_response": "x"}, "mock_response"),  # what a LiteLLM upstream would obey
    ({"models": ["other/model"]}, "models"),  # OpenRouter routing, to a native provider
    ({"provider": {"order": ["x"]}}, "provider"),
    ({"truncation": "auto"}, "truncation"),
    ({"include": ["file_search_call.results"]}, "include"),
    ({"max_output_tokens": 8}, "max_output_tokens"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"text": {"format": {"type": "json_schema", "name": "r"}}}, "text.format"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
])
def test_a_refusal_names_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(**fields))
    assert info.value.param == param and info.value.status == 400


def test_built_in_tools_and_their_items_are_features_a_native_provider_honours() -> None:
    request = parse_request(body(
        tools=[{"type": "web_search_preview"}, {"type": "computer_use_preview"}],
        input=[{"role": "user", "content": "hi"},
               {"type": "computer_call_output", "call_id": "c", "output": {}}]))
    assert request.features == {
        "responses:tools.web_search_preview": "tools.0.type",
        "paid:web_search": "tools.0.type",
        "responses:tools.computer_use_preview": "tools.1.type",
        "responses:input.computer_call_output": "input.1.type"}
    assert request.tools == () and [m.role for m in request.messages] == ["user"]
