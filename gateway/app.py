"""The composition root: builds one gateway from a ``Config`` and hands hypercorn its app.

``Gateway`` owns the long-lived parts (store, upstream clients, providers, catalog); they
are opened by the ASGI lifespan startup and closed at shutdown, so every hypercorn worker
process has its own. ``create_app`` wires the raw generation routes in front of the
quart-trio app that serves everything else.
"""

from __future__ import annotations

import time
from typing import Any

from quart import request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.asgi import Dispatcher, Scope, dumps, error_headers, header_values
from gateway.catalog import Catalog
from gateway.config import Config
from gateway.errors import GatewayError, InternalError, NotFound
from gateway.generation import ChatCompletions
from gateway.keys import ApiKey, parse_bearer, verify
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.providers.base import Provider
from gateway.providers.http import ClientPool
from gateway.providers.openai import OpenAIProvider
from gateway.providers.simulator import SimulatorProvider
from gateway.store.sqlite import SqliteStore
from gateway.wire import openai as wire


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog = Catalog(config)
        self.metrics = Metrics()
        self.store = SqliteStore(config.database_path)
        self.clients: ClientPool | None = None
        self.providers: dict[str, Provider] = {}
        self.ready = False

    async def start(self) -> None:
        await self.store.open()
        self.clients = ClientPool(self.config.deadlines, self.config.upstream_clients)
        self.providers = {
            "openai": OpenAIProvider(self.clients),
            "sim": SimulatorProvider(self.config.sim),
        }
        self.ready = True

    async def aclose(self) -> None:
        self.ready = False
        if self.clients is not None:
            await self.clients.aclose()
        await self.store.aclose()

    async def authenticate(self, scope: Scope) -> ApiKey:
        key_id, key = parse_bearer(header_values(scope, b"authorization"))
        return verify(key, await self.store.find_key(key_id))


def create_app(config: Config) -> Dispatcher:
    """The ASGI application for ``config``; its ``gateway`` attribute is the ``Gateway``."""
    gateway = Gateway(config)
    return Dispatcher(
        {("POST", "/v1/chat/completions"): ChatCompletions(gateway)},
        _web_app(gateway),  # type: ignore[arg-type]  # ASGI typing differs, not the protocol
        gateway,
    )


def _json(error: GatewayError) -> Any:
    return (
        wire.error_body(error),
        error.status,
        [(k.decode(), v.decode()) for k, v in error_headers(error)]
        + [("content-type", "application/json")],
    )


def _web_app(gateway: Gateway) -> QuartTrio:
    app = QuartTrio("arouter")
    app.config["MAX_CONTENT_LENGTH"] = gateway.config.max_body_bytes
    app.before_serving(gateway.start)
    app.after_serving(gateway.aclose)

    async def authenticate() -> ApiKey:
        raw = [v.encode("latin-1") for v in request.headers.getlist("authorization")]
        return await gateway.authenticate({"headers": [(b"authorization", v) for v in raw]})

    @app.get("/v1/models")
    async def models() -> Any:
        await authenticate()
        created = int(time.time())
        return dumps({"object": "list", "data": gateway.catalog.listing(created)}), 200, {
            "content-type": "application/json"
        }

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
