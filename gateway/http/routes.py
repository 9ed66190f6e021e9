"""The small routes, served by quart-trio: the caller's key and rows, models, metrics, health.

    GET /v1/key              the caller's own key: balance, limits, what it holds now
    GET /v1/generation?id=   one ledger row, to the key that owns it (else 404, saying why)
    GET /v1/models[/{id}]    the models a client can name, with their details (``models.py``:
                             OpenAI's, Anthropic's or Gemini's shape, as the key is presented)
    GET, DELETE /v1/responses/{id}, GET .../input_items
                             a stored Responses API answer, to the key that made it
    GET /metrics             Prometheus text (keep it off the public vhost)
    /api/v1/...              OpenRouter's paths for chat, responses, key, generation, models
    GET /healthz, /readyz    alive; ready (503 from the drain on)
    /admin/...               ``admin.py``

Every error is JSON in the spec's shape (Gemini's on the Gemini listing); an unexpected one
is a generic 500 whose traceback goes to the log only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.accounts.policy import key_view
from gateway.errors import GatewayError, InternalError, NotFound, RequestError
from gateway.http import admin, models
from gateway.http.credentials import presented_key
from gateway.http.messages import dumps, error_headers
from gateway.http.service import Service
from gateway.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.store.rows import ApiKey, StoredResponse
from gateway.wire.openai import render as openai_render


async def _unrecorded(service: Service, generation_id: str, key_id: str) -> str:
    """Why ``generation_id`` has no ledger row this key may see."""
    refused = service.refusals.find(generation_id, key_id)
    if refused is not None:
        return (f"generation {generation_id} was refused before admission ({refused.status} "
                f"{refused.type}): refused requests are never recorded and cost nothing")
    open_ = await service.store.reservation(generation_id)
    if open_ is not None and open_.key_id == key_id:
        return (f"generation {generation_id} is still running: its row appears when it "
                "settles, a few milliseconds after its last byte")
    return (f"no recorded generation {generation_id} for this key: requests refused before "
            "admission (400, 401, 402, 403, 429, 503) are never recorded and cost nothing")


def _json(error: GatewayError) -> Any:
    return (
        openai_render.error_body(error),
        error.status,
        [(k.decode(), v.decode()) for k, v in error_headers(error)]
        + [("content-type", "application/json")],
    )


def web_app(gateway: Service) -> QuartTrio:
    """The quart-trio app for every route but the generation ones (``dispatch.py``)."""
    app = QuartTrio("arouter")
    app.config["MAX_CONTENT_LENGTH"] = gateway.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = gateway.config.deadlines.body  # 408, as the raw routes
    app.register_blueprint(admin.blueprint(gateway))

    async def authenticate(own: bytes | None = b"x-api-key",
                           query_key: str | None = None) -> ApiKey:
        return await gateway.authenticate(
            *presented_key(list(request.scope["headers"]), own, query_key))

    # Each of the caller's routes also under OpenRouter's /api/v1 prefix.
    @app.get("/v1/key")
    @app.get("/api/v1/key")
    async def key_info() -> Any:
        """The caller's own key: balance, limits and what it holds now."""
        key = await authenticate()
        fresh = await gateway.store.find_key(key.id) or key  # the balance is never cached
        view = key_view(fresh)
        return dumps({"data": {**view, "usage": await gateway.accounts.usage(fresh)}}), 200, {
            "content-type": "application/json"
        }

    @app.get("/v1/generation")
    @app.get("/api/v1/generation")
    async def generation() -> Any:
        """One ledger row, to the key that owns it (anyone else: 404, not 403)."""
        key = await authenticate()
        ids = request.args.getlist("id")
        if len(ids) != 1:
            raise RequestError("expected one id query parameter", param="id")
        generation_id = ids[0]
        row = await gateway.store.record(generation_id)
        if row is not None and row.key_id == key.id:
            return dumps({"data": row.public()}), 200, {"content-type": "application/json"}
        raise NotFound(await _unrecorded(gateway, generation_id, key.id))

    models.register(app, gateway, authenticate)

    async def stored_response(response_id: str) -> StoredResponse:
        key = await authenticate()
        stored = await gateway.store.find_response(response_id, key.id, time.time())
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found (stored responses "
                           "are kept for the key that made them, until they expire)")
        return stored

    @app.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Any:
        stored = await stored_response(response_id)
        return stored.response, 200, {"content-type": "application/json"}

    @app.get("/v1/responses/<response_id>/input_items")
    async def response_input_items(response_id: str) -> Any:
        items = json.loads((await stored_response(response_id)).input_items)
        if request.args.get("order", "desc") == "desc":
            items.reverse()  # OpenAI lists the newest first unless asked otherwise
        page = {"object": "list", "data": items, "has_more": False,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None}
        return dumps(page), 200, {"content-type": "application/json"}

    @app.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Any:
        key = await authenticate()
        if not await gateway.store.delete_response(response_id, key.id):
            raise NotFound(f"Response with id '{response_id}' not found")
        return dumps({"id": response_id, "object": "response", "deleted": True}), 200, {
            "content-type": "application/json"}

    @app.get("/metrics")
    async def metrics() -> Any:
        # Unauthenticated, like most exporters: keep it off the public vhost (deploy/nginx).
        return gateway.metrics.render(), 200, {"content-type": METRICS_CONTENT_TYPE}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        return ({"status": "ready"}, 200) if gateway.ready else ({"status": "not ready"}, 503)

    @app.errorhandler(GatewayError)
    async def gateway_error(error: GatewayError) -> Any:
        return _json(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Any:
        status = error.code or 500
        mapped = NotFound("not found") if status == 404 else GatewayError(error.name)
        mapped.status = status
        mapped.type = "invalid_request_error" if 400 <= status < 500 else "server_error"
        return _json(mapped)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Any:
        # The traceback goes to the log (Quart logs it); the client gets a generic body.
        app.logger.exception("unhandled error", exc_info=error)
        return _json(InternalError())

    return app
