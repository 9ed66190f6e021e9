"""Configuration: one TOML file, environment variables for secrets, defaults that run offline.

Rules:
- No config file is needed: the defaults listen on 127.0.0.1 with a SQLite file in the data
  directory and the built-in simulator provider, plus every real provider whose usual API
  key variable is set (``OPENAI_API_KEY``, ``GROQ_API_KEY``, ...).
- Secrets never live in the file: a provider names the environment variable holding its key.
- Every deadline has a name here and is enforced by a Trio cancel scope, not by socket
  timeouts alone.
- Bad configuration fails at start with a ``ConfigError`` naming the offending key.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from gateway.accounts.price_table import TABLES as PRICE_TABLES
from gateway.accounts.pricing import FREE, MoneyError, Price, parse_price

DIALECTS = ("openai", "anthropic", "gemini", "sim")


class ConfigError(Exception):
    pass


@attrs.frozen
class Deadlines:
    """Seconds. Each one ends a request with a typed failure and a terminal event."""

    connect: float = 10.0  # TCP + TLS to the upstream
    first_token: float = 120.0  # request sent -> first upstream event
    idle: float = 90.0  # between upstream events; keep below nginx proxy_read_timeout
    total: float = 900.0  # whole request, however lively
    commit_grace: float = 2.0  # hold the status line this long waiting for a first event
    keepalive: float = 15.0  # SSE comment after this much client-side silence
    settle: float = 5.0  # shielded bookkeeping after the request ends
    # Key lookup, rate limits and the credit reservation: past this, a 503 with Retry-After
    # (the store or the limiter is not answering), never a request left waiting.
    admission: float = 1.0
    # A request body that has not arrived whole this long after its headers: 408, and the
    # connection is closed (a client sending one byte a second holds nothing for long).
    body: float = 30.0
    store: float = 5.0  # any other read of the store (GET /v1/key, /v1/generation, admin)
    # On SIGTERM/SIGINT open requests may run this long; then each gets a terminal error.
    drain: float = 120.0
    # A client that accepts no bytes for this long is dropped (TCP_USER_TIMEOUT): hypercorn
    # shields its socket writes, so nothing above the kernel could end such a send.
    client_stall: float = 60.0


@attrs.frozen
class ProviderConfig:
    name: str
    dialect: str
    base_url: str = ""
    api_key_env: str | None = None
    # Empty means any model under this provider may be asked for as ``name/model``.
    models: tuple[str, ...] = ()
    # Client request headers forwarded to this provider, by lowercase name (allowlist).
    forward_headers: tuple[str, ...] = ()
    # Prices of this provider's upstream models, for ``provider/model`` names; they win over
    # the built-in table named by ``price_table`` (``accounts/price_table.py``; None: no table).
    prices: Mapping[str, Price] = attrs.field(factory=dict)
    price_table: str | None = None
    free: bool = False  # every model of this provider costs nothing (the operator says so)
    max_output_tokens: int | None = None  # the provider's output cap (reservations)
    context_length: int | None = None  # its models' window, as listings report it
    # What a request this provider cannot honour may lose instead of being refused: True
    # (anything), or parameter / feature names (``routing/fidelity.py``).
    drop_unsupported: bool | tuple[str, ...] = False
    # What a request may ask of this provider that costs beyond its tokens (a service tier,
    # per-call tools): True, or ``features.PAID`` names / parameter names. Default: refused.
    allow_surcharges: bool | tuple[str, ...] = False
    # Features honoured beyond its dialect's (vLLM's OpenAI API takes top_k, min_p, ...).
    accepts: tuple[str, ...] = ()
    # "native": this OpenAI-dialect provider speaks the Responses API itself, and a
    # Responses request goes to its /responses as sent (built-in tools included);
    # "translated" (the default): through Chat Completions, like every other dialect.
    responses: str = "translated"

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@attrs.frozen
class Deployment:
    """One way to serve a public model: a provider's upstream model, with its weight among
    deployments of the same priority (lower priorities are tried first)."""

    provider: str
    model: str
    weight: float = 1.0
    priority: int = 0

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@attrs.frozen
class ModelRoute:
    """A catalog entry: a public model name served by one or more deployments."""

    name: str
    provider: str  # the first deployment's (the whole route when there is only one)
    model: str
    price: Price | None = None  # None: the provider's price for ``model``, if any
    # (``free = true`` in the file sets ``price`` to ``FREE``: no price is not the same)
    max_output_tokens: int | None = None
    context_length: int | None = None  # tokens in and out (model listings); None: unknown
    deployments: tuple[Deployment, ...] = ()  # empty: just provider/model
    # Start the next deployment if the first token has not come after this many seconds.
    hedge_after: float | None = None
    drop_unsupported: bool | tuple[str, ...] | None = None  # None: each provider's

    @property
    def all_deployments(self) -> tuple[Deployment, ...]:
        return self.deployments or (Deployment(self.provider, self.model),)


STRATEGIES = ("weighted", "least_busy")


@attrs.frozen
class Routing:
    """Retries, fallbacks, hedging and circuit breaking (``relay/attempts.py``, ``routing/``)."""

    max_attempts: int = 3  # upstream calls per request, across deployments and retries
    backoff: float = 0.25  # seconds before retrying a deployment already tried, doubling
    strategy: str = "weighted"  # among healthy deployments of one priority
    failure_threshold: int = 5  # consecutive failures that open a deployment's circuit
    cooldown: float = 30.0  # seconds an open circuit waits before a half-open probe
    hedge_after: float | None = None  # default for routes that do not set their own


@attrs.frozen
class AccountsConfig:
    """Credits, limits and crash reconciliation (``accounts/``)."""

    # Reserved output when a request sets no max_tokens and its model names no cap.
    max_output_tokens: int = 4096
    heartbeat: float = 5.0  # seconds between this process's liveness writes
    # Seconds between checkpoints of a stream's output into its reservation: what a crash
    # charges. Output relayed after the last checkpoint (at most this long) is not charged.
    checkpoint: float = 5.0
    stale_after: float = 30.0  # an instance silent this long is dead: settle its reservations
    # A process leases a metered key's credit this many requests' worth at a time (less as
    # the balance runs low), and gives back a lease unused for ``lease_idle`` seconds.
    lease_requests: int = 32
    lease_idle: float = 60.0
    # Seconds between re-reads of the key rows this process has cached (revocations,
    # balances and policy made elsewhere reach it within this).
    key_refresh: float = 1.0
    # Redis for limits shared by a fleet (secret-bearing: from the environment by default).
    redis_url: str | None = None
    admin_token_env: str = "AROUTER_ADMIN_TOKEN"

    @property
    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None

    def check_admin_token(self, environ: Mapping[str, str]) -> None:
        """A token nobody could send (blank, or with whitespace or control characters that
        an Authorization header cannot carry) is a mistake: refuse to start, naming it."""
        token = environ.get(self.admin_token_env)
        if token is None or token == "":
            return
        if not token.strip() or any(c.isspace() or not c.isprintable() for c in token):
            raise ConfigError(f"{self.admin_token_env}: set, but blank or holding whitespace "
                              "or control characters: no client could send it. Unset it to "
                              "turn the admin API off, or give a token of printable "
                              "characters (e.g. openssl rand -hex 32).")


@attrs.frozen
class SimConfig:
    """The built-in simulator provider (no network)."""

    tokens: int = 40  # tokens per answer when max_tokens does not say otherwise
    tokens_per_second: float = 50.0


@attrs.frozen
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = attrs.field(factory=lambda: default_data_dir())
    database: str | None = None  # SQLite path; default <data_dir>/arouter.db
    # postgresql://... for a fleet (else the SQLite file above); from AROUTER_DATABASE_URL.
    database_url: str | None = None
    accounts: AccountsConfig = AccountsConfig()
    routing: Routing = Routing()
    max_body_bytes: int = 16 * 1024 * 1024
    # The most of one upstream answer held in memory: a whole non-streamed answer, or one
    # streamed event. Past it the request ends with an output_limit error (never retried).
    max_answer_bytes: int = 4 * 1024 * 1024
    workers: int = 1  # processes for ``arouter serve`` (``--workers`` overrides)
    # Idle client keep-alive connections are closed after this; keep nginx's upstream
    # ``keepalive_timeout`` below it, so nginx never reuses a connection being closed.
    keep_alive_timeout: float = 75.0
    # Hypercorn's own wait on shutdown; None: drain + settle + 2 s, so it never cuts first.
    graceful_timeout: float | None = None
    deadlines: Deadlines = Deadlines()
    sim: SimConfig = SimConfig()
    # How long a stored Responses API answer is kept (for previous_response_id and GET
    # /v1/responses/{id}), in seconds; 0 stores none.
    responses_retention: float = 30 * 86400.0
    providers: Mapping[str, ProviderConfig] = attrs.field(factory=dict)
    models: Mapping[str, ModelRoute] = attrs.field(factory=dict)

    @property
    def database_path(self) -> Path:
        return Path(self.database) if self.database else self.data_dir / "arouter.db"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    env = environ.get("AROUTER_DATA_DIR")
    if env:
        return Path(env)
    xdg = environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "arouter"


# Providers switched on by their usual environment variables.
ENV_PROVIDERS: tuple[tuple[str, str, str, str, str | None], ...] = (
    # name, dialect, key variable, default base URL, base URL override variable
    ("openai", "openai", "OPENAI_API_KEY", "https://api.openai.com/v1", "OPENAI_BASE_URL"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "https://api.anthropic.com",
     "ANTHROPIC_BASE_URL"),
    ("gemini", "gemini", "GEMINI_API_KEY", "https://generativelanguage.googleapis.com", None),
    ("groq", "openai", "GROQ_API_KEY", "https://api.groq.com/openai/v1", None),
    ("together", "openai", "TOGETHER_API_KEY", "https://api.together.xyz/v1", None),
    ("openrouter", "openai", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1", None),
    ("deepseek", "openai", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1", None),
    ("mistral", "openai", "MISTRAL_API_KEY", "https://api.mistral.ai/v1", None),
    ("fireworks", "openai", "FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1", None),
    ("xai", "openai", "XAI_API_KEY", "https://api.x.ai/v1", None),
)

SIM_PROVIDER = ProviderConfig(name="sim", dialect="sim", models=("echo", "lorem", "embed"),
                              free=True)
# Slash-free names for the simulator's models, there without a config file: the
# google-generativeai SDK refuses a "/" in a model name. A file's own alias of the same
# name replaces one.
SIM_MODELS: Mapping[str, ModelRoute] = {
    alias: ModelRoute(name=alias, provider="sim", model=model)
    for alias, model in (("sim-echo", "echo"), ("sim-lorem", "lorem"), ("sim-embed", "embed"))
}


def env_providers(environ: Mapping[str, str]) -> dict[str, ProviderConfig]:
    found = {}
    for name, dialect, key_var, base_url, base_var in ENV_PROVIDERS:
        if environ.get(key_var):
            url = ((environ.get(base_var) if base_var else None) or base_url).rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{base_var}: an http(s) URL is required")
            found[name] = ProviderConfig(
                name=name, dialect=dialect, base_url=url, api_key_env=key_var,
                price_table=name if name in PRICE_TABLES else None,
            )
    return found


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from an optional TOML file plus the environment."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get("AROUTER_CONFIG"):
        path = Path(environ["AROUTER_CONFIG"])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return from_dict(raw, environ)


def from_dict(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    reader = _Reader(raw, "")
    server = reader.table("server")
    providers: dict[str, ProviderConfig] = {"sim": SIM_PROVIDER}
    providers.update(env_providers(environ))
    for name, table in reader.table("providers", closed=False).items_tables():
        providers[name] = _provider(name, table)
    models = {}
    for name, table in reader.table("models", closed=False).items_tables():
        models[name] = _route(name, table, providers)
    for alias, route in SIM_MODELS.items():  # after the file's own aliases, in listings too
        models.setdefault(alias, route)
    timeouts = reader.table("timeouts")
    deadlines = Deadlines(
        **{
            field.name: timeouts.positive(field.name, getattr(Deadlines(), field.name))
            for field in attrs.fields(Deadlines)
        }
    )
    sim = reader.table("sim")
    responses = reader.table("responses")
    routing = _routing(reader.table("routing"))
    accounts = _accounts(reader.table("accounts"), environ)
    database_url = reader.table("store").opt_str("url") or environ.get("AROUTER_DATABASE_URL")
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store.url: expected a postgresql:// URL")
    data_dir = server.opt_str("data_dir")
    kwargs: dict[str, Any] = {"data_dir": Path(data_dir) if data_dir else default_data_dir(environ)}
    config = Config(
        host=server.opt_str("host") or "127.0.0.1",
        port=server.integer("port", 8080, high=65535),
        database=server.opt_str("database"),
        database_url=database_url or None,
        accounts=accounts,
        routing=routing,
        max_body_bytes=server.integer("max_body_bytes", 16 * 1024 * 1024),
        max_answer_bytes=max(1024, server.integer("max_answer_bytes", 4 * 1024 * 1024)),
        workers=_workers(server),
        keep_alive_timeout=server.positive("keep_alive_timeout", 75.0),
        graceful_timeout=_graceful(server, deadlines),
        deadlines=deadlines,
        sim=SimConfig(
            tokens=sim.integer("tokens", SimConfig().tokens),
            tokens_per_second=sim.positive("tokens_per_second", SimConfig().tokens_per_second),
        ),
        responses_retention=responses.integer("retention_days", 30) * 86400.0,
        providers=providers,
        models=models,
        **kwargs,
    )
    reader.check_unknown()
    return config


def _provider(name: str, table: _Reader) -> ProviderConfig:
    dialect = table.string("dialect", "openai")
    if dialect not in DIALECTS:
        raise ConfigError(f"providers.{name}.dialect: expected one of {DIALECTS}")
    base_url = table.string("base_url", "")
    if dialect != "sim" and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"providers.{name}.base_url: an http(s) URL is required")
    price_table = table.opt_str("price_table")
    if price_table is None:
        price_table = name if name in PRICE_TABLES else "none"
    if price_table not in (*PRICE_TABLES, "none"):
        raise ConfigError(f"providers.{name}.price_table: expected one of {PRICE_TABLES} or "
                          "'none'")
    return ProviderConfig(
        name=name,
        dialect=dialect,
        base_url=base_url.rstrip("/"),
        api_key_env=table.opt_str("api_key_env"),
        models=tuple(table.str_list("models")),
        forward_headers=tuple(name.lower() for name in table.str_list("forward_headers")),
        prices=_prices(table.table("prices", closed=False)),
        price_table=None if price_table == "none" else price_table,
        free=table.boolean("free", default=False),
        max_output_tokens=table.opt_int("max_output_tokens"),
        context_length=table.opt_int("context_length"),
        drop_unsupported=table.bool_or_names("drop_unsupported") or False,
        allow_surcharges=table.bool_or_names("allow_surcharges") or False,
        accepts=_accepts(name, dialect, table.str_list("accepts")),
        responses=_responses_mode(name, dialect, table.string("responses", "translated")),
    )


# Parameters an OpenAI-compatible server may take beyond OpenAI's own (vLLM, SGLang, ...).
ACCEPTABLE = ("top_k", "min_p", "repetition_penalty")


def _responses_mode(name: str, dialect: str, mode: str) -> str:
    if mode not in ("translated", "native") or (mode == "native" and dialect != "openai"):
        raise ConfigError(f"providers.{name}.responses: \"translated\", or \"native\" for an "
                          "OpenAI-dialect provider that serves /responses itself")
    return mode


def _accepts(name: str, dialect: str, names: list[str]) -> tuple[str, ...]:
    for feature in names:
        if dialect != "openai" or feature not in ACCEPTABLE:
            raise ConfigError(f"providers.{name}.accepts: an OpenAI-dialect provider may "
                              f"accept {list(ACCEPTABLE)}; {feature!r} is not one of them")
    return tuple(names)


def _workers(server: _Reader) -> int:
    """``workers = 4``, or ``workers_per_core = 1.5`` of the CPUs this process may use."""
    per_core = server.raw.get("workers_per_core")
    if per_core is not None:
        if "workers" in server.raw:
            raise ConfigError("server: give workers or workers_per_core, not both")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return max(1, math.ceil(server.positive("workers_per_core", 1.0) * cores))
    return max(1, server.integer("workers", 1, high=256))


def _graceful(server: _Reader, deadlines: Deadlines) -> float | None:
    value = server.raw.get("graceful_timeout")
    if value is None:
        return None
    graceful = server.positive("graceful_timeout", 1.0)
    if graceful < deadlines.drain + deadlines.settle:
        raise ConfigError("server.graceful_timeout: must be at least timeouts.drain + "
                          "timeouts.settle, or hypercorn would cut streams before the drain")
    return graceful


def _route(name: str, table: _Reader, providers: Mapping[str, ProviderConfig]) -> ModelRoute:
    deployments = []
    for n, entry in enumerate(table.table_list("deployments")):
        deployments.append(Deployment(
            provider=entry.string("provider"),
            model=entry.string("model"),
            weight=entry.positive("weight", 1.0),
            priority=entry.integer("priority", 0, high=999),
        ))
        if deployments[-1].provider not in providers:
            raise ConfigError(f"models.{name}.deployments[{n}].provider: unknown provider "
                              f"{deployments[-1].provider!r}")
    if deployments and ("provider" in table.raw or "model" in table.raw):
        raise ConfigError(f"models.{name}: give either provider and model, or deployments")
    first = deployments[0] if deployments else None
    route = ModelRoute(
        name=name,
        provider=first.provider if first else table.string("provider"),
        model=first.model if first else table.string("model"),
        price=_route_price(name, table),
        max_output_tokens=table.opt_int("max_output_tokens"),
        context_length=table.opt_int("context_length"),
        deployments=tuple(deployments),
        hedge_after=table.positive("hedge_after", 0.0) or None,
        drop_unsupported=table.bool_or_names("drop_unsupported"),
    )
    if route.provider not in providers:
        raise ConfigError(f"models.{name}.provider: unknown provider {route.provider!r}")
    return route


def _route_price(name: str, table: _Reader) -> Price | None:
    free = table.boolean("free", default=False)
    if free and "price" in table.raw:
        raise ConfigError(f"models.{name}: give price or free = true, not both")
    if free:
        return FREE
    return _price(table, "price") if "price" in table.raw else None


def _routing(table: _Reader) -> Routing:
    default = Routing()
    strategy = table.string("strategy", default.strategy)
    if strategy not in STRATEGIES:
        raise ConfigError(f"routing.strategy: expected one of {STRATEGIES}")
    return Routing(
        max_attempts=max(1, table.integer("max_attempts", default.max_attempts)),
        backoff=table.positive("backoff", default.backoff),
        strategy=strategy,
        failure_threshold=max(1, table.integer("failure_threshold", default.failure_threshold)),
        cooldown=table.positive("cooldown", default.cooldown),
        hedge_after=table.positive("hedge_after", 0.0) or None,
    )


def _prices(table: _Reader) -> dict[str, Price]:
    return {model: _price(table, model) for model in list(table.raw)}


def _price(parent: _Reader, key: str) -> Price:
    """``{prompt = 0.15, completion = 0.6}`` (dollars per million tokens, read exactly), or
    ``{free = true}``."""
    table = parent.table(key, closed=False)  # parse_price names any unknown key itself
    try:
        return parse_price(table.raw)
    except MoneyError as exc:
        raise ConfigError(f"{table.where}{exc}") from None


def _accounts(table: _Reader, environ: Mapping[str, str]) -> AccountsConfig:
    default = AccountsConfig()
    redis_url = table.opt_str("redis_url") or environ.get("AROUTER_REDIS_URL") or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("accounts.redis_url: expected a redis://, rediss:// or unix:// URL")
    accounts = AccountsConfig(
        max_output_tokens=table.integer("max_output_tokens", default.max_output_tokens) or 1,
        heartbeat=table.positive("heartbeat", default.heartbeat),
        checkpoint=table.positive("checkpoint", default.checkpoint),
        stale_after=table.positive("stale_after", default.stale_after),
        lease_requests=table.integer("lease_requests", default.lease_requests) or 1,
        lease_idle=table.positive("lease_idle", default.lease_idle),
        key_refresh=table.positive("key_refresh", default.key_refresh),
        redis_url=redis_url,
        admin_token_env=table.string("admin_token_env", default.admin_token_env),
    )
    accounts.check_admin_token(environ)
    return accounts


class _Reader:
    """Typed access to one TOML table that remembers which keys were used."""

    def __init__(self, raw: Mapping[str, Any], where: str, *, closed: bool = True) -> None:
        self.raw = raw
        self.where = where
        self.closed = closed  # a closed table rejects keys nobody read
        self.used: set[str] = set()
        self.children: list[_Reader] = []

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.raw.get(key)

    def _name(self, key: str) -> str:
        return f"{self.where}{key}"

    def table(self, key: str, *, closed: bool = True) -> _Reader:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self._name(key)}: expected a table")
        child = _Reader(value, f"{self._name(key)}.", closed=closed)
        self.children.append(child)
        return child

    def items_tables(self) -> list[tuple[str, _Reader]]:
        return [(key, self.table(key)) for key in list(self.raw)]

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._name(key)}: expected a non-empty string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self._name(key)}: expected a string")
        return value

    def str_list(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._name(key)}: expected a list of strings")
        return value

    def integer(self, key: str, default: int, high: int | None = None) -> int:
        value = self._get(key)
        if value is None:
            return default
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < 0
            or (high is not None and value > high)
        ):
            limit = f" up to {high}" if high is not None else ""
            raise ConfigError(f"{self._name(key)}: expected a non-negative integer{limit}")
        return value

    def table_list(self, key: str) -> list[_Reader]:
        """An array of tables (``[[models.x.deployments]]`` or an inline list)."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{self._name(key)}: expected a list of tables")
        children = [_Reader(v, f"{self._name(key)}[{n}].") for n, v in enumerate(value)]
        self.children.extend(children)
        return children

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self._name(key)}: expected true or false")
        return value

    def bool_or_names(self, key: str) -> bool | tuple[str, ...] | None:
        """``true``/``false``, or a list of names; None when absent."""
        value = self._get(key)
        if value is None or isinstance(value, bool):
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self._name(key)}: expected true, false or a list of names")
        return tuple(value)

    def opt_int(self, key: str) -> int | None:
        return None if self.raw.get(key) is None else self.integer(key, 0)

    def positive(self, key: str, default: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{self._name(key)}: expected a positive number")
        return float(value)

    def check_unknown(self) -> None:
        if self.closed:
            unknown = set(self.raw) - self.used
            if unknown:
                raise ConfigError(f"unknown config key {self.where}{sorted(unknown)[0]}")
        for child in self.children:
            child.check_unknown()
