"""OpenAI's legacy Completions API (``POST /v1/completions``): a client dialect served only
by OpenAI-compatible upstreams, as they sent it.

``parse_request`` reads a body into a ``ChatRequest`` of dialect ``completions`` whose one
user message is the prompt (for estimates, caps and the ledger; the body itself goes to
the upstream as sent, but for the model). ``StreamEncoder`` relays the upstream's
``text_completion`` chunks as they came (``frame``) with our id and model; ``parse_chunk``
and ``parse_whole`` give the relay the events inside (text, finish, usage).

Rules: pure. Every request notes the feature ``completions:prompt``, which only an
OpenAI-dialect deployment honours (``routing/fidelity.py``): any other refuses it by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
    Usage,
    UsageReport,
)
from gateway.errors import GatewayError, RequestError, UpstreamProtocolError
from gateway.wire.jsonbody import is_int, relayed, upstream_object
from gateway.wire.openai.render import usage_json
from gateway.wire.openai.request import refuse_endpoint_fields
from gateway.wire.openai.upstream import upstream_error
from gateway.wire.sse import KEEPALIVE

DIALECT = "completions"
FINISHES: dict[Any, FinishReason] = {"stop": "stop", "length": "length",
                                     "content_filter": "content_filter"}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    if isinstance(prompt, list) and prompt and (
            all(is_int(t) for t in prompt) or all(
                isinstance(p, list) and p and all(is_int(t) for t in p) for p in prompt)):
        return ""  # token ids: estimated by their count (``ChatRequest`` holds no text)
    raise _fail("'prompt' must be a string, strings, or token arrays", "prompt")


def _is_tokens(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(is_int(t) for t in prompt)


def parse_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    refuse_endpoint_fields(body, routing=True)  # the body goes on as sent
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' must be a non-empty string", "model")
    text = _prompt_text(body.get("prompt"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _fail("'stream_options' must be an object", "stream_options")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _fail("'stream' must be true or false", "stream")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and not (is_int(max_tokens)
                                       and 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise _fail(f"'max_tokens' must be an integer between 1 and {MAX_TOKENS_LIMIT}",
                    "max_tokens")
    choices = 1
    for key in ("n", "best_of"):
        value = body.get(key)
        if value is not None and not (is_int(value) and 1 <= value <= 128):
            raise _fail(f"'{key}' must be an integer between 1 and 128", key)
        choices = max(choices, value or 1)
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) or _is_tokens(prompt) else prompt
    if stream and choices * len(prompts) > 1:
        raise _fail("several completions are answered whole only: a stream relays one",
                    "n" if choices > 1 else "prompt")
    ids = [p for p in prompts if isinstance(p, list)]  # token arrays count as given
    return ChatRequest(
        model=model,
        messages=(Message("user", (TextPart(text),)),),
        prompt_tokens=sum(len(p) for p in ids) or None,
        stream=bool(stream),
        max_tokens=max_tokens or 16,  # the API's own default
        choices=choices * len(prompts),
        dialect=DIALECT,
        raw=body,
        features={"completions:prompt": "prompt"},
    )


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The client's body for the upstream's ``/completions``, with our model; usage always
    asked for on a stream (the gateway bills it)."""
    body = {**request.raw, "model": model}
    if request.stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def _usage(raw: Any) -> list[StreamEvent]:
    if not isinstance(raw, dict):
        return []
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not (is_int(prompt) and is_int(completion)):
        raise UpstreamProtocolError("upstream usage is malformed")
    return [UsageReport(Usage(prompt_tokens=prompt, completion_tokens=completion))]


def parse_chunk(obj: Mapping[str, Any]) -> list[StreamEvent]:
    """The events of one ``text_completion`` chunk (any choice's text counts: with one
    prompt and n=1 there is one)."""
    if obj.get("error") is not None:
        raise upstream_error(obj["error"])
    choices = obj.get("choices") or []
    if not isinstance(choices, list):
        raise UpstreamProtocolError("upstream choices is not an array")
    out: list[StreamEvent] = []
    for choice in choices:
        text = choice.get("text") if isinstance(choice, dict) else None
        if isinstance(text, str) and text:
            out.append(TextDelta(text))
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if reason is not None:
            if not isinstance(reason, str):
                raise UpstreamProtocolError("upstream finish_reason is not a string")
            out.append(Finish(FINISHES.get(reason, "stop")))
    return out + _usage(obj.get("usage"))


def parse_whole(body: bytes | dict[str, Any]) -> list[StreamEvent]:
    return parse_chunk(upstream_object(body, "an answer"))


class StreamEncoder:
    """Relays an OpenAI upstream's ``text_completion`` chunks (an ``Encoder``): each as sent
    but for our id and the model the client named; ``[DONE]`` at the end."""

    keepalive: bytes = KEEPALIVE
    splices: str | None = DIALECT  # its chunks come by ``frame``

    def __init__(self, generation_id: str, model: str) -> None:
        self._id, self._model = generation_id, model

    def rename(self, model: str) -> None:
        self._model = model

    def start(self) -> bytes:
        return b""

    def _chunk(self, text: str, finish: str | None) -> bytes:
        chunk = {"id": self._id, "object": "text_completion", "model": self._model,
                 "choices": [{"text": text, "index": 0, "logprobs": None,
                              "finish_reason": finish}]}
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()

    def event(self, event: StreamEvent) -> bytes:
        """A canonical event, for an upstream that answered a stream whole (its events come
        through ``emit``, not ``frame``)."""
        if isinstance(event, TextDelta):
            return self._chunk(event.text, None)
        if isinstance(event, Finish):
            return self._chunk("", event.reason)
        return b""

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        ours = json.dumps({**obj, "id": self._id, "model": self._model},
                          separators=(",", ":"))
        return f"data: {ours}\n\n".encode()

    def splice(self, data: str, at: int) -> bytes:
        raise NotImplementedError("completions chunks come by frame")

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: GatewayError, usage: Usage) -> bytes:
        chunk = {"id": self._id, "object": "text_completion", "model": self._model,
                 "choices": [{"text": "", "index": 0, "logprobs": None,
                              "finish_reason": "error"}],
                 "error": {"code": error.type, "message": error.message}}
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()


def relay_whole(answer: dict[str, Any], generation_id: str, model: str,
                usage: Usage) -> bytes:
    return relayed(answer, {"id": generation_id, "model": model}, "usage", usage_json(usage))
