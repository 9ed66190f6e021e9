"""The Gemini dialect of the fake upstream: ``POST /v1beta/models/{model}:generateContent``
and ``:streamGenerateContent``, also under ``/v1/`` (google-genai's default version).

Rules:
- Pure (see ``gateway.sim.dialect``): reads a body, renders chunks and errors; no I/O.
- The model comes from the path; the key from ``x-goog-api-key`` or ``?key=`` (or an
  ``Authorization: Bearer`` token); the prompt is the text of the last ``contents`` entry
  of role user (an entry without a role is the user's); ``generationConfig.maxOutputTokens``
  caps the tokens.
- ``:streamGenerateContent?alt=sse`` streams ``data: {GenerateContentResponse}`` events
  (CRLF-delimited, as Google sends them); without ``alt=sse`` the same chunks form one JSON
  array written as it grows (``[{..}`` then ``\\n,\\r\\n{..}`` per chunk, then ``]``).
- Every chunk carries ``modelVersion``, ``responseId`` and ``usageMetadata`` (the prompt
  count until the last chunk, which adds ``candidatesTokenCount`` beside its
  ``finishReason``, ``STOP`` or ``MAX_TOKENS``). Hidden usage leaves out every
  ``usageMetadata``.
- A function call (``tools[].functionDeclarations`` declared, no ``functionResponse`` part
  yet) is one ``functionCall`` part ``{name, args}`` in the last chunk, finish reason
  ``STOP``: Gemini streams no argument fragments. A turn of function responses only is no
  prompt: the directive is read from the last user turn with text.
- Errors are ``{"error": {"code", "message", "status"}}`` with Google's status names; a
  retry delay goes in a ``google.rpc.RetryInfo`` detail, not a Retry-After header. The
  mid-stream error is such an object as a chunk (500 ``INTERNAL``), then the end.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs

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

__all__ = ["DIALECT", "PREFIXES", "error"]

PREFIXES: Final = ("/v1beta/models/", "/v1/models/")
_METHODS: Final = {"generateContent": False, "streamGenerateContent": True}  # -> streams

# Google's (status name, message) per HTTP status.
_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    405: ("INVALID_ARGUMENT", "Method not allowed."),
    413: ("INVALID_ARGUMENT", "Request payload size exceeds the limit."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    502: ("UNAVAILABLE", "Bad gateway."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline exceeded."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}
# Gemini ends a function call with STOP: it has no finish reason of its own.
_FINISH_REASONS: Final[dict[Finish, str]] = {
    "stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"
}
_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("transfer-encoding", "chunked"),
)
_ARRAY_HEADERS: Final = (
    ("content-type", "application/json; charset=UTF-8"),
    ("transfer-encoding", "chunked"),
)
_JSON_HEADERS: Final = (("content-type", "application/json; charset=UTF-8"),)
_MIDSTREAM_STATUS: Final = 500
_MALFORMED: Final = b"{not json"
_PARTS_OPEN: Final = b'{"candidates":[{"content":{"parts":['
_CANDIDATE_OPEN: Final = _PARTS_OPEN + b'{"text":'
# As Gemini rates its last candidate: fields no other dialect has.
_SAFETY_RATINGS: Final = (
    b'"safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"NEGLIGIBLE"}]'
)


def _error_body(
    status: int, message: str | None = None, retry_after: int | None = None
) -> dict[str, Any]:
    fallback = ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Error.")
    name, default = _ERRORS.get(status, fallback)
    body: dict[str, Any] = {
        "code": status,
        "message": f"{message or default} (simulated by arouter sim)",
        "status": name,
    }
    if retry_after is not None:
        body["details"] = [{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": f"{retry_after}s",
        }]
    return {"error": body}


def error(status: int, message: str | None = None, retry_after: int | None = None) -> Answer:
    return Answer(status, dumps(_error_body(status, message, retry_after)), _JSON_HEADERS)


@attrs.define
class _Chunks:
    """One request's answer as GenerateContentResponse chunks, framed as SSE events or as
    the elements of a JSON array; a token costs one escape and a join."""

    sse: bool  # SSE events; otherwise the elements of one JSON array
    usage: bool  # usage is reported at all
    token_close: bytes  # the rest of a token chunk, after its text
    ids: bytes  # ',"modelVersion":..,"responseId":..}'
    # A thinking request's thought signature, on the answer's first part as Gemini puts it.
    signature: str | None = None
    midstream_status: int = _MIDSTREAM_STATUS
    candidates: int = 1  # ``candidateCount``: a whole answer carries that many
    # An array element has been written: the next one needs a comma.
    _started: bool = attrs.field(default=False, init=False)

    @classmethod
    def render(cls, model: str, sse: bool, prompt: int, thinking: bool, candidates: int,
               record_id: int, usage: bool) -> _Chunks:
        ids = b',"modelVersion":%b,"responseId":"sim%d"}' % (json_string(model), record_id)
        running = f',"usageMetadata":{{"promptTokenCount":{prompt},"totalTokenCount":{prompt}}}'
        return cls(
            sse=sse,
            usage=usage,
            token_close=b'}],"role":"model"},"index":0}]'
            + (running.encode() if usage else b"") + ids,
            ids=ids,
            # base64, as Gemini's are (the SDKs decode them to bytes and back)
            signature=base64.b64encode(f"sig-sim-{record_id}".encode()).decode()
            if thinking else None,
            candidates=candidates,
        )

    def _signed(self, part: dict[str, Any]) -> bytes:
        if self.signature is not None:
            part = {**part, "thoughtSignature": self.signature}
        return dumps(part)

    @property
    def stream_headers(self) -> Headers:
        return _SSE_HEADERS if self.sse else _ARRAY_HEADERS

    def _frame(self, chunk: bytes) -> bytes:
        if self.sse:
            return b"data: " + chunk + b"\r\n\r\n"
        prefix = b"\n,\r\n" if self._started else b"["
        self._started = True
        return prefix + chunk

    def _end(self) -> bytes:
        return b"" if self.sse else b"]"

    def _last(self, part: bytes, finish: Finish, usage: Counted) -> bytes:
        """The chunk that ends an answer; ``part`` is its one part as a JSON object."""
        chunk = (
            _PARTS_OPEN + part + b'],"role":"model"},"finishReason":"'
            + _FINISH_REASONS[finish].encode() + b'","index":0,' + _SAFETY_RATINGS + b"}]"
        )
        if self.usage:
            chunk += (
                f',"usageMetadata":{{"promptTokenCount":{usage.prompt},'
                f'"candidatesTokenCount":{usage.completion},"totalTokenCount":{usage.total}}}'
            ).encode()
        return chunk + self.ids

    def opening(self) -> bytes:
        return b""

    def token(self, text: str) -> bytes:
        return self._frame(_CANDIDATE_OPEN + json_string(text) + self.token_close)

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        # Like Gemini's own last chunk: an empty text part beside the finish reason and
        # the full usage.
        return self._frame(self._last(b'{"text":""}', finish, usage)) + self._end()

    def error_event(self) -> bytes:
        return self._frame(dumps(_error_body(self.midstream_status))) + self._end()

    def malformed_event(self) -> bytes:
        return self._frame(_MALFORMED)

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer:
        if self.candidates == 1:
            return Answer(200, self._last(self._signed({"text": text}), finish, usage),
                          _JSON_HEADERS)
        # candidateCount: that many (the same) candidates, each one's output counted.
        body = json.loads(self._last(self._signed({"text": text}), finish,
                                     Counted(usage.prompt, usage.completion * self.candidates)))
        [candidate] = body["candidates"]
        body["candidates"] = [{**candidate, "index": i} for i in range(self.candidates)]
        return Answer(200, dumps(body), _JSON_HEADERS)

    def _function_call(self, name: str, fragments: Sequence[str]) -> bytes:
        return self._signed({"functionCall": {"name": name,
                                              "args": json.loads("".join(fragments))}})

    def tool_stream(self, name: str, fragments: Sequence[str], usage: Counted) -> list[bytes]:
        # Gemini streams no argument fragments: the whole functionCall comes in one chunk,
        # beside the finish reason and the full usage.
        part = self._function_call(name, fragments)
        return [self._frame(self._last(part, "tool_calls", usage)) + self._end()]

    def tool_whole(self, name: str, fragments: Sequence[str], usage: Counted) -> Answer:
        part = self._function_call(name, fragments)
        return Answer(200, self._last(part, "tool_calls", usage), _JSON_HEADERS)

    def error(self, status: int, retry_after: int | None = None) -> Answer:
        return error(status, None, retry_after)


def _serves(path: str) -> bool:
    return path.startswith(PREFIXES)


def _credential(request: Request) -> str | None:
    key = request.header("x-goog-api-key")
    if key is None:
        keys = parse_qs(request.query).get("key")
        key = keys[0] if keys else None
    return key if key is not None else bearer(request)


def _method(path: str) -> tuple[str, bool]:
    """The model and whether the method streams, from the request path."""
    for prefix in PREFIXES:
        if path.startswith(prefix):
            model, _, method = path[len(prefix):].rpartition(":")
            if model and "/" not in model and method in _METHODS:
                return model, _METHODS[method]
    raise BadRequest(f"Method not found: {path}", status=404)


def _config(data: Mapping[str, object]) -> int | None:
    """``maxOutputTokens`` (REST takes camelCase and snake_case alike)."""
    config = data.get("generationConfig", data.get("generation_config"))
    if config is None:
        return None
    if not isinstance(config, dict):
        raise BadRequest("Invalid value at 'generation_config': expected an object.")
    limit = config.get("maxOutputTokens", config.get("max_output_tokens"))
    if limit is not None and (type(limit) is not int or limit < 0):
        raise BadRequest(
            "Invalid value at 'generation_config.max_output_tokens': expected a whole number."
        )
    return limit


def _declared(data: Mapping[str, object]) -> tuple[str, ...]:
    """The names of the declared functions (REST takes camelCase and snake_case alike)."""
    tools = data.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise BadRequest("Invalid value at 'tools': expected a list.")
    names: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        functions = tool.get("functionDeclarations", tool.get("function_declarations"))
        if isinstance(functions, list):
            names += [f["name"] for f in functions
                      if isinstance(f, dict) and isinstance(f.get("name"), str)]
    return tuple(names)


def _responses(content: Mapping[str, Any]) -> bool:
    """Whether a content entry carries a function's response."""
    parts = content.get("parts")
    return isinstance(parts, list) and any(
        isinstance(part, dict) and ("functionResponse" in part or "function_response" in part)
        for part in parts
    )


