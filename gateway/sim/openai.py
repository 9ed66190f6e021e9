"""The OpenAI chat-completions dialect of the fake upstream: ``POST /v1/chat/completions``.

Rules:
- Pure (see ``gateway.sim.dialect``): reads a body, renders chunks and errors; no I/O.
- Shapes as OpenAI sends them: the role chunk goes with the first token, the finish chunk
  has an empty delta, a usage chunk (``"choices":[]``) comes only when the request asked
  for ``stream_options.include_usage`` (and then every other chunk says ``"usage":null``),
  and ``data: [DONE]`` ends a complete stream. A tool call (``tools``, or the deprecated
  ``functions``, declared; no ``tool`` message yet) is a role chunk naming the
  ``call_...`` with empty arguments, a chunk per argument fragment and finish reason
  ``tool_calls``. Errors are
  ``{"error": {"message", "type", "param", "code"}}``; the mid-stream error is a
  ``data: {"error": ...}`` event of a 500 ``server_error``.
"""

from __future__ import annotations

import base64
import functools
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from gateway.sim.dialect import (
    Answer,
    Asked,
    BadRequest,
    Counted,
    Dialect,
    Finish,
    Headers,
    Render,
    Request,
    bearer,
    dumps,
    json_object,
    json_string,
    plan_of,
    text_of,
)
from gateway.sim.scenarios import Plan, prompt_tokens
from gateway.sim.vectors import vector

__all__ = ["DIALECT", "PATH", "error"]

PATH: Final = "/v1/chat/completions"

# OpenAI's error (type, code, message) per status.
_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", None, "Not found."),
    405: ("invalid_request_error", None, "Method not allowed."),
    413: ("invalid_request_error", None, "Request body too large."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", None, "The server is overloaded, please try again later."),
}
_FINISH: Final[dict[Finish, str]] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls"
}
_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("transfer-encoding", "chunked"),
)
_DONE: Final = b"data: [DONE]\n\n"
_MALFORMED_EVENT: Final = b"data: {not json\n\n"
_MIDSTREAM_STATUS: Final = 500


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, code, default = _ERRORS.get(status, ("server_error", None, "Error."))
    text = f"{message or default} (simulated by arouter sim)"
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


def error(status: int, message: str | None = None, retry_after: int | None = None) -> Answer:
    headers: Headers = (("content-type", "application/json"),)
    if retry_after is not None:
        headers = (*headers, ("retry-after", str(retry_after)))
    return Answer(status, dumps(_error_body(status, message)), headers)


def _usage(usage: Counted) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


