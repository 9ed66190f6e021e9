"""The configuration reference, ``docs/configuration.md``: every key of the TOML file and every
environment variable, in one place (``arouter config reference`` prints it).

It cannot drift from the loader (``config.from_dict``), because:

1. Defaults are never written here. Each is read from the ``Config`` that the loader builds
   from a file holding only the required keys, so the page says what the code does.
2. The keys documented here are exactly the keys the loader looks up. ``loader_keys`` hands
   the loader a config whose tables record every key looked up in them (``_Recorded``) and
   an environment that records every variable read; a test compares both with this page
   and checks that the committed file equals a fresh ``render()``. A key added to the loader
   without a line here fails the suite; so does a line for a key the loader no longer reads.

Placeholders in paths: ``<provider>``, ``<alias>`` and ``<model>`` stand for names chosen in
the file; ``<price>`` is a price, whether ``[providers.P.prices."M"]`` or ``price = {...}``;
``deployments[]`` is any element of that array of tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from gateway import config as config_mod
from gateway.accounts.price_table import TABLES as PRICE_TABLES
from gateway.config import ENV_PROVIDERS, Config

Default = Callable[[Config], Any] | str


@attrs.frozen
class Key:
    name: str
    type: str
    default: Default  # a reading of the loader's default config, or words (never a value)
    text: str


@attrs.frozen
class Section:
    path: str  # "server", "providers.<provider>", "<price>"
    title: str  # Markdown: the table's header as a file writes it
    intro: str
    keys: tuple[Key, ...]


def _deadline(name: str) -> Callable[[Config], Any]:
    return lambda c: getattr(c.deadlines, name)


SECONDS = "number > 0 (seconds)"

SECTIONS: tuple[Section, ...] = (
    Section("server", "`[server]`", "Where and how the gateway listens. `arouter serve --host, "
            "--port, --data-dir, --workers` override the file.", (
        Key("host", "string", lambda c: c.host,
            "Address to listen on. `0.0.0.0` listens on every interface: put nginx in front "
            "(`deploy/nginx`)."),
        Key("port", "integer, 0 to 65535", lambda c: c.port, "Port to listen on; 0 picks a "
            "free one (the banner says which)."),
        Key("data_dir", "string (a path)",
            "`$AROUTER_DATA_DIR`, else `$XDG_DATA_HOME/arouter`, else `~/.local/share/arouter`",
            "The SQLite store (`arouter.db`) and the outbox of ledger rows not yet written."),
        Key("database", "string (a path)", "`<data_dir>/arouter.db`",
            "The SQLite file, when it should not live in `data_dir`. Unused when a PostgreSQL "
            "URL is set (`[store] url`)."),
        Key("max_body_bytes", "integer", lambda c: c.max_body_bytes,
            "Largest request body; larger ones get 413 and the connection is closed. Keep "
            "nginx's `client_max_body_size` the same."),
        Key("max_answer_bytes", "integer (at least 1024)", lambda c: c.max_answer_bytes,
            "The most of one upstream answer held in memory (a whole non-streamed answer, or "
            "one streamed event); past it the request ends with an `output_limit` error."),
        Key("workers", "integer, 1 to 256", lambda c: c.workers,
            "Processes serving one socket (`arouter serve --workers N` overrides)."),
        Key("workers_per_core", "number > 0", "none",
            "Instead of `workers`: this many processes per CPU the gateway may use, rounded "
            "up. Give one or the other."),
        Key("keep_alive_timeout", SECONDS, lambda c: c.keep_alive_timeout,
            "Idle client keep-alive connections are closed after this. Keep nginx's upstream "
            "`keepalive_timeout` below it."),
        Key("graceful_timeout", SECONDS, "`timeouts.drain` + `timeouts.settle` + 2",
            "The server's own wait at shutdown, behind the gateway's drain; at least "
            "`timeouts.drain` + `timeouts.settle`."),
    )),
    Section("store", "`[store]`", "The shared store of a fleet.", (
        Key("url", "string (`postgresql://` URL)",
            "`$AROUTER_DATABASE_URL`, else the SQLite file of `[server]`",
            "PostgreSQL for keys, balances, reservations and the ledger, shared by every "
            "gateway process. It holds a password: prefer the environment variable."),
    )),
    Section("timeouts", "`[timeouts]`", "Every deadline has a name; each ends a request with a "
            "typed error and, once streaming, a terminal event.", (
        Key("connect", SECONDS, _deadline("connect"), "TCP and TLS to the upstream."),
        Key("first_token", SECONDS, _deadline("first_token"),
            "Request sent to the first upstream event (504 before the commit point)."),
        Key("idle", SECONDS, _deadline("idle"), "Between upstream events. Keep it below "
            "nginx's `proxy_read_timeout`."),
        Key("total", SECONDS, _deadline("total"), "The whole request, however lively."),
        Key("commit_grace", SECONDS, _deadline("commit_grace"),
            "How long the status line is held waiting for a first event: until then a "
            "failure is still an HTTP error and fallbacks are invisible."),
        Key("keepalive", SECONDS, _deadline("keepalive"),
            "An SSE comment after this much silence towards the client."),
        Key("settle", SECONDS, _deadline("settle"),
            "Shielded bookkeeping (the ledger row) after a request ends."),
        Key("admission", SECONDS, _deadline("admission"),
            "Key lookup, rate limits and the credit reservation; past it, 503 with "
            "Retry-After."),
        Key("body", SECONDS, _deadline("body"),
            "A request body not whole this long after its headers: 408, connection closed."),
        Key("store", SECONDS, _deadline("store"),
            "Any other read of the store (`GET /v1/key`, `/v1/generation`, the admin API)."),
        Key("drain", SECONDS, _deadline("drain"),
            "On SIGTERM or Ctrl-C, open requests may run this long; a second signal ends "
            "them at once. Raise systemd's `TimeoutStopSec` with it."),
        Key("client_stall", SECONDS, _deadline("client_stall"),
            "A client that accepts no bytes for this long is dropped (`TCP_USER_TIMEOUT`)."),
    )),
    Section("routing", "`[routing]`", "Retries, fallbacks, hedging and circuit breaking.", (
        Key("max_attempts", "integer (at least 1)", lambda c: c.routing.max_attempts,
            "Upstream calls per request, across deployments and retries."),
        Key("backoff", SECONDS, lambda c: c.routing.backoff,
            "Wait before retrying a deployment already tried; doubles each time."),
        Key("strategy", '`"weighted"` or `"least_busy"`', lambda c: c.routing.strategy,
            "How a deployment is chosen among the healthy ones of one priority."),
        Key("failure_threshold", "integer (at least 1)",
            lambda c: c.routing.failure_threshold,
            "Consecutive failures that open a deployment's circuit."),
        Key("cooldown", SECONDS, lambda c: c.routing.cooldown,
            "How long an open circuit waits before a half-open probe."),
        Key("hedge_after", SECONDS, "none",
            "Default for models that set none: no first token after this long starts the "
            "next deployment too."),
    )),
    Section("responses", "`[responses]`", "Stored Responses API answers.", (
        Key("retention_days", "integer", lambda c: int(c.responses_retention // 86400),
            "Days a `/v1/responses` answer made with `store` (the default) is kept for "
            "`previous_response_id` and `GET /v1/responses/{id}`, readable only with the key "
            "that made it; `0` stores none."),
    )),
    Section("accounts", "`[accounts]`", "Credits, limits and crash reconciliation.", (
        Key("max_output_tokens", "integer", lambda c: c.accounts.max_output_tokens,
            "Output reserved when neither the request (`max_tokens`) nor the model caps it."),
        Key("heartbeat", SECONDS, lambda c: c.accounts.heartbeat,
            "Between renewals of this process's liveness row and claim."),
        Key("checkpoint", SECONDS, lambda c: c.accounts.checkpoint,
            "Between checkpoints of a stream's output into its reservation: what a crash "
            "charges."),
        Key("stale_after", SECONDS, lambda c: c.accounts.stale_after,
            "Where the store cannot tell, a process silent this long is dead and its "
            "reservations are settled."),
        Key("lease_requests", "integer", lambda c: c.accounts.lease_requests,
            "A process leases a metered key's credit this many requests' worth at a time, "
            "and admits that key's requests against it with no store call; less as the "
            "balance runs low, down to exactly what each request needs."),
        Key("lease_idle", SECONDS, lambda c: c.accounts.lease_idle,
            "A lease no request has used for this long goes back to its key's balance."),
        Key("key_refresh", SECONDS, lambda c: c.accounts.key_refresh,
            "Between re-reads of the key rows a process has cached: a revocation, a new "
            "balance or policy made elsewhere takes effect on every process within this."),
        Key("redis_url", "string (`redis://`, `rediss://` or `unix://` URL)",
            "`$AROUTER_REDIS_URL`, else none (limits counted per process)",
            "Redis for rate limits shared by a fleet. It may hold a password: prefer the "
            "environment variable."),
        Key("admin_token_env", "string (a variable name)",
            lambda c: c.accounts.admin_token_env,
            "The environment variable holding the admin API's token; the admin API is off "
            "unless it is set."),
    )),
    Section("sim", "`[sim]`", "The built-in simulator provider (`sim/echo`, `sim/lorem`, and "
            "their aliases `sim-echo`, `sim-lorem`; no network).", (
        Key("tokens", "integer", lambda c: c.sim.tokens,
            "Tokens per answer when `max_tokens` does not say otherwise."),
        Key("tokens_per_second", "number > 0", lambda c: c.sim.tokens_per_second,
            "How fast the simulator streams."),
    )),
    Section("providers.<provider>", "`[providers.NAME]`",
            "An upstream. Its models are named `NAME/model`. A table named like a provider "
            "switched on by the environment (`openai`, ...) replaces it.", (
        Key("dialect", '`"openai"`, `"anthropic"`, `"gemini"` or `"sim"`',
            lambda c: c.providers["<provider>"].dialect, "The upstream's wire format."),
        Key("base_url", "string (`http(s)://` URL)", "required (except for `sim`)",
            "Where the upstream's API lives, e.g. `http://127.0.0.1:8000/v1`."),
        Key("api_key_env", "string (a variable name)", "none",
            "The environment variable holding the upstream's key: never the key itself."),
        Key("models", "list of strings", lambda c: c.providers["<provider>"].models,
            "The upstream models clients may name; empty: any."),
        Key("forward_headers", "list of strings",
            lambda c: c.providers["<provider>"].forward_headers,
            "Client request headers passed to this upstream (an allowlist)."),
        Key("prices", "table of prices by upstream model", "none",
            'Each `[providers.NAME.prices."MODEL"]` is a price (below); wins over the '
            "built-in table."),
        Key("price_table", " or ".join(f'`"{t}"`' for t in (*PRICE_TABLES, "none")),
            "the provider's name, if a table has that name; else `\"none\"`",
            "The dated built-in price table (`gateway/prices.toml`) for this provider's "
            "models."),
        Key("free", "true or false", lambda c: c.providers["<provider>"].free,
            "Every model of this provider costs nothing (your own hardware)."),
        Key("max_output_tokens", "integer", "none",
            "The provider's output cap, used to size credit reservations."),
        Key("context_length", "integer", "none",
            "Its models' context window in tokens, as `GET /v1/models` reports it."),
        Key("drop_unsupported", "true, false or list of strings", "`false`",
            "What a request from another dialect may lose here instead of a 400: `true` "
            "(anything this upstream cannot honour) or parameter names, e.g. "
            '`["logit_bias", "safetySettings"]`. The ledger row names what was dropped '
            "([compatibility](compatibility.md))."),
        Key("allow_surcharges", "true, false or list of strings", "`false`",
            "What a request may ask of this provider that it charges for beyond the tokens "
            "(which is all the gateway bills): `true`, or any of `\"service_tier\"` (a "
            "non-default tier), `\"web_search\"` (OpenAI `web_search_options`), "
            "`\"server_tools\"` (Anthropic web search, code execution), `\"grounding\"` "
            "(Gemini Google Search / Maps), `\"long_context\"` (Anthropic's context-1m beta). "
            "Refused by name otherwise, never dropped ([compatibility](compatibility.md))."),
        Key("responses", '`"translated"` or `"native"`', '`"translated"`',
            "`native`: this OpenAI-dialect provider serves the Responses API itself: a "
            "`/v1/responses` request goes to its `/responses` as sent (built-in tools "
            "included), every event relayed as it answers. Otherwise Responses requests "
            "are translated to Chat Completions."),
        Key("accepts", 'list of `"top_k"`, `"min_p"`, `"repetition_penalty"`', "none",
            "Sampling parameters this OpenAI-compatible server takes beyond OpenAI's "
            "(vLLM, SGLang): forwarded instead of refused."),
    )),
    Section("models.<alias>", "`[models.\"NAME\"]`",
            "A catalog alias: a public model name served by one upstream model "
            "(`provider` and `model`) or by several (`deployments`). Gemini SDKs want names "
            "without a `/`.", (
        Key("provider", "string (a provider's name)", "required, unless `deployments`",
            "The provider serving this alias."),
        Key("model", "string", "required, unless `deployments`",
            "The upstream model's name at that provider."),
        Key("price", "a price (below)", "the provider's price for `model`",
            "This alias's own price, e.g. `{ prompt = 0.05, completion = 0.08 }`."),
        Key("free", "true or false", "`false`",
            "This alias costs nothing (instead of `price`)."),
        Key("max_output_tokens", "integer", "none", "This alias's output cap."),
        Key("context_length", "integer", "the provider's `context_length`",
            "This alias's context window in tokens, as `GET /v1/models` reports it."),
        Key("deployments", "array of tables (below)", "none",
            "Several upstream models for one name: weighted, with fallbacks by priority."),
        Key("hedge_after", SECONDS, "`[routing] hedge_after`",
            "No first token after this long: start the next deployment too."),
        Key("drop_unsupported", "true, false or list of strings",
            "each provider's `drop_unsupported`",
            "Like the provider's, for this alias's deployments."),
    )),
    Section("models.<alias>.deployments[]", "`[[models.\"NAME\".deployments]]`",
            "One way to serve an alias.", (
        Key("provider", "string (a provider's name)", "required", "The provider."),
        Key("model", "string", "required", "The upstream model's name at that provider."),
        Key("weight", "number > 0", lambda c: c.models["<alias>#2"].deployments[0].weight,
            "Share of requests among deployments of the same priority."),
        Key("priority", "integer, 0 to 999",
            lambda c: c.models["<alias>#2"].deployments[0].priority,
            "Lower priorities are tried first; higher ones are fallbacks."),
    )),
    Section("<price>", "Prices",
            "A price is a table: `[providers.NAME.prices.\"MODEL\"]`, or `price = { ... }` "
            "on an alias. Dollars per million tokens, read exactly (never as floats). "
            "`free = true` alone "
            "says the model costs nothing; a model with no price at all is refused to keys "
            "with a balance.", (
        Key("prompt", "number ≥ 0", "`0`", "Prompt tokens."),
        Key("completion", "number ≥ 0", "`0`", "Completion tokens."),
        Key("cached_prompt", "number ≥ 0", "the `prompt` rate", "Prompt tokens read from "
            "the provider's cache."),
        Key("reasoning", "number ≥ 0", "the `completion` rate", "Reasoning tokens."),
        Key("cache_write", "number ≥ 0", "none", "Prompt-cache writes; kept, and charged "
            "once usage reports them apart."),
        Key("free", "`true`", "`false`", "This model costs nothing (instead of the rates)."),
    )),
)

# Variables read by the loader (``config.load``/``from_dict``) or the command line.
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("AROUTER_CONFIG", "The TOML file, when `--config` is not given."),
    ("AROUTER_DATA_DIR", "`[server] data_dir`'s default."),
    ("XDG_DATA_HOME", "`$XDG_DATA_HOME/arouter` is the data directory's default after "
                      "`AROUTER_DATA_DIR`."),
    ("AROUTER_DATABASE_URL", "`[store] url` when the file gives none: the PostgreSQL store. "
                             "Its URL holds a password, so it belongs here, not in the file."),
    ("AROUTER_REDIS_URL", "`[accounts] redis_url` when the file gives none."),
    ("AROUTER_ADMIN_TOKEN", "The admin API's token (the variable `[accounts] admin_token_env` "
                            "names); unset or empty: the admin API is off."),
    ("AROUTER_LOG_LEVEL", "`--log-level`'s default: DEBUG, INFO (default), WARNING, ERROR."),
    ("AROUTER_LOG_FORMAT", "`--log-format`'s default: `json` (default) or `text`."),
)

# The smallest file that makes the loader visit every table: each dynamic table once, and
# an alias of each form. Its names are the placeholders the page uses.
EXAMPLE: Mapping[str, Any] = {
    "providers": {"<provider>": {
        "base_url": "http://127.0.0.1:8000/v1",
        "prices": {"<model>": {"prompt": 1, "completion": 2}},
    }},
    "models": {
        "<alias>": {"provider": "<provider>", "model": "m", "price": {"prompt": 1}},
        "<alias>#2": {"deployments": [{"provider": "<provider>", "model": "m"}]},
    },
}


def defaults() -> Config:
    """What the loader makes of ``EXAMPLE`` with an empty environment."""
    return config_mod.from_dict(EXAMPLE, {})


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, tuple | list):
        return f"`[{', '.join(repr(v) for v in value)}]`"
    return f"`{value}`"


def render() -> str:
    """The Markdown page."""
    config = defaults()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `arouter config reference > docs/configuration.md`, from "
        "gateway/config_reference.py and the loader's own defaults; do not edit. -->",
        "",
        "Every key is optional unless it says *required*. No file is needed: the defaults "
        "listen on 127.0.0.1:8080 with a SQLite store and the built-in simulator. A file "
        "(`--config FILE` or `$AROUTER_CONFIG`) overrides the defaults, and the command line "
        "overrides the file (`arouter serve --host, --port, --data-dir, --workers`). Unknown "
        "keys are an error at start, naming the key. Secrets never live in the file: see "
        "[Environment variables](#environment-variables). A commented example: "
        "[`deploy/arouter.example.toml`](../deploy/arouter.example.toml).",
        "",
    ]
    for section in SECTIONS:
        lines += [f"## {section.title}", "", section.intro, "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for key in section.keys:
            default = key.default if isinstance(key.default, str) else _value(
                key.default(config))
            lines.append(f"| `{key.name}` | {key.type} | {default} | {key.text} |")
        lines.append("")
    lines += ["## Environment variables", "",
              "| variable | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in ENVIRONMENT]
    lines += ["", "Each of these switches a provider on, with no entry in the file (its models "
              "are `NAME/model`; the built-in price table is used where one has its name):",
              "", "| variable | provider | dialect | base URL |", "|---|---|---|---|"]
    for name, dialect, key_var, base_url, base_var in ENV_PROVIDERS:
        url = f"`{base_url}`" + (f" (or `${base_var}`)" if base_var else "")
        lines.append(f"| `{key_var}` | `{name}` | {dialect} | {url} |")
    lines.append("")
    return "\n".join(lines)


# -- what the loader reads (for the test that keeps this page complete) ----------------------


def documented_keys() -> set[str]:
    """Every path on this page, with the tables that hold them."""
    return _with_parents(f"{s.path}.{k.name}" for s in SECTIONS for k in s.keys)


def documented_variables() -> set[str]:
    found = {name for name, _ in ENVIRONMENT}
    for _, _, key_var, _, base_var in ENV_PROVIDERS:
        found.add(key_var)
        if base_var:
            found.add(base_var)
    return found


def loader_keys() -> tuple[set[str], set[str]]:
    """(every key path, every environment variable) the loader looks up while reading
    ``EXAMPLE``, in placeholder form. An environment holding every documented variable
    makes the loader take the branches that read further."""
    seen: set[str] = set()
    values = {name: "x" for name in documented_variables() - {"AROUTER_CONFIG"}}
    values.update({name: "http://127.0.0.1:1" for name in values if name.endswith("_BASE_URL")})
    values.update(AROUTER_DATABASE_URL="postgresql://u@127.0.0.1/db",
                  AROUTER_REDIS_URL="redis://127.0.0.1:6379/0")
    environ = _RecordedEnviron(values)
    config_mod.from_dict(_Recorded(EXAMPLE, "", seen), environ)
    # The loader reads a table's keys only if the table is there: a second pass with every
    # top-level table it looked for (all of them are tables) present, if empty.
    tables: dict[str, Any] = {path: {} for path in seen if "." not in path and path not in EXAMPLE}
    config_mod.from_dict(_Recorded({**EXAMPLE, **tables}, "", seen), environ)
    config_mod.load(None, environ)  # and what ``load`` reads itself
    return _with_parents(_placeholder(path) for path in seen), environ.seen


def _placeholder(path: str) -> str:
    path = path.replace("<alias>#2", "<alias>")
    path = re.sub(r"^providers\.<provider>\.prices\.<model>", "<price>", path)
    return re.sub(r"^models\.<alias>\.price\.", "<price>.", path)


def _with_parents(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        parts = path.split(".")
        found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return found


class _Recorded(dict[str, Any]):
    """A TOML table that records, by path, every key looked up in it (``get``, ``[]``,
    ``in``), present or not."""

    def __init__(self, raw: Mapping[str, Any], path: str, seen: set[str]) -> None:
        super().__init__({key: _recorded(value, f"{path}{key}", seen)
                          for key, value in raw.items()})
        self._path = path
        self._seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(f"{self._path}{key}")
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._seen.add(f"{self._path}{key}")
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._seen.add(f"{self._path}{key}")
        return super().__contains__(key)


def _recorded(value: Any, path: str, seen: set[str]) -> Any:
    if isinstance(value, Mapping):
        return _Recorded(value, f"{path}.", seen)
    if isinstance(value, list):
        return [_recorded(v, f"{path}[]", seen) for v in value]
    return value


class _RecordedEnviron(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.seen: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.seen.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
