"""Gemini embeddings: ``:embedContent`` and ``:batchEmbedContents`` bodies in, answers out,
and ``batchEmbedContents`` toward a Gemini upstream.

A client's ``content`` is its text parts, joined; ``outputDimensionality`` and ``taskType``
(and a ``title``) are read. Gemini reports no token usage for embeddings: the gateway
estimates the input (``Embeddings.prompt_tokens`` None).

Rules: pure; a part other than text is refused by name (no embedding dialect here takes
images); ``taskType`` and ``title`` are a Gemini upstream's business, refused elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import Embeddings, EmbedRequest
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.wire.jsonbody import is_int
from gateway.wire.openai.embeddings import finite

MAX_BATCH = 250


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _one(raw: Any, param: str) -> tuple[str, int | None, str | None]:
    """(text, outputDimensionality, taskType) of one EmbedContentRequest."""
    if not isinstance(raw, dict):
        raise _fail("must be an object", param)
    content = raw.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise _fail("'content' must hold parts", f"{param}.content")
    texts = []
    for i, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise _fail("only text parts can be embedded here", f"{param}.content.parts.{i}")
        texts.append(text)
    dims = raw.get("outputDimensionality", raw.get("output_dimensionality"))
    if dims is not None and not (is_int(dims) and dims >= 1):
        raise _fail("'outputDimensionality' must be a positive integer",
                    f"{param}.outputDimensionality")
    task = raw.get("taskType", raw.get("task_type"))
    if task is not None and not isinstance(task, str):
        raise _fail("'taskType' must be a string", f"{param}.taskType")
    return "".join(texts), dims, task


def parse_embed(body: Any, model: str) -> EmbedRequest:
    """``:embedContent``: one text."""
    text, dims, task = _one(body, "request")
    return EmbedRequest(model=model, inputs=(text,), dimensions=dims, dialect="gemini",
                        task=task, raw=body)


def parse_batch(body: Any, model: str) -> EmbedRequest:
    """``:batchEmbedContents``: several, each naming the path's model."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not 0 < len(requests) <= MAX_BATCH:
        raise _fail(f"'requests' must hold 1 to {MAX_BATCH} requests", "requests")
    read = [_one(r, f"requests.{i}") for i, r in enumerate(requests)]
    for i, r in enumerate(requests):
        named = r.get("model", f"models/{model}")
        if named not in (f"models/{model}", model):
            raise _fail("each request must name the model of the path", f"requests.{i}.model")
    if len({(dims, task) for _, dims, task in read}) > 1:
        raise _fail("every request of a batch must ask for the same outputDimensionality "
                    "and taskType", "requests")
    _, dims, task = read[0]
    return EmbedRequest(model=model, inputs=tuple(t for t, _, _ in read), dimensions=dims,
                        dialect="gemini", task=task, raw=body)


def extra(request: EmbedRequest) -> list[str]:
    """What only a Gemini upstream reads (``taskType``, ``title``)."""
    found = ["taskType"] if request.task is not None else []
    items = request.raw.get("requests") or [request.raw]
    if any(isinstance(r, dict) and "title" in r for r in items):
        found.append("title")
    return found


def render_embed(result: Embeddings) -> dict[str, Any]:
    return {"embedding": {"values": list(result.vectors[0])}}


def render_batch(result: Embeddings) -> dict[str, Any]:
    return {"embeddings": [{"values": list(v)} for v in result.vectors]}


def upstream_body(request: EmbedRequest, model: str) -> dict[str, Any]:
    """``batchEmbedContents`` for a Gemini upstream: each text, with the client's own
    request fields where it spoke Gemini (title, taskType), for our model."""
    given = request.raw.get("requests") if request.dialect == "gemini" else None
    items = given if isinstance(given, list) else (
        [request.raw] if request.dialect == "gemini" else [{} for _ in request.inputs])
    out = []
    for text, item in zip(request.inputs, items, strict=True):
        one = {k: v for k, v in item.items() if k != "model"} if isinstance(item, dict) else {}
        one.update(model=f"models/{model}", content={"parts": [{"text": text}]})
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        out.append(one)
    return {"requests": out}


def parse_answer(answer: Mapping[str, Any], expected: int) -> Embeddings:
    found = answer.get("embeddings")
    if not isinstance(found, list) or len(found) != expected:
        raise UpstreamProtocolError(f"upstream returned no {expected} embeddings")
    vectors = []
    for item in found:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise UpstreamProtocolError("upstream embedding is not an array of numbers")
        vectors.append(finite(values))
    return Embeddings(tuple(vectors), None)
