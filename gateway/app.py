"""The composition root: builds one gateway process from a ``Config``; it only composes.

``create_app`` makes the parts (catalog, metrics, store, limiter, circuits, attempts), the
gateway process that owns their lifecycle (``service.Gateway``), and the ASGI application
hypercorn serves: the raw generation routes (``http/generation.py``) in front of the
quart-trio app for everything else (``http/routes.py``). Nothing else imports this module
but the CLI and the serving loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from gateway.accounts.liveness import new_instance
from gateway.accounts.price_table import builtin
from gateway.config import Config
from gateway.http import embeddings
from gateway.http.count_tokens import TokenCount
from gateway.http.dialects import ANTHROPIC, COMPLETIONS, GEMINI, OPENAI, RESPONSES
from gateway.http.dispatch import Dispatcher
from gateway.http.generation import GEMINI_PREFIXES, GeminiGeneration, Generation
from gateway.http.messages import ErrorRenderer
from gateway.http.responses import ResponsesGeneration
from gateway.http.routes import web_app
from gateway.limits.base import Limiter
from gateway.limits.local import LocalLimiter
from gateway.observe.metrics import Metrics
from gateway.providers.base import Provider
from gateway.relay.attempts import Attempt, Attempts
from gateway.routing.catalog import Catalog
from gateway.routing.circuits import STATE_VALUES, Circuits
from gateway.service import Gateway
from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore

log = logging.getLogger("arouter.app")


def open_store(config: Config) -> Store:
    """PostgreSQL when a URL is configured, else the embedded SQLite file."""
    if config.database_url:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(config.database_url, timeout=config.deadlines.store)
    return SqliteStore(config.database_path, timeout=config.deadlines.store)


def open_limiter(config: Config, metrics: Metrics, instance: str = "") -> Limiter:
    """Limits shared by the fleet through Redis when configured (each process deciding
    from its quota, ``limits/quota.py``; local limits while Redis is down), else
    in-process limits."""
    if not config.accounts.redis_url:
        return LocalLimiter()
    from gateway.limits.fallback import FallbackLimiter
    from gateway.limits.quota import QuotaLimiter
    from gateway.limits.redis import RedisLimiter

    return FallbackLimiter(
        QuotaLimiter(RedisLimiter(config.accounts.redis_url), instance=instance),
        LocalLimiter(),
        on_degraded=lambda degraded: metrics.limiter_degraded.set(int(degraded)),
    )


def create_app(
    config: Config, *, clock: Callable[[], float] = trio.current_time
) -> Dispatcher[Gateway]:
    """The ASGI application for ``config``; its ``gateway`` attribute is the ``Gateway``.
    ``clock`` is what the circuits' cooldowns are measured on (a test moves its own)."""
    metrics = Metrics()

    def circuit_changed(label: str, state: str) -> None:
        metrics.circuit.labels(metrics.bounded(label)).set(STATE_VALUES[state])
        log.warning("deployment circuit %s", state, extra={"deployment": label,
                                                           "state": state})

    def attempted(attempt: Attempt) -> None:
        metrics.attempts.labels(metrics.bounded(attempt.target.label), attempt.outcome).inc()

    routing = config.routing
    circuits = Circuits(routing.failure_threshold, routing.cooldown, clock,
                        on_change=circuit_changed)
    providers: dict[str, Provider] = {}  # filled when the gateway starts
    instance = new_instance()  # this process, as the store and the shared limiter know it
    gateway = Gateway(
        config, catalog=Catalog(config, builtin()), metrics=metrics, store=open_store(config),
        limiter=open_limiter(config, metrics, instance.id), circuits=circuits,
        attempts=Attempts(routing, circuits, providers, on_attempt=attempted),
        providers=providers, instance=instance,
    )
    web = web_app(gateway)
    web.before_serving(gateway.start)
    web.after_serving(gateway.aclose)
    gemini = GeminiGeneration(gateway, GEMINI, "generate_content", others={
        "countTokens": TokenCount(gateway, GEMINI), **embeddings.gemini_routes(gateway)})
    chat = Generation(gateway, OPENAI, "chat_completions")
    responses = ResponsesGeneration(gateway, RESPONSES, "responses")
    embed = embeddings.openai_route(gateway)
    return Dispatcher(
        {
            ("POST", "/v1/chat/completions"): chat,
            ("POST", "/v1/messages"): Generation(gateway, ANTHROPIC, "messages"),
            ("POST", "/v1/messages/count_tokens"): TokenCount(gateway, ANTHROPIC),
            ("POST", "/v1/responses"): responses,
            ("POST", "/v1/embeddings"): embed,
            ("POST", "/v1/completions"): Generation(gateway, COMPLETIONS, "completions"),
            # OpenRouter's paths: a client set up for OpenRouter changes only the host.
            ("POST", "/api/v1/chat/completions"): chat,
            ("POST", "/api/v1/responses"): responses,
            ("POST", "/api/v1/embeddings"): embed,
        },
        web,  # type: ignore[arg-type]  # ASGI typing differs, not the protocol
        gateway,
        lifespan=gateway.lifespan,
        prefixes={("POST", prefix): gemini for prefix in GEMINI_PREFIXES},
        shape=_error_shape,
    )


def _error_shape(path: str) -> ErrorRenderer:
    """The error body a path's clients read: Gemini's under its prefixes, Anthropic's on
    /v1/messages, OpenAI's (the spec's) everywhere else."""
    if path.startswith("/v1beta/") or (path.startswith(GEMINI_PREFIXES) and ":" in path):
        return GEMINI.error_body
    if path.startswith("/v1/messages"):
        return ANTHROPIC.error_body
    return OPENAI.error_body