@attrs.frozen
class _Chunks:
    """One request's answer: stream chunks pre-rendered so a token costs one escape."""

    completion_id: str
    model: str
    include_usage: bool  # the client asked for a usage chunk
    usage: bool  # usage is reported at all (the usage chunk, and in the whole body)
    head: bytes  # 'data: {"id":..,"object":..,"created":..,"model":..,'
    tail: bytes  # '}\n\n', after '"usage":null' when usage was asked for (as OpenAI does)
    token_open: bytes
    token_close: bytes
    logprobs: bool = False  # the client asked for them: whole answers carry them
    choices: int = 1  # ``n``: a whole answer carries that many (the same) choices

    stream_headers: Headers = _SSE_HEADERS
    midstream_status: int = _MIDSTREAM_STATUS

    @classmethod
    def render(cls, model: str, include_usage: bool, logprobs: bool, choices: int,
               record_id: int, usage: bool) -> _Chunks:
        completion_id = f"chatcmpl-sim{record_id}"
        head = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":'
        ).encode() + json_string(model) + b","
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        return cls(
            completion_id=completion_id,
            model=model,
            include_usage=include_usage,
            usage=usage,
            head=head,
            tail=tail,
            logprobs=logprobs,
            choices=choices,
            token_open=head + b'"choices":[{"index":0,"delta":{"content":',
            token_close=b'},"finish_reason":null}]' + tail,
        )

    def opening(self) -> bytes:
        role = b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        return self.head + role + b'"finish_reason":null}]' + self.tail

    def token(self, text: str) -> bytes:
        return self.token_open + json_string(text) + self.token_close

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        choice = f'"choices":[{{"index":0,"delta":{{}},"finish_reason":"{_FINISH[finish]}"}}]'
        out = self.head + choice.encode() + self.tail
        if self.include_usage and self.usage:
            out += self.head + b'"choices":[],"usage":' + dumps(_usage(usage)) + b"}\n\n"
        return out + _DONE

    def error_event(self) -> bytes:
        return b"data: " + dumps(_error_body(self.midstream_status)) + b"\n\n"

    def malformed_event(self) -> bytes:
        return _MALFORMED_EVENT

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer:
        logprobs: dict[str, Any] | None = None
        if self.logprobs:  # one entry per word token, as deterministic as the text
            logprobs = {"content": [{"token": word, "logprob": -0.5, "bytes": None,
                                     "top_logprobs": []} for word in text.split(" ") if word],
                        "refusal": None}
        return self._whole({"role": "assistant", "content": text, "refusal": None}, finish,
                           usage, logprobs)

    def _whole(self, message: dict[str, Any], finish: Finish, usage: Counted,
               logprobs: dict[str, Any] | None = None) -> Answer:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": i, "message": message, "logprobs": logprobs,
                         "finish_reason": _FINISH[finish]} for i in range(self.choices)],
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
        }
        if self.usage:  # every choice's output counts
            body["usage"] = _usage(Counted(usage.prompt, usage.completion * self.choices))
        return Answer(200, dumps(body))

    @property
    def _tool_call_id(self) -> str:
        return "call_" + self.completion_id.removeprefix("chatcmpl-")

    def _tool_delta(self, delta: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        return self.head + b'"choices":' + dumps([choice]) + self.tail

    def tool_stream(self, name: str, fragments: Sequence[str], usage: Counted) -> list[bytes]:
        # As OpenAI streams a call: the role chunk names the call with empty arguments,
        # then one chunk per argument fragment, then the finish chunk.
        start = self._tool_delta({
            "role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": self._tool_call_id, "type": "function",
                "function": {"name": name, "arguments": ""},
            }],
        })
        pieces = [
            self._tool_delta({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            for part in fragments
        ] or [b""]
        pieces[0] = start + pieces[0]
        pieces[-1] += self.closing("tool_calls", usage)
        return pieces

    def tool_whole(self, name: str, fragments: Sequence[str], usage: Counted) -> Answer:
        call = {"id": self._tool_call_id, "type": "function",
                "function": {"name": name, "arguments": "".join(fragments)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        return self._whole(message, "tool_calls", usage)

    def error(self, status: int, retry_after: int | None = None) -> Answer:
        return error(status, None, retry_after)


def _schema(fmt: object) -> Mapping[str, object] | None:
    """``response_format``: json_object (any object) or json_schema's schema."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    spec = fmt.get("json_schema")
    if fmt.get("type") == "json_schema" and isinstance(spec, dict):
        schema = spec.get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    return None


def read(request: Request, defaults: Plan) -> tuple[Asked, Render]:
    data = json_object(
        request.body,
        "We could not parse the JSON body of your request.",
        "The request body must be a JSON object.",
    )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a list of objects.")
    stream = data.get("stream", False)
    options = data.get("stream_options")
    limits = [data.get(k) for k in ("max_tokens", "max_completion_tokens")]
    if not isinstance(stream, bool) or not isinstance(options, dict | None) or not all(
        limit is None or (type(limit) is int and limit >= 0) for limit in limits
    ):
        raise BadRequest("'stream', 'stream_options' or 'max_tokens' has the wrong type.")
    users = [m for m in messages if m.get("role") == "user"]
    prompt = text_of(users[-1].get("content")) if users else ""
    tools = data.get("tools")
    functions = data.get("functions")  # the deprecated form of tools
    if not isinstance(tools, list | None) or not isinstance(functions, list | None):
        raise BadRequest("'tools' and 'functions' must be lists.")
    declared = [t.get("function") for t in tools or () if isinstance(t, dict)]
    declared += functions or []
    given = [limit for limit in limits if isinstance(limit, int)]
    call = Asked(
        model=model,
        stream=stream,
        max_tokens=min(given) if given else None,
        prompt=prompt,
        prompt_tokens=prompt_tokens("".join(text_of(m.get("content")) for m in messages)),
        plan=plan_of(prompt, defaults),
        tools=tuple(f["name"] for f in declared
                    if isinstance(f, dict) and isinstance(f.get("name"), str)),
        tool_result=any(m.get("role") in ("tool", "function") for m in messages),
        schema=_schema(data.get("response_format")),
    )
    include_usage = bool(options and options.get("include_usage") is True)
    choices = data.get("n", 1)
    if type(choices) is not int or not 1 <= choices <= 128:
        raise BadRequest("'n' must be an integer between 1 and 128.")
    return call, functools.partial(_Chunks.render, model, include_usage,
                                   data.get("logprobs") is True, choices)


DIALECT: Final = Dialect(
    name="openai",
    serves=lambda path: path == PATH,
    read=read,
    credential=bearer,
    error=error,
)


EMBEDDINGS_PATH: Final = "/v1/embeddings"


def embed(request: Request) -> Answer:
    """``POST /v1/embeddings``: a deterministic unit vector per input (``sim.vectors``),
    as floats or OpenAI's base64 float32, with the input tokens as usage."""
    try:
        data = json_object(request.body, "We could not parse the JSON body of your request.",
                           "The request body must be a JSON object.")
    except BadRequest as exc:
        return error(400, str(exc))
    model, raw = data.get("model"), data.get("input")
    dims, encoding = data.get("dimensions"), data.get("encoding_format", "float")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(model, str) or not isinstance(texts, list) or not texts:
        return error(400, "'model' and 'input' are required.")
    if dims is not None and (type(dims) is not int or dims < 1):
        return error(400, "'dimensions' must be a positive integer.")
    if texts and all(type(t) is int for t in texts):
        texts = [texts]  # one token array
    words = [t if isinstance(t, str) else " ".join(map(str, t)) for t in texts]
    data_out = []
    for i, text in enumerate(words):
        values = vector(model, text, dims)
        embedding: Any = (base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
                          if encoding == "base64" else list(values))
        data_out.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(prompt_tokens(w) for w in words)
    return Answer(200, dumps({"object": "list", "data": data_out, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))


COMPLETIONS_PATH: Final = "/v1/completions"


@attrs.frozen
class _TextChunks(_Chunks):
    """The legacy Completions API's answer: ``text_completion`` chunks (no role chunk) and
    bodies, otherwise as the chat answer plays."""

    @classmethod
    def render_text(cls, model: str, include_usage: bool, choices: int, record_id: int,
                    usage: bool) -> _TextChunks:
        completion_id = f"cmpl-sim{record_id}"
        head = (
            f'data: {{"id":"{completion_id}","object":"text_completion",'
            f'"created":{int(time.time())},"model":'
        ).encode() + json_string(model) + b","
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        return cls(
            completion_id=completion_id, model=model, include_usage=include_usage,
            usage=usage, head=head, tail=tail, choices=choices,
            token_open=head + b'"choices":[{"text":',
            token_close=b',"index":0,"logprobs":null,"finish_reason":null}]' + tail,
        )

    def opening(self) -> bytes:
        return b""

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        choice = (f'"choices":[{{"text":"","index":0,"logprobs":null,'
                  f'"finish_reason":"{_FINISH[finish]}"}}]')
        out = self.head + choice.encode() + self.tail
        if self.include_usage and self.usage:
            out += self.head + b'"choices":[],"usage":' + dumps(_usage(usage)) + b"}\n\n"
        return out + _DONE

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer:
        body: dict[str, Any] = {
            "id": self.completion_id, "object": "text_completion",
            "created": int(time.time()), "model": self.model,
            "choices": [{"text": text, "index": i, "logprobs": None,
                         "finish_reason": _FINISH[finish]} for i in range(self.choices)],
        }
        if self.usage:
            body["usage"] = _usage(Counted(usage.prompt, usage.completion * self.choices))
        return Answer(200, dumps(body))


def read_completion(request: Request, defaults: Plan) -> tuple[Asked, Render]:
    data = json_object(request.body, "We could not parse the JSON body of your request.",
                       "The request body must be a JSON object.")
    model, prompt = data.get("model"), data.get("prompt")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts:
        raise BadRequest("'prompt' is required.")
    stream, options, limit = data.get("stream", False), data.get("stream_options"), data.get(
        "max_tokens", 16)
    if not isinstance(stream, bool) or not isinstance(options, dict | None) or not (
            type(limit) is int and limit >= 0):
        raise BadRequest("'stream', 'stream_options' or 'max_tokens' has the wrong type.")
    texts = [p if isinstance(p, str) else " ".join(map(str, p)) if isinstance(p, list)
             else str(p) for p in prompts]
    call = Asked(model=model, stream=stream, max_tokens=limit, prompt=texts[-1],
                 prompt_tokens=prompt_tokens("".join(texts)),
                 plan=plan_of(texts[-1], defaults))
    choices = data.get("n", 1)
    if type(choices) is not int or not 1 <= choices <= 128:
        raise BadRequest("'n' must be an integer between 1 and 128.")
    include_usage = bool(options and options.get("include_usage") is True)
    return call, functools.partial(_TextChunks.render_text, model, include_usage,
                                   choices * len(prompts))


COMPLETIONS: Final = Dialect(
    name="openai",
    serves=lambda path: path == COMPLETIONS_PATH,
    read=read_completion,
    credential=bearer,
    error=error,
)


RESPONSES_PATH: Final = "/v1/responses"


@attrs.define
class _ResponseEvents:
    """The Responses API's answer, as a provider that serves it itself sends it: the event
    sequence, each numbered, and the ``response`` object it ends with."""

    response_id: str
    model: str
    usage: bool
    stream_headers: Headers = _SSE_HEADERS
    midstream_status: int = _MIDSTREAM_STATUS
    seq: int = 0
    text: str = ""

    @classmethod
    def render(cls, model: str, record_id: int, usage: bool) -> _ResponseEvents:
        return cls(response_id=f"resp_sim{record_id}", model=model, usage=usage)

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: ".encode() + dumps(payload) + b"\n\n"

    def _response(self, status: str, output: list[Any], usage: Counted | None = None,
                  finish: Finish = "stop") -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.response_id, "object": "response", "created_at": int(time.time()),
            "status": status, "model": self.model, "output": output, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if finish == "length" else None,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        }
        if usage is not None and self.usage:
            body["usage"] = {
                "input_tokens": usage.prompt, "output_tokens": usage.completion,
                "total_tokens": usage.total, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}}
        return body

    def _message(self, text: str, status: str = "completed") -> dict[str, Any]:
        return {"id": f"msg_{self.response_id}", "type": "message", "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}

    def _start(self) -> bytes:
        return (self._event("response.created", response=self._response("in_progress", []))
                + self._event("response.in_progress",
                              response=self._response("in_progress", [])))

    def opening(self) -> bytes:
        item = self._message("", "in_progress")
        return (self._start()
                + self._event("response.output_item.added", output_index=0,
                              item={**item, "content": []})
                + self._event("response.content_part.added", item_id=item["id"],
                              output_index=0, content_index=0,
                              part={"type": "output_text", "text": "", "annotations": []}))

    def token(self, text: str) -> bytes:
        self.text += text
        return self._event("response.output_text.delta", item_id=f"msg_{self.response_id}",
                           output_index=0, content_index=0, delta=text, logprobs=[])

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        item = self._message(self.text)
        end = "response.incomplete" if finish == "length" else "response.completed"
        status = "incomplete" if finish == "length" else "completed"
        return (self._event("response.output_text.done", item_id=item["id"], output_index=0,
                            content_index=0, text=self.text, logprobs=[])
                + self._event("response.content_part.done", item_id=item["id"],
                              output_index=0, content_index=0, part=item["content"][0])
                + self._event("response.output_item.done", output_index=0, item=item)
                + self._event(end, response=self._response(status, [item], usage, finish)))

    def error_event(self) -> bytes:
        return self._event("error", code="server_error",
                           message="The server had an error (simulated by arouter sim)")

    def malformed_event(self) -> bytes:
        return b"event: response.output_text.delta\ndata: {not json\n\n"

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer:
        status = "incomplete" if finish == "length" else "completed"
        return Answer(200, dumps(self._response(status, [self._message(text)], usage, finish)))

    def _call(self, name: str, arguments: str) -> dict[str, Any]:
        return {"id": f"fc_{self.response_id}", "type": "function_call",
                "status": "completed", "call_id": f"call_{self.response_id}", "name": name,
                "arguments": arguments}

    def tool_stream(self, name: str, fragments: Sequence[str], usage: Counted) -> list[bytes]:
        item = self._call(name, "".join(fragments))
        start = self._start() + self._event(
            "response.output_item.added", output_index=0,
            item={**item, "arguments": "", "status": "in_progress"})
        pieces = [self._event("response.function_call_arguments.delta", item_id=item["id"],
                              output_index=0, delta=part) for part in fragments] or [b""]
        pieces[0] = start + pieces[0]
        pieces[-1] += (
            self._event("response.function_call_arguments.done", item_id=item["id"],
                        output_index=0, arguments=item["arguments"])
            + self._event("response.output_item.done", output_index=0, item=item)
            + self._event("response.completed",
                          response=self._response("completed", [item], usage)))
        return pieces

    def tool_whole(self, name: str, fragments: Sequence[str], usage: Counted) -> Answer:
        item = self._call(name, "".join(fragments))
        return Answer(200, dumps(self._response("completed", [item], usage)))

    def error(self, status: int, retry_after: int | None = None) -> Answer:
        return error(status, None, retry_after)


def read_response(request: Request, defaults: Plan) -> tuple[Asked, Render]:
    data = json_object(request.body, "We could not parse the JSON body of your request.",
                       "The request body must be a JSON object.")
    model, given = data.get("model"), data.get("input")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string.")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("'input' must be a string or a list of items.")
    users = [i for i in items if i.get("role") == "user"]
    prompt = text_of(users[-1].get("content")) if users else ""
    stream, limit = data.get("stream", False), data.get("max_output_tokens")
    if not isinstance(stream, bool) or not (limit is None or type(limit) is int):
        raise BadRequest("'stream' or 'max_output_tokens' has the wrong type.")
    tools = data.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list.")
    call = Asked(
        model=model, stream=stream, max_tokens=limit, prompt=prompt,
        prompt_tokens=prompt_tokens("".join(text_of(i.get("content")) for i in items)),
        plan=plan_of(prompt, defaults),
        tools=tuple(t["name"] for t in tools if isinstance(t, dict)
                    and t.get("type") == "function" and isinstance(t.get("name"), str)),
        tool_result=any(i.get("type") == "function_call_output" for i in items),
    )
    return call, functools.partial(_ResponseEvents.render, model)


RESPONSES: Final = Dialect(
    name="openai",
    serves=lambda path: path == RESPONSES_PATH,
    read=read_response,
    credential=bearer,
    error=error,
)
