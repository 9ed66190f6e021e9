"""Fidelity decisions: which deployments can honour a request, what they drop, and the 400
that names the field and the deployments when none can.

Pure: parsed client bodies and targets in, routes and errors out.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ProviderConfig
from gateway.errors import RequestError
from gateway.routing.catalog import Route
from gateway.routing.fidelity import RECORDED_MAX, fit_route, gaps
from gateway.routing.targets import Target
from gateway.wire.anthropic.request import parse_request as anthropic_request
from gateway.wire.gemini.request import parse_request as gemini_request
from gateway.wire.openai.request import parse_request as openai_request


def target(dialect: str, name: str | None = None, drop: bool | tuple[str, ...] = False,
           accepts: tuple[str, ...] = ()) -> Target:
    provider = ProviderConfig(name=name or dialect, dialect=dialect,
                              base_url="http://127.0.0.1:1", accepts=accepts)
    return Target(provider, "m", drop_unsupported=drop)


def openai(**fields: Any) -> Any:
    return openai_request({"model": "x", "messages": [{"role": "user", "content": "hi"}],
                           **fields})


def anthropic(**fields: Any) -> Any:
    return anthropic_request({"model": "x", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "hi"}], **fields})


def gemini(**fields: Any) -> Any:
    return gemini_request({"contents": [{"parts": [{"text": "hi"}]}], **fields}, "x",
                          stream=False)


def params(request: Any, dialect: str) -> list[str]:
    return [g.param for g in gaps(request, target(dialect))]


def test_a_deployment_of_the_client_s_dialect_honours_everything() -> None:
    assert params(openai(logit_bias={"1": 1}, brand_new=1), "openai") == []
    assert params(anthropic(cache_control={"type": "ephemeral"}), "anthropic") == []
    assert params(gemini(safetySettings=[{"category": 1, "threshold": 1}]), "gemini") == []


@pytest.mark.parametrize(("request_", "dialect", "expected"), [
    (openai(logit_bias={"1": 1}), "anthropic", ["logit_bias"]),
    (openai(seed=1, presence_penalty=1), "anthropic", ["seed", "presence_penalty"]),
    (openai(seed=1, presence_penalty=1), "gemini", []),
    (openai(parallel_tool_calls=False, user="u"), "gemini",
     ["user", "parallel_tool_calls"]),
    (anthropic(top_k=3), "openai", ["top_k"]),
    (anthropic(top_k=3), "gemini", []),
    # Prompt-cache markers: OpenAI and Gemini cache prefixes on their own.
    (anthropic(cache_control={"type": "ephemeral"}), "gemini", []),
    (anthropic(cache_control={"type": "ephemeral"}, citations=[]), "openai", ["citations"]),
    (gemini(safetySettings=[{"category": 1, "threshold": 1}]), "openai", ["safetySettings"]),
    (gemini(generationConfig={"topK": 3}), "openai", ["generationConfig.topK"]),
    (gemini(generationConfig={"topK": 3}), "anthropic", []),
])
def test_what_another_dialect_cannot_honour_is_named_as_the_client_named_it(
        request_: Any, dialect: str, expected: list[str]) -> None:
    assert params(request_, dialect) == expected


def test_openrouter_sampling_extensions_need_a_provider_that_accepts_them() -> None:
    request = openai(top_k=40, min_p=0.1)
    assert [g.param for g in gaps(request, target("openai"))] == ["top_k", "min_p"]
    assert gaps(request, target("openai", accepts=("top_k", "min_p"))) == []
    assert [g.param for g in gaps(request, target("anthropic"))] == ["min_p"]


def test_deployments_that_cannot_honour_are_skipped_with_the_reason() -> None:
    route = Route("x", (target("anthropic", "a"), target("openai", "o")))
    fitted = fit_route(openai(logit_bias={"1": 1}), route)
    assert [t.label for t in fitted.targets] == ["o/m"]
    assert fitted.skipped == (("a/m", "cannot honour 'logit_bias'"),)


def test_none_able_is_a_400_naming_the_field_and_every_deployment() -> None:
    route = Route("x", (target("anthropic", "a"), target("gemini", "g")))
    with pytest.raises(RequestError) as info:
        fit_route(openai(logit_bias={"1": 1}, seed=3), route)
    error = info.value
    assert (error.status, error.param) == (400, "logit_bias")
    assert error.message.startswith(
        "'logit_bias' cannot be honoured by a/m (Anthropic) cannot honour 'logit_bias', "
        "'seed'; g/m (Gemini) cannot honour 'logit_bias'")
    assert "drop_unsupported" in error.message


@pytest.mark.parametrize("drop", [True, ("logit_bias",), ("openai:logit_bias",)])
def test_an_operator_may_allow_dropping_by_name_or_wholesale(
        drop: bool | tuple[str, ...]) -> None:
    route = Route("x", (target("anthropic", "a", drop=drop),))
    [fitted] = fit_route(openai(logit_bias={"1": 1}), route).targets
    assert fitted.dropped == ("logit_bias",)


def test_dropping_one_name_allows_only_that_one() -> None:
    route = Route("x", (target("anthropic", "a", drop=("logit_bias",)),))
    with pytest.raises(RequestError) as info:
        fit_route(openai(logit_bias={"1": 1}, seed=1), route)
    assert info.value.param == "seed"


def test_require_parameters_forbids_dropping() -> None:
    route = Route("x", (target("anthropic", "a", drop=True), target("openai", "o")))
    request = openai(logit_bias={"1": 1}, provider={"require_parameters": True})
    fitted = fit_route(request, route)
    assert [t.label for t in fitted.targets] == ["o/m"]
    assert fitted.targets[0].dropped == ()


@pytest.mark.parametrize(("request_", "dialect", "expected"), [
    # Images and documents in a tool's result: only Anthropic's tool results hold them.
    (anthropic(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://e.test/a.png"}}]}]}]),
     "gemini", ["messages.2.content.0.content.0 (image block)"]),
    # Strict tools: Gemini's VALIDATED calling mode; Anthropic's strict tools.
    (openai(tools=[{"type": "function", "function": {"name": "f", "strict": True}}]), "gemini",
     []),
    (openai(messages=[{"role": "user", "content": "hi", "name": "ann"}]), "anthropic",
     ["messages.0.name"]),
    (openai(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://e.test/a.png", "detail": "low"}}]}]), "gemini", ["image_url.detail"]),
    (openai(messages=[{"role": "user", "content": "a"},
                      {"role": "assistant", "content": None, "refusal": "no"},
                      {"role": "user", "content": "b"}]), "anthropic", ["messages.1.refusal"]),
])
def test_finer_points_without_a_form_elsewhere_are_named_not_dropped(
        request_: Any, dialect: str, expected: list[str]) -> None:
    assert params(request_, dialect) == expected


@pytest.mark.parametrize(("request_", "dialect", "expected"), [
    # Keys inside objects the canonical model reads, beyond what it carries.
    (anthropic(tool_choice={"type": "auto", "new_flag": True}), "openai",
     ["tool_choice.new_flag"]),
    (anthropic(thinking={"type": "adaptive", "new_knob": 1}), "gemini", ["thinking.new_knob"]),
    (anthropic(messages=[{"role": "user", "content": "hi", "note": "x"}]), "openai",
     ["messages.0.note"]),
    # OpenRouter-style cache_control on an OpenAI content part.
    (openai(messages=[{"role": "user", "content": [
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]),
     "anthropic", ["messages.0.content.0.cache_control"]),
])
def test_unknown_keys_inside_known_objects_are_named_not_dropped(
        request_: Any, dialect: str, expected: list[str]) -> None:
    assert params(request_, dialect) == expected
    assert params(request_, request_.dialect) == []  # the client's own dialect: as sent


def test_a_route_every_deployment_honours_is_the_same_route() -> None:
    route = Route("x", (target("openai", "o"), target("anthropic", "a")))
    assert fit_route(openai(temperature=0.5), route) is route


def test_a_clients_odd_key_names_reach_the_ledger_escaped_and_bounded() -> None:
    # Unknown keys are the client's to name: the ledger's attempts ("label=why;...") and
    # dropped ("a,b") columns must not take its separators, quotes or line breaks at face
    # value, nor a name of any length.
    odd = "x;fake/m=ok,\n'" + "y" * 100
    request = anthropic(messages=[{"role": "user", "content": "hi", odd: 1}])
    route = Route("x", (target("openai", "o"), target("gemini", "g", drop=True)))
    fitted = fit_route(request, route)
    [(label, why)] = fitted.skipped
    [kept] = fitted.targets
    [dropped] = kept.dropped
    assert dropped == "messages.0.x%3Bfake%2Fm%3Dok%2C%0A%27" + "y" * 27 + "..."
    assert len(dropped) == RECORDED_MAX + 3
    assert (label, why) == ("o/m", f"cannot honour '{dropped}'")
    assert not set(";,=\n") & set(dropped)
    with pytest.raises(RequestError) as info:  # the client is told its own name
        fit_route(request, Route("x", (target("openai", "o"),)))
    assert odd in info.value.message


def paid_target(dialect: str, allow: bool | tuple[str, ...] = False,
                drop: bool | tuple[str, ...] = False) -> Target:
    provider = ProviderConfig(name=dialect, dialect=dialect, base_url="http://127.0.0.1:1",
                              allow_surcharges=allow)
    return Target(provider, "m", drop_unsupported=drop)


SURCHARGES = [
    (openai(service_tier="priority"), "service_tier"),
    (openai(web_search_options={}), "web_search_options"),
    (anthropic(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0"),
    (anthropic_request({"model": "x", "max_tokens": 10,
                        "messages": [{"role": "user", "content": "hi"}]},
                       {"anthropic-beta": "context-1m-2025-08-07"}), "anthropic-beta header"),
    (gemini(tools=[{"googleSearch": {}}]), "tools.0.googleSearch"),
    (gemini(serviceTier="flex"), "serviceTier"),
]


@pytest.mark.parametrize(("request_", "param"), SURCHARGES)
def test_a_surcharge_is_refused_everywhere_unless_the_operator_allows_it(
        request_: Any, param: str) -> None:
    # Even the client's own dialect, where everything else goes as sent: the provider
    # would charge for it, and the gateway bills by the token.
    for dialect in ("openai", "anthropic", "gemini"):
        with pytest.raises(RequestError) as info:
            fit_route(request_, Route("x", (paid_target(dialect, drop=True),)))
        assert info.value.param == param
        assert "allow_surcharges" in info.value.message
        assert "drop_unsupported" not in info.value.message  # never dropped
    allowed = fit_route(request_, Route("x", (paid_target(request_.dialect, allow=True),)))
    assert allowed.targets[0].dropped == ()
    feature = next(f for f in request_.features if f.startswith("paid:"))
    by_name = paid_target(request_.dialect, allow=(feature.removeprefix("paid:"),))
    assert fit_route(request_, Route("x", (by_name,))).targets == (by_name,)


def test_default_tiers_and_free_tools_are_no_surcharge() -> None:
    for request in (openai(service_tier="auto"), openai(service_tier="default"),
                    anthropic(tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}]),
                    gemini(tools=[{"codeExecution": {}}]), gemini(serviceTier="standard")):
        assert not [f for f in request.features if f.startswith("paid:")]
    # The simulator costs nothing: no surcharge there (a field it has no use for is
    # refused as ever, and may be dropped).
    simulator = Target(ProviderConfig(name="sim", dialect="sim"), "lorem",
                       drop_unsupported=True)
    [served] = fit_route(openai(service_tier="priority"), Route("x", (simulator,))).targets
    assert served.dropped == ("service_tier",)
