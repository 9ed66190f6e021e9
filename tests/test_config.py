"""Configuration: offline defaults, providers from the environment, the TOML file, and every
ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import (
    SIM_MODELS,
    SIM_PROVIDER,
    Config,
    ConfigError,
    Deadlines,
    ModelRoute,
    ProviderConfig,
    SimConfig,
    load,
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the real process environment out of what ``load`` reads."""
    for name in ("AROUTER_CONFIG", "AROUTER_DATA_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "arouter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load(toml(tmp_path, text), environ or {})


# ---------------------------------------------------------------------------------------
# Defaults and the environment


def test_empty_environment_gives_offline_defaults(tmp_path: Path) -> None:
    config = load(None, {"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.providers == {"sim": SIM_PROVIDER}
    assert config.providers["sim"].models == ("echo", "lorem", "embed")
    assert config.models == SIM_MODELS  # sim-echo, sim-lorem: slash-free for Gemini SDKs
    assert config.deadlines == Deadlines()
    assert config.sim == SimConfig()
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.data_dir == tmp_path / "xdg" / "arouter"
    assert config.database_path == tmp_path / "xdg" / "arouter" / "arouter.db"


def test_process_environment_does_not_leak_into_an_injected_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-process-key")
    assert list(load(None, {}).providers) == ["sim"]


def test_openai_api_key_turns_on_openai() -> None:
    config = load(None, {"OPENAI_API_KEY": "sk-test"})
    assert config.providers["openai"] == ProviderConfig(
        name="openai", dialect="openai", base_url="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY", price_table="openai",
    )
    assert set(config.providers) == {"sim", "openai"}


def test_openai_base_url_overrides_its_url() -> None:
    config = load(None, {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert config.providers["openai"].base_url == "http://127.0.0.1:9/v1"


def test_openai_base_url_alone_turns_nothing_on() -> None:
    assert "openai" not in load(None, {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}).providers


def test_empty_api_key_turns_nothing_on() -> None:
    assert "openai" not in load(None, {"OPENAI_API_KEY": ""}).providers


def test_every_known_key_variable_turns_on_its_provider() -> None:
    config = load(None, {"GROQ_API_KEY": "g", "MISTRAL_API_KEY": "m"})
    assert set(config.providers) == {"sim", "groq", "mistral"}
    assert config.providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert config.providers["mistral"].api_key_env == "MISTRAL_API_KEY"


def test_the_key_itself_is_not_copied_into_the_config() -> None:
    config = load(None, {"OPENAI_API_KEY": "sk-CANARY-123"})
    assert "sk-CANARY-123" not in repr(config)


def test_api_key_is_read_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = ProviderConfig(name="p", dialect="openai", api_key_env="AROUTER_TEST_CFG_KEY")
    monkeypatch.setenv("AROUTER_TEST_CFG_KEY", "sk-from-env")
    assert provider.api_key == "sk-from-env"
    assert ProviderConfig(name="p", dialect="openai").api_key is None


def test_arouter_config_variable_names_the_file(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server]\nport = 9999\n")
    assert load(None, {"AROUTER_CONFIG": str(path)}).port == 9999


def test_explicit_path_wins_over_arouter_config(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server]\nport = 9999\n")
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 1\n", encoding="utf-8")
    assert load(path, {"AROUTER_CONFIG": str(other)}).port == 9999


def test_data_dir_comes_from_the_given_environment(tmp_path: Path) -> None:
    config = load(None, {"AROUTER_DATA_DIR": str(tmp_path / "injected")})
    assert config.data_dir == tmp_path / "injected"


def test_env_base_url_loses_its_trailing_slash() -> None:
    config = load(None, {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "https://proxy.test/v1/"})
    assert config.providers["openai"].base_url == "https://proxy.test/v1"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "api.openai.com/v1", "ftp://x.test"])
def test_env_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        load(None, {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": url})


# ---------------------------------------------------------------------------------------
# A full file

FULL = """
[server]
host = "0.0.0.0"
port = 9000
data_dir = "/srv/arouter"
database = "/srv/arouter/db/gateway.sqlite"
max_body_bytes = 1048576

[timeouts]
connect = 5
first_token = 60.5
idle = 30
total = 600
commit_grace = 0.25
keepalive = 10
settle = 3

[sim]
tokens = 12
tokens_per_second = 200

[providers.local]
dialect = "openai"
base_url = "http://127.0.0.1:8000/v1/"
api_key_env = "LOCAL_KEY"
models = ["llama-3.1-8b", "qwen/qwen3-32b"]
forward_headers = ["OpenAI-Beta", "X-Trace-Id"]

[providers.openai]
base_url = "https://gateway.internal/openai/v1"
api_key_env = "CORP_OPENAI_KEY"

[providers.offline]
dialect = "sim"

[models.fast]
provider = "local"
model = "llama-3.1-8b"

[models."openai/gpt-4.1"]
provider = "local"
model = "qwen/qwen3-32b"

[models."team.v2/fast-1.5"]
provider = "offline"
model = "echo"
"""


def test_full_file(tmp_path: Path) -> None:
    config = load_text(tmp_path, FULL, {"OPENAI_API_KEY": "sk-env"})
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.data_dir == Path("/srv/arouter")
    assert config.database_path == Path("/srv/arouter/db/gateway.sqlite")
    assert config.max_body_bytes == 1048576
    assert config.deadlines == Deadlines(
        connect=5.0, first_token=60.5, idle=30.0, total=600.0, commit_grace=0.25,
        keepalive=10.0, settle=3.0,
    )
    assert all(isinstance(getattr(config.deadlines, f), float) for f in ("connect", "idle"))
    assert config.sim == SimConfig(tokens=12, tokens_per_second=200.0)
    assert config.providers["local"] == ProviderConfig(
        name="local",
        dialect="openai",
        base_url="http://127.0.0.1:8000/v1",
        api_key_env="LOCAL_KEY",
        models=("llama-3.1-8b", "qwen/qwen3-32b"),
        forward_headers=("openai-beta", "x-trace-id"),
    )
    # The file's table replaces the provider the environment switched on.
    # A provider named openai, anthropic or gemini takes that built-in price table.
    assert config.providers["openai"] == ProviderConfig(
        name="openai", dialect="openai", base_url="https://gateway.internal/openai/v1",
        api_key_env="CORP_OPENAI_KEY", price_table="openai",
    )
    assert config.providers["offline"] == ProviderConfig(name="offline", dialect="sim")
    assert config.providers["sim"] == SIM_PROVIDER
    assert config.models == {
        **SIM_MODELS,
        "fast": ModelRoute("fast", "local", "llama-3.1-8b"),
        "openai/gpt-4.1": ModelRoute("openai/gpt-4.1", "local", "qwen/qwen3-32b"),
        "team.v2/fast-1.5": ModelRoute("team.v2/fast-1.5", "offline", "echo"),
    }


def test_alias_may_point_at_the_builtin_sim(tmp_path: Path) -> None:
    config = load_text(tmp_path, '[models."a.b/c"]\nprovider = "sim"\nmodel = "lorem"\n')
    assert config.models["a.b/c"] == ModelRoute("a.b/c", "sim", "lorem")


def test_alias_may_point_at_an_environment_provider(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, '[models.smart]\nprovider = "openai"\nmodel = "gpt-4.1"\n',
        {"OPENAI_API_KEY": "k"},
    )
    assert config.models["smart"].provider == "openai"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == load(None, {})


def test_empty_host_falls_back_to_loopback(tmp_path: Path) -> None:
    assert load_text(tmp_path, '[server]\nhost = ""\n').host == "127.0.0.1"


# ---------------------------------------------------------------------------------------
# Every ConfigError names the offending key

PROVIDER = '[providers.p]\nbase_url = "https://p.test/v1"\n'

ERRORS: list[tuple[str, str, str]] = [
    ("unknown section", '[logging]\nlevel = "debug"\n', "unknown config key logging"),
    ("unknown top-level key", "debug = true\n", "unknown config key debug"),
    ("unknown server key", '[server]\nhots = "0.0.0.0"\n', "unknown config key server.hots"),
    ("unknown timeouts key", "[timeouts]\nconect = 1\n", "unknown config key timeouts.conect"),
    ("unknown sim key", "[sim]\ntoken = 1\n", "unknown config key sim.token"),
    ("unknown provider key", PROVIDER + "timeout = 5\n",
     "unknown config key providers.p.timeout"),
    ("unknown model key", '[models.m]\nprovider = "sim"\nmodel = "echo"\nweight = 2\n',
     "unknown config key models.m.weight"),
    ("server not a table", 'server = "x"\n', "server: expected a table"),
    ("timeouts not a table", "timeouts = 5\n", "timeouts: expected a table"),
    ("provider not a table", 'providers = {p = "x"}\n', "providers.p: expected a table"),
    ("model not a table", 'models = {m = "sim/echo"}\n', "models.m: expected a table"),
    ("port string", '[server]\nport = "8080"\n', "server.port"),
    ("port bool", "[server]\nport = true\n", "server.port"),
    ("port float", "[server]\nport = 80.5\n", "server.port"),
    ("port negative", "[server]\nport = -1\n", "server.port"),
    ("host number", "[server]\nhost = 1\n", "server.host"),
    ("database list", '[server]\ndatabase = ["a"]\n', "server.database"),
    ("max_body_bytes negative", "[server]\nmax_body_bytes = -1\n", "server.max_body_bytes"),
    ("timeout string", '[timeouts]\nidle = "90"\n', "timeouts.idle"),
    ("timeout bool", "[timeouts]\ntotal = true\n", "timeouts.total"),
    ("timeout negative", "[timeouts]\nconnect = -1\n", "timeouts.connect"),
    ("timeout negative float", "[timeouts]\nsettle = -0.5\n", "timeouts.settle"),
    ("timeout zero", "[timeouts]\nfirst_token = 0\n", "timeouts.first_token"),
    ("sim rate zero", "[sim]\ntokens_per_second = 0\n", "sim.tokens_per_second"),
    ("sim tokens negative", "[sim]\ntokens = -3\n", "sim.tokens"),
    ("bad dialect", PROVIDER + 'dialect = "cohere"\n', "providers.p.dialect"),
    ("dialect number", PROVIDER + "dialect = 1\n", "providers.p.dialect"),
    ("missing base_url", "[providers.p]\napi_key_env = \"K\"\n", "providers.p.base_url"),
    ("ftp base_url", '[providers.p]\nbase_url = "ftp://p.test"\n', "providers.p.base_url"),
    ("schemeless base_url", '[providers.p]\nbase_url = "p.test/v1"\n', "providers.p.base_url"),
    ("base_url number", "[providers.p]\nbase_url = 1\n", "providers.p.base_url"),
    ("models not a list", PROVIDER + 'models = "gpt"\n', "providers.p.models"),
    ("models with a number", PROVIDER + 'models = ["a", 1]\n', "providers.p.models"),
    ("forward_headers string", PROVIDER + 'forward_headers = "x"\n', "providers.p.forward_headers"),
    ("api_key_env number", PROVIDER + "api_key_env = 1\n", "providers.p.api_key_env"),
    ("alias to unknown provider", '[models.fast]\nprovider = "nope"\nmodel = "x"\n',
     "models.fast.provider: unknown provider 'nope'"),
    ("alias without model", '[models.fast]\nprovider = "sim"\n', "models.fast.model"),
    ("alias with empty provider", '[models.fast]\nprovider = ""\nmodel = "x"\n',
     "models.fast.provider"),
    ("unquoted dotted alias", '[models.gpt-4.1]\nprovider = "sim"\nmodel = "echo"\n',
     "models.gpt-4"),
]


@pytest.mark.parametrize(
    ("text", "blamed"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS]
)
def test_config_error_names_the_key(tmp_path: Path, text: str, blamed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert blamed in str(info.value)


def test_unknown_key_error_does_not_echo_its_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, PROVIDER + 'api_key = "sk-CANARY-secret"\n')
    assert "providers.p.api_key" in str(info.value)
    assert "sk-CANARY" not in str(info.value)


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_text(tmp_path, "[server\nport = 1\n")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.toml", {})


def test_missing_file_named_by_arouter_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(None, {"AROUTER_CONFIG": str(tmp_path / "nope.toml")})


def test_port_above_65535_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_text(tmp_path, "[server]\nport = 70000\n")


def test_the_shipped_example_config_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "deploy" / "arouter.example.toml"
    config = load(example, {})
    assert {"local-vllm", "claude", "google", "sim"} <= set(config.providers)
    assert config.providers["claude"].dialect == "anthropic"
    assert config.models["gemini-flash"].provider == "google"
    assert config.deadlines.client_stall == 60
    # Every catalog model of the example has a price (or is free).
    from gateway.routing.catalog import Catalog

    assert not [m for m in Catalog(config).unpriced() if "*" not in m]


def test_prices_and_accounts_are_read_exactly(tmp_path: Path) -> None:
    from gateway.accounts.pricing import Price

    path = tmp_path / "a.toml"
    path.write_text(
        '[providers.p]\nbase_url = "https://example.invalid/v1"\nmax_output_tokens = 64\n'
        '[providers.p.prices."m"]\nprompt = 0.15\ncompletion = "0.6"\n'
        '[models.fast]\nprovider = "p"\nmodel = "m"\nprice = { prompt = 1, completion = 2 }\n'
        '[accounts]\nheartbeat = 0.5\nredis_url = "unix:///tmp/r.sock"\n'
        '[store]\nurl = "postgresql://db/arouter"\n'
    )
    config = load(path, {})
    assert config.providers["p"].prices == {"m": Price(prompt=150_000, completion=600_000)}
    assert config.providers["p"].max_output_tokens == 64
    assert config.models["fast"].price == Price(prompt=1_000_000, completion=2_000_000)
    assert config.accounts.heartbeat == 0.5
    assert config.accounts.redis_url == "unix:///tmp/r.sock"
    assert config.database_url == "postgresql://db/arouter"


@pytest.mark.parametrize(("text", "named"), [
    ('[models.f]\nprovider="sim"\nmodel="x"\nprice={prompt=0.0000001}\n', "models.f.price.prompt"),
    ('[models.f]\nprovider="sim"\nmodel="x"\nprice={prompt=-1}\n', "models.f.price.prompt"),
    ('[models.f]\nprovider="sim"\nmodel="x"\nprice={input=1}\n', "models.f.price.input"),
    ('[store]\nurl="mysql://x"\n', "store.url"),
    ('[accounts]\nredis_url="http://x"\n', "accounts.redis_url"),
])
def test_bad_prices_and_urls_are_named(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(path, {})


@pytest.mark.parametrize("token", [" ", "\t\n", "abc def", "tok\x00en", " padded"])
def test_an_admin_token_nobody_could_send_refuses_to_start(token: str) -> None:
    with pytest.raises(ConfigError, match="AROUTER_ADMIN_TOKEN"):
        load(None, {"AROUTER_ADMIN_TOKEN": token})
    load(None, {"AROUTER_ADMIN_TOKEN": ""})  # empty: the admin API is simply off
    load(None, {"AROUTER_ADMIN_TOKEN": "a" * 32})