def _thinking(config: object) -> bool:
    """Whether ``thinkingConfig`` asks for thinking (a budget of 0 turns it off)."""
    if not isinstance(config, dict):
        return False
    thinking = config.get("thinkingConfig", config.get("thinking_config"))
    if not isinstance(thinking, dict):
        return False
    return thinking.get("thinkingBudget", thinking.get("thinking_budget")) != 0


def _schema(config: object) -> Mapping[str, object] | None:
    """``responseMimeType: application/json`` with ``responseJsonSchema`` or Gemini's own
    ``responseSchema`` (camelCase or snake_case, as the REST API reads them)."""
    if not isinstance(config, dict):
        return None
    mime = config.get("responseMimeType", config.get("response_mime_type"))
    if mime != "application/json":
        return None
    for key in ("responseJsonSchema", "response_json_schema", "responseSchema",
                "response_schema"):
        schema = config.get(key)
        if isinstance(schema, dict):
            return schema
    return {"type": "object"}


def read(request: Request, defaults: Plan) -> tuple[Asked, Render]:
    model, stream = _method(request.path)
    data = json_object(
        request.body,
        "Invalid JSON payload received.",
        "Invalid JSON payload received. Expected an object.",
    )
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    if not all(isinstance(c, dict) for c in contents):
        raise BadRequest("Invalid value at 'contents': expected objects.")
    max_tokens = _config(data)
    # A turn that only returns function responses carries no prompt: the directive stays in
    # the user's message that asked for the call.
    users = [c for c in contents if c.get("role", "user") == "user"
             and (text_of(c.get("parts")) or not _responses(c))]
    prompt = text_of(users[-1].get("parts")) if users else ""
    system = data.get("systemInstruction", data.get("system_instruction"))
    system_text = text_of(system.get("parts")) if isinstance(system, dict) else ""
    everything = system_text + "".join(text_of(c.get("parts")) for c in contents)
    config = data.get("generationConfig") or data.get("generation_config")
    call = Asked(
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        prompt=prompt,
        prompt_tokens=prompt_tokens(everything),
        plan=plan_of(prompt, defaults),
        tools=_declared(data),
        tool_result=any(_responses(c) for c in contents),
        schema=_schema(config),
        thinking=_thinking(config),
    )
    sse = "sse" in parse_qs(request.query).get("alt", [])
    count = config.get("candidateCount", 1) if isinstance(config, dict) else 1
    if type(count) is not int or not 1 <= count <= 8:
        raise BadRequest("Invalid value at 'generation_config.candidate_count'.")
    return call, functools.partial(_Chunks.render, model, sse, call.prompt_tokens,
                                   call.thinking, count)


