"""The model catalog: aliases first, then ``provider/model``, anything else 400."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.accounts.price_table import builtin
from gateway.accounts.pricing import FREE, Price
from gateway.config import SIM_PROVIDER, ProviderConfig, from_dict
from gateway.errors import ModelNotFound
from gateway.routing.catalog import Catalog
from gateway.routing.targets import Target

LOCAL = {"base_url": "http://127.0.0.1:8000/v1", "models": ["llama-3.1-8b", "qwen/qwen3"]}


def catalog(
    providers: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Catalog:
    raw = {"providers": providers or {}, "models": models or {}}
    return Catalog(from_dict(raw, environ or {}))


OPENAI_ENV = {"OPENAI_API_KEY": "sk-test"}


def test_sim_models_resolve_by_default() -> None:
    assert catalog().resolve("sim/echo").targets[0] == Target(SIM_PROVIDER, "echo", FREE,
                                                              public="sim/echo")
    assert catalog().resolve("sim/lorem").targets[0].label == "sim/lorem"


def test_provider_without_a_model_list_serves_any_model() -> None:
    target = catalog(environ=OPENAI_ENV).resolve("openai/gpt-4.1-mini").targets[0]
    assert target.provider.name == "openai"
    assert target.model == "gpt-4.1-mini"


def test_model_part_may_itself_contain_slashes_and_dots() -> None:
    target = catalog(environ={"OPENROUTER_API_KEY": "k"}).resolve(
        "openrouter/meta-llama/llama-3.1-8b-instruct:free"
    ).targets[0]
    assert (target.provider.name, target.model) == (
        "openrouter", "meta-llama/llama-3.1-8b-instruct:free"
    )


def test_listed_models_are_the_only_ones_a_provider_serves() -> None:
    cat = catalog(providers={"local": LOCAL})
    assert cat.resolve("local/qwen/qwen3").targets[0].model == "qwen/qwen3"
    with pytest.raises(ModelNotFound):
        cat.resolve("local/gpt-4o")


def test_alias_resolves_to_its_provider_and_upstream_model() -> None:
    cat = catalog(
        providers={"local": LOCAL},
        models={"fast": {"provider": "local", "model": "llama-3.1-8b"}},
    )
    target = cat.resolve("fast").targets[0]
    assert target.provider.name == "local"
    assert target.provider.base_url == "http://127.0.0.1:8000/v1"
    assert target.model == "llama-3.1-8b"


def test_alias_with_dots_and_slashes_wins_over_provider_form() -> None:
    config = from_dict(
        {
            "providers": {"local": LOCAL},
            "models": {
                "openai/gpt-4.1": {"provider": "local", "model": "qwen/qwen3"},
                "team.v2/fast-1.5": {"provider": "sim", "model": "echo"},
            },
        },
        OPENAI_ENV,
    )
    cat = Catalog(config)
    local = config.providers["local"]
    assert cat.resolve("openai/gpt-4.1").targets[0] == Target(local, "qwen/qwen3",
                                                              public="openai/gpt-4.1")
    assert cat.resolve("openai/gpt-4.1-mini").targets[0].provider.name == "openai"
    assert cat.resolve("team.v2/fast-1.5").targets[0] == Target(SIM_PROVIDER, "echo", FREE,
                                                                public="team.v2/fast-1.5")


def test_alias_may_name_a_model_outside_the_providers_list() -> None:
    cat = catalog(providers={"local": LOCAL},
                  models={"big": {"provider": "local", "model": "unlisted-70b"}})
    assert cat.resolve("big").targets[0].model == "unlisted-70b"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "echo",
        "sim",
        "sim/",
        "/echo",
        "/",
        "sim/unknown",
        "SIM/echo",
        "sim/Echo",
        "sim/echo ",
        " sim/echo",
        "nosuch/echo",
        "openai/gpt-4o",  # no OPENAI_API_KEY in this environment
        "fast ",
        "Fast",
        "local/llama-3.1-8b/extra",
        "../sim/echo",
    ],
)
def test_anything_else_is_model_not_found(name: str) -> None:
    cat = catalog(providers={"local": LOCAL},
                  models={"fast": {"provider": "local", "model": "llama-3.1-8b"}})
    with pytest.raises(ModelNotFound) as info:
        cat.resolve(name)
    assert (info.value.status, info.value.param) == (400, "model")
    assert info.value.message.startswith(f"Invalid model specified: {name!r}.")


def test_listing_has_aliases_then_listed_provider_models() -> None:
    cat = catalog(
        providers={"local": LOCAL},
        models={"fast": {"provider": "local", "model": "llama-3.1-8b"},
                "team.v2/x": {"provider": "sim", "model": "echo"}},
        environ=OPENAI_ENV,  # lists no models: its price table's models are listed
    )
    listing = cat.listing(created=1700000000)
    ids = [entry["id"] for entry in listing]
    assert ids[:8] == ["fast", "team.v2/x", "sim-echo", "sim-lorem", "sim-embed",  # built-in
                       "sim/echo", "sim/lorem", "sim/embed"]
    assert ids[-2:] == ["local/llama-3.1-8b", "local/qwen/qwen3"]
    assert {f"openai/{m}" for m in builtin().prices["openai"]} == set(ids[8:-2])
    assert listing[5] == {
        "id": "sim/echo", "object": "model", "created": 1700000000, "owned_by": "sim"
    }
    assert listing[-1]["owned_by"] == "local"
    assert {entry["object"] for entry in listing} == {"model"}


def test_every_listed_name_resolves() -> None:
    cat = catalog(
        providers={"local": LOCAL, "off": {"dialect": "sim", "models": ["echo"]}},
        models={"a/b.c": {"provider": "off", "model": "echo"}},
    )
    for entry in cat.listing(created=0):
        assert isinstance(cat.resolve(entry["id"]).targets[0].provider, ProviderConfig)


# -- prices -------------------------------------------------------------------------------------


def test_a_price_comes_from_the_alias_then_the_provider_then_the_built_in_table() -> None:
    table = builtin()
    gpt = table.find("openai", "gpt-4o")
    assert gpt is not None and gpt.prompt == 2_500_000  # $2.50 per million
    cat = catalog(environ=OPENAI_ENV, providers={
        "openai": {"dialect": "openai", "base_url": "https://api.openai.com/v1",
                   "api_key_env": "OPENAI_API_KEY",
                   "prices": {"gpt-4o-mini": {"prompt": 1, "completion": 2}}},
    }, models={"cheap": {"provider": "openai", "model": "gpt-4o",
                         "price": {"prompt": 0.5, "completion": 0.5}}})
    assert cat.resolve("openai/gpt-4o").targets[0].price == gpt  # the built-in table
    assert cat.resolve("openai/gpt-4o-mini").targets[0].price == Price(1_000_000, 2_000_000)
    assert cat.resolve("cheap").targets[0].price == Price(500_000, 500_000)


def test_a_model_nobody_priced_has_no_price_unless_marked_free() -> None:
    cat = catalog(environ=OPENAI_ENV, providers={"local": LOCAL, "vllm": {
        **LOCAL, "free": True}}, models={
            "gratis": {"provider": "local", "model": "llama-3.1-8b", "free": True}})
    assert cat.resolve("openai/no-such-model-in-the-table").targets[0].price is None
    assert cat.resolve("local/llama-3.1-8b").targets[0].price is None
    assert cat.resolve("vllm/llama-3.1-8b").targets[0].price == FREE
    assert cat.resolve("gratis").targets[0].price == FREE


def test_groq_does_not_take_openais_prices() -> None:
    cat = catalog(environ={"GROQ_API_KEY": "k"})
    assert cat.resolve("groq/gpt-4o").targets[0].price is None


def test_the_built_in_table_is_dated_and_every_entry_is_a_price() -> None:
    table = builtin()
    assert table.date.year >= 2026
    assert set(table.prices) == {"openai", "anthropic", "gemini"}
    assert table.count() >= 30
    assert all(p.prompt > 0 and p.completion > 0 for models in table.prices.values()
               for p in models.values())


# -- unknown names say what to do ------------------------------------------------------------


@pytest.mark.parametrize(("name", "environ", "says"), [
    ("gpt-4o", {}, "e.g. openai/gpt-4o (the provider 'openai' is not enabled: set "
                   "OPENAI_API_KEY)"),
    ("gpt-4o", OPENAI_ENV, "e.g. openai/gpt-4o."),
    ("openai/gpt-4o", {}, "The provider 'openai' is not enabled: set OPENAI_API_KEY"),
    ("sim/lorme", {}, "Close to: sim/lorem"),
])
def test_an_unknown_model_names_itself_and_what_to_do(
    name: str, environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ModelNotFound) as info:
        catalog(environ=environ).resolve(name)
    message = info.value.message
    assert message.startswith(f"Invalid model specified: {name!r}.")  # the spec's words
    assert says in message and "GET /v1/models" in message


def test_the_listing_holds_every_enabled_providers_priced_models() -> None:
    listed = {entry["id"] for entry in catalog(environ=OPENAI_ENV).listing(0)}
    assert {"sim/echo", "sim/lorem", "openai/gpt-4o"} <= listed
    assert not any(name.startswith("anthropic/") for name in listed)  # not enabled
