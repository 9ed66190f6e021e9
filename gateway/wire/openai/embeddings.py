"""OpenAI embeddings: ``POST /v1/embeddings`` bodies in, answers out, and the same toward an
OpenAI-compatible upstream.

``parse_request`` validates a client body into an ``EmbedRequest``: ``input`` as a string,
strings, or token arrays (LangChain sends those: only an OpenAI-dialect upstream reads
them), ``dimensions``, ``encoding_format`` (``float`` or ``base64``: float32 little-endian,
as OpenAI encodes it), ``user``. ``render`` writes the answer; ``upstream_body`` and
``parse_answer`` speak to the upstream, which is always asked for floats (the client's
encoding is the gateway's to apply: vectors arrive bit for bit).

Rules: pure; any other field goes to an OpenAI-dialect upstream as sent and is refused
elsewhere (``EXTRA`` names it).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

from gateway.canonical import Embeddings, EmbedRequest
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.wire.jsonbody import is_int

KNOWN = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
MAX_INPUTS = 2048  # OpenAI's own bound
ENCODINGS = ("float", "base64")


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _inputs(raw: Any) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(is_int(t) for t in raw):
        return (tuple(raw),)  # one token array
    if isinstance(raw, list) and 0 < len(raw) <= MAX_INPUTS:
        out: list[str | tuple[int, ...]] = []
        for item in raw:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list) and item and all(is_int(t) for t in item):
                out.append(tuple(item))
            else:
                break
        else:
            return tuple(out)
    raise _fail(f"'input' must be a string, an array of at most {MAX_INPUTS} strings, or "
                "token arrays", "input")


def parse_request(body: Any) -> EmbedRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' must be a non-empty string", "model")
    inputs = _inputs(body.get("input"))
    if any(isinstance(i, str) and not i for i in inputs):
        raise _fail("'input' cannot hold an empty string", "input")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (is_int(dimensions) and 1 <= dimensions <= 65536):
        raise _fail("'dimensions' must be a positive integer", "dimensions")
    if body.get("encoding_format", "float") not in ENCODINGS:
        raise _fail("'encoding_format' must be float or base64", "encoding_format")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail("'user' must be a string", "user")
    return EmbedRequest(model=model, inputs=inputs, dimensions=dimensions, dialect="openai",
                        user=user, raw=body)


def extra(request: EmbedRequest) -> list[str]:
    """The client's fields only an OpenAI-dialect upstream can take as they are."""
    return sorted(request.raw.keys() - KNOWN)


def _encoded(vector: tuple[float, ...]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def render(result: Embeddings, model: str, encoding: str, prompt_tokens: int) -> bytes:
    data = [{"object": "embedding", "index": i,
             "embedding": _encoded(v) if encoding == "base64" else list(v)}
            for i, v in enumerate(result.vectors)]
    return json.dumps({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": prompt_tokens,
                                 "total_tokens": prompt_tokens}},
                      separators=(",", ":")).encode()


def upstream_body(request: EmbedRequest, model: str) -> dict[str, Any]:
    """For an OpenAI-compatible upstream: the client's body (or a translated one) with our
    model, always asking for floats."""
    if request.dialect == "openai":
        body = dict(request.raw)
    else:
        body = {"input": list(request.inputs)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
    body.update(model=model, encoding_format="float")
    return body


def _vector(raw: Any) -> tuple[float, ...]:
    if isinstance(raw, str):  # base64 although floats were asked for: decode it
        try:
            packed = base64.b64decode(raw, validate=True)
        except ValueError:
            raise UpstreamProtocolError("upstream embedding is not base64") from None
        if len(packed) % 4:
            raise UpstreamProtocolError("upstream embedding is not float32 data")
        return finite(struct.unpack(f"<{len(packed) // 4}f", packed))
    if isinstance(raw, list):
        return finite(raw)
    raise UpstreamProtocolError("upstream embedding is not an array of numbers")


def finite(values: Any) -> tuple[float, ...]:
    """An upstream's vector as floats, each finite (``json.loads`` takes NaN, Infinity and
    integers too large for a float: none may reach a client)."""
    try:
        out = tuple(float(x) for x in values if isinstance(x, int | float)
                    and not isinstance(x, bool))
    except OverflowError:
        out = ()
    if len(out) != len(values) or not all(math.isfinite(x) for x in out):
        raise UpstreamProtocolError("upstream embedding is not an array of finite numbers")
    return out


def parse_answer(answer: Mapping[str, Any], expected: int) -> Embeddings:
    data = answer.get("data")
    if not isinstance(data, list) or len(data) != expected:
        raise UpstreamProtocolError(f"upstream returned no {expected} embeddings")
    by_index: dict[int, tuple[float, ...]] = {}
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not is_int(index) or not 0 <= index < expected or index in by_index:
            raise UpstreamProtocolError("upstream embedding has a bad index")
        by_index[index] = _vector(item.get("embedding"))
    usage = answer.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Embeddings(tuple(by_index[i] for i in range(expected)),
                      tokens if is_int(tokens) and tokens >= 0 else None)