DIALECT: Final = Dialect(
    name="gemini",
    serves=_serves,
    read=read,
    credential=_credential,
    error=error,
)


def counts(path: str) -> bool:
    return path.startswith(PREFIXES) and path.endswith(":countTokens")


def count(request: Request) -> Answer:
    """``:countTokens``: the contents' tokens (given whole, or in a
    ``generateContentRequest``), as the simulator counts them."""
    try:
        data = json_object(request.body, "Invalid JSON payload received.",
                           "Invalid JSON payload received. Expected an object.")
    except BadRequest as exc:
        return error(400, str(exc))
    inner = data.get("generateContentRequest", data.get("generate_content_request"))
    if isinstance(inner, dict):
        data = inner
    contents = data.get("contents")
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        return error(400, "* CountTokensRequest.contents: contents is not specified")
    system = data.get("systemInstruction", data.get("system_instruction"))
    text = text_of(system.get("parts")) if isinstance(system, dict) else ""
    text += "".join(text_of(c.get("parts")) for c in contents)
    return Answer(200, dumps({"totalTokens": prompt_tokens(text)}), _JSON_HEADERS)


def embeds(path: str) -> bool:
    return path.startswith(PREFIXES) and path.endswith((":embedContent",
                                                        ":batchEmbedContents"))


def embed(request: Request) -> Answer:
    """``:embedContent`` and ``:batchEmbedContents``: a deterministic unit vector per
    content (``sim.vectors``); Gemini reports no token usage for embeddings."""
    try:
        data = json_object(request.body, "Invalid JSON payload received.",
                           "Invalid JSON payload received. Expected an object.")
    except BadRequest as exc:
        return error(400, str(exc))
    model = request.path.rpartition(":")[0].rpartition("/")[2]
    batch = request.path.endswith(":batchEmbedContents")
    items = data.get("requests") if batch else [data]
    if not isinstance(items, list) or not items:
        return error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    values = []
    for item in items:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, dict):
            return error(400, "* EmbedContentRequest.content: content is not specified")
        dims = item.get("outputDimensionality")
        values.append({"values": list(vector(model, text_of(content.get("parts")),
                                             dims if type(dims) is int else None))})
    body = {"embeddings": values} if batch else {"embedding": values[0]}
    return Answer(200, dumps(body), _JSON_HEADERS)
