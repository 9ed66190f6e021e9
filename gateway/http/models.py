"""The model listings and model details, in each client dialect's shape.

    GET /v1/models, /api/v1/models   OpenAI's list; Anthropic's with x-api-key or
                                     anthropic-version; Gemini's with x-goog-api-key or ?key=
    GET /v1/models/{id}              one model, in the shape the same headers pick
    GET /v1beta/models[/{id}]        Gemini's (google-genai's default API version)

Each entry carries what ``routing/details.py`` knows: the context window, the output cap,
prices, input modalities and the fidelity features every deployment honours — under the
dialect's own names where it has them (Gemini's ``inputTokenLimit``/``outputTokenLimit``),
beside them otherwise. A model id may hold a ``/`` (``sim/lorem``). Errors are in the
shape the request picked.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quart import request
from quart_trio import QuartTrio

from gateway.errors import GatewayError, ModelNotFound, NotFound
from gateway.http.messages import dumps
from gateway.http.service import Service
from gateway.routing.details import ModelDetails, describe
from gateway.store.rows import ApiKey
from gateway.wire.anthropic import render as anthropic_render
from gateway.wire.gemini import render as gemini_render
from gateway.wire.openai import render as openai_render

Authenticate = Callable[[bytes | None, str | None], Awaitable[ApiKey]]
JSON = {"content-type": "application/json"}
GEMINI_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def _shape(gemini_path: bool) -> str:
    """Which dialect's listing a request wants, by how it presents its key."""
    headers = request.headers
    if gemini_path or "x-goog-api-key" in headers or "key" in request.args:
        return "gemini"
    if "x-api-key" in headers or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


def _gemini(details: ModelDetails, created: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"models/{details.id}", "baseModelId": details.id, "version": "arouter",
        "displayName": details.id, "outputTokenLimit": details.max_output_tokens,
        "supportedGenerationMethods": GEMINI_METHODS,
    }
    if details.context_length is not None:
        entry["inputTokenLimit"] = details.context_length
    return {**entry, **_extras(details, created)}


def _anthropic(details: ModelDetails, created: int) -> dict[str, Any]:
    stamp = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return {"type": "model", "id": details.id, "display_name": details.id,
            "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"), **_extras(details, created)}


def _extras(details: ModelDetails, created: int) -> dict[str, Any]:
    """What OpenAI's shape carries that the others have no names for."""
    entry = details.openai(created)
    return {key: entry[key] for key in ("context_length", "max_output_tokens", "architecture",
                                        "pricing", "supported_parameters",
                                        "upstream_dialects")}


RENDER: dict[str, Callable[[ModelDetails, int], dict[str, Any]]] = {
    "openai": lambda details, created: details.openai(created),
    "anthropic": _anthropic, "gemini": _gemini,
}
ERRORS = {"openai": openai_render.error_body, "anthropic": anthropic_render.error_body,
          "gemini": gemini_render.error_body}
KEY_HEADERS = {"openai": None, "anthropic": b"x-api-key", "gemini": b"x-goog-api-key"}


def _page(shape: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    if shape == "gemini":
        return {"models": entries}
    if shape == "anthropic":
        return {"data": entries, "has_more": False,
                "first_id": entries[0]["id"] if entries else None,
                "last_id": entries[-1]["id"] if entries else None}
    return {"object": "list", "data": entries}


def register(app: QuartTrio, gateway: Service, authenticate: Authenticate) -> None:
    async def serve(gemini_path: bool, model_id: str | None) -> Any:
        shape = _shape(gemini_path)
        try:
            keys = request.args.getlist("key")
            await authenticate(KEY_HEADERS[shape], keys[0] if len(keys) == 1 else None)
            created = int(time.time())
            if model_id is not None:
                body: dict[str, Any] = RENDER[shape](_details(gateway, model_id), created)
            else:
                entries = []
                for listed in gateway.catalog.listing(created):
                    try:
                        entries.append(RENDER[shape](describe(gateway.catalog, listed["id"]),
                                                     created))
                    except GatewayError:
                        continue  # listed but not routable now (no deployment left)
                body = _page(shape, entries)
        except GatewayError as error:
            return ERRORS[shape](error, None), error.status, JSON
        return dumps(body), 200, {
            **JSON,
            # Which prices this gateway bills by (``arouter doctor`` reports it).
            "x-arouter-price-table": gateway.catalog.table.date.isoformat(),
        }

    @app.get("/v1/models")
    @app.get("/api/v1/models")
    async def models() -> Any:
        return await serve(False, None)

    @app.get("/v1beta/models")
    async def gemini_models() -> Any:
        return await serve(True, None)

    @app.get("/v1/models/<path:model_id>")
    @app.get("/api/v1/models/<path:model_id>")
    async def model(model_id: str) -> Any:
        return await serve(False, model_id)

    @app.get("/v1beta/models/<path:model_id>")
    async def gemini_model(model_id: str) -> Any:
        return await serve(True, model_id)


def _details(gateway: Service, model_id: str) -> ModelDetails:
    name = model_id.removeprefix("models/")  # Gemini clients may send the full name
    try:
        return describe(gateway.catalog, name)
    except ModelNotFound:
        raise NotFound(f"The model '{name}' does not exist") from None  # 404, as OpenAI
