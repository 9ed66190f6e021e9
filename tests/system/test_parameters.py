"""No silent drops: every request parameter the official SDKs define, through every upstream.

The parameter names come from the SDKs' own type definitions (openai's chat-completion
create params, anthropic's message create params, google-genai's ``GenerateContentConfig``
fields), so a field a new SDK version adds fails this test until ``VALUES`` decides a value
for it. Each is sent, alone beside the required fields, with a valid value, by the SDK
itself, through a gateway on a loopback port, to the recording fake upstream in each
dialect. What the upstream received is compared with what it receives without the
parameter, and each outcome must be one of:

- forwarded: the upstream speaks the client's dialect and got the parameter as sent;
- translated: another dialect's upstream got something new (named in the matrix);
- refused: a 400 in the client's dialect naming the parameter (where the operator may let
  the deployment drop it instead, the same request to a lenient deployment is then served
  and its ledger row names what was dropped);
- client-side: the SDK never sends it (its own upstream of the same dialect got nothing).

Anything else, a 200 whose upstream body did not change, fails. The outcomes are the
compatibility matrix, ``docs/compatibility.md``: the committed page must be what this test
renders (``AROUTER_WRITE_COMPATIBILITY=1`` rewrites it).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anthropic
import attrs
import openai
import pytest
import trio
from anthropic.types import message_create_params
from google import genai
from google.genai import types as genai_types
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from gateway.config import ModelRoute, ProviderConfig
from tests.support.gateways import Gw, Sim

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "compatibility.md"
PROMPT = "#sim tokens=2 interval_ms=0\nhi"
UPSTREAMS = ("openai", "anthropic", "gemini")
# The Responses API is a client dialect no upstream speaks: every upstream translates it.
CLIENT_DIALECT = {"openai": "openai", "anthropic": "anthropic", "genai": "gemini",
                  "responses": "responses"}

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
STORED = "resp_stored"  # replaced by the id of a response the test stores first
STORED_RESPONSES: dict[str, str] = {}

# A valid value for every parameter of each SDK's create call. A parameter missing here
# fails the test: a new SDK field must be decided, not silently sent or dropped.
VALUES: dict[str, dict[str, Any]] = {
    "openai": {
        "audio": {"voice": "alloy", "format": "wav"},
        "frequency_penalty": 0.5,
        "function_call": "auto",
        "functions": [{"name": "f", "parameters": SCHEMA}],
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "max_completion_tokens": 50,
        "max_tokens": 50,
        "metadata": {"team": "search"},
        "modalities": ["text"],
        "moderation": {"model": "omni-moderation-latest"},
        "n": 2,
        "parallel_tool_calls": False,
        "prediction": {"type": "content", "content": "x"},
        "presence_penalty": 0.5,
        "prompt_cache_key": "k",
        "prompt_cache_options": {"mode": "explicit", "ttl": "30m"},
        "prompt_cache_retention": "24h",
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": SCHEMA}},
        "safety_identifier": "s",
        "seed": 7,
        "service_tier": "flex",
        "stop": ["END"],
        "store": False,
        "temperature": 0.5,
        "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}],
        "top_logprobs": 2,
        "top_p": 0.5,
        "user": "u-1",
        "verbosity": "low",
        "web_search_options": {},
        # OpenRouter's extensions, sent as the OpenAI SDK sends them (extra_body).
        "reasoning": {"max_tokens": 2048},
        "top_k": 40,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "usage": {"include": True},
        "transforms": ["middle-out"],
    },
    "anthropic": {
        "cache_control": {"type": "ephemeral"},
        "container": "container_1",
        "diagnostics": {"previous_message_id": "msg_1"},
        "inference_geo": "us",
        "max_tokens": 50,
        "metadata": {"user_id": "u-1"},
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
        "service_tier": "auto",
        "speed": "fast",
        "stop_sequences": ["END"],
        "system": "Be brief.",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tool_choice": {"type": "any"},
        "tools": [{"name": "f", "input_schema": SCHEMA}],
        "user_profile_id": "up_1",
        "workspace_id": "ws_1",
        # The Messages API's sampling fields, which this SDK version sends as extra_body.
        "temperature": 0.5,
        "top_p": 0.5,
        "top_k": 5,
    },
    "genai": {
        "audio_timestamp": True,
        "audio_transcription_config": {"language_codes": ["en"]},
        "automatic_continuation": True,
        "automatic_function_calling": {"disable": True},
        "cached_content": "cachedContents/c1",
        "candidate_count": 2,
        "continuation_token": b"t",
        "enable_enhanced_civic_answers": True,
        "frequency_penalty": 0.5,
        "generation_output_config": {"output_uri_prefix": "gs://b/o"},
        "http_options": {"headers": {"x-test": "1"}},
        "image_config": {"aspect_ratio": "1:1"},
        "labels": {"team": "search"},
        "logprobs": 2,
        "max_output_tokens": 50,
        "media_resolution": "MEDIA_RESOLUTION_LOW",
        "model_armor_config": {"prompt_template_name": "t"},
        "model_selection_config": {"feature_selection_preference": "BALANCED"},
        "presence_penalty": 0.5,
        "response_json_schema": SCHEMA,
        "response_logprobs": True,
        "response_mime_type": "application/json",
        "response_modalities": ["TEXT"],
        "response_schema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        "routing_config": {"auto_mode": {"model_routing_preference": "BALANCED"}},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT",
                             "threshold": "BLOCK_NONE"}],
        "seed": 7,
        "service_tier": "flex",
        "should_return_http_response": True,
        "speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}},
        "stop_sequences": ["END"],
        "store": True,
        "system_instruction": "Be brief.",
        "temperature": 0.5,
        "thinking_config": {"thinking_budget": 2048, "include_thoughts": True},
        "tool_config": {"function_calling_config": {"mode": "ANY"}},
        "tools": [{"function_declarations": [{"name": "f", "parameters_json_schema": SCHEMA}]}],
        "top_k": 5,
        "top_p": 0.5,
    },
    "responses": {
        "access_programs": {"cyber": "standard"},
        "background": True,
        "background_options": {"completion_window": "soonest"},
        "context_management": [{"type": "compaction"}],
        "conversation": "conv_1",
        "image": {"context_compression": "auto"},
        "include": ["reasoning.encrypted_content"],
        "instructions": "Be brief.",
        "max_output_tokens": 50,
        "max_tool_calls": 3,
        "metadata": {"team": "search"},
        "moderation": {"model": "omni-moderation-latest"},
        "parallel_tool_calls": False,
        "previous_response_id": STORED,  # a response this key made (set up by the test)
        "prompt": {"id": "pmpt_1"},
        "prompt_cache_key": "k1",
        "prompt_cache_options": {"mode": "implicit"},
        "prompt_cache_retention": "24h",
        "reasoning": {"effort": "low"},
        "safety_identifier": "user-1",
        "service_tier": "flex",
        "store": True,
        "stream_options": {"include_obfuscation": False},
        "temperature": 0.5,
        "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}},
        "tool_choice": "none",
        "tools": [{"type": "function", "name": "f", "parameters": SCHEMA, "strict": False}],
        "top_logprobs": 2,
        "top_p": 0.5,
        "truncation": "disabled",
        "user": "user-1",
    },
}
# Accepted with nothing to send upstream, and why (each a decision, not a default).
NOTHING_TO_SEND = {
    ("genai", "response_modalities"): "text answers are what every upstream gives",
    ("openai", "usage"): "honoured by the gateway: usage is always reported",
    ("anthropic", "cache_control"): "the upstream caches prompt prefixes on its own; cache "
    "reads are reported and priced",
    ("responses", "store"): "honoured by the gateway: the answer is kept for "
    "previous_response_id",
    ("responses", "metadata"): "kept with the stored response",
    ("responses", "include"): "reasoning.encrypted_content is always sent",
    ("responses", "truncation"): "disabled: the gateway never cuts a conversation",
    ("responses", "stream_options"): "the gateway's streams carry no obfuscation",
}
# Parameters that mean something only beside another: sent with it, and compared with a
# request that has the companion alone.
COMPANIONS = {
    ("genai", "response_schema"): {"response_mime_type": "application/json"},
    ("genai", "response_json_schema"): {"response_mime_type": "application/json"},
}
# Fields every request carries, which the gateway interprets for itself.
REQUIRED = {"openai": {"model", "messages", "stream", "stream_options"},
            "anthropic": {"model", "messages", "stream"},
            "genai": set(), "responses": {"model", "input", "stream"}}
# Sent through extra_body: not parameters of this SDK version's create call.
EXTRA_BODY = {"openai": {"reasoning", "top_k", "min_p", "repetition_penalty", "usage",
                         "transforms"},
              "anthropic": {"temperature", "top_p", "top_k"}, "genai": set(),
              "responses": set()}


def sdk_parameters(client: str) -> set[str]:
    if client == "openai":
        params = completion_create_params.CompletionCreateParamsBase
    elif client == "anthropic":
        params = message_create_params.MessageCreateParamsBase
    elif client == "responses":
        params = response_create_params.ResponseCreateParamsBase
    else:
        return set(genai_types.GenerateContentConfig.model_fields)
    return set(typing.get_type_hints(params)) - REQUIRED[client]


@attrs.frozen
class Outcome:
    kind: str  # forwarded|translated|refused|droppable|surcharge|client-side|accepted|silent
    detail: str = ""

    def cell(self) -> str:
        if self.kind == "translated":
            return f"translated to `{self.detail}`"
        if self.kind == "droppable":
            return "refused, dropped when allowed"
        if self.kind == "surcharge":
            return "refused unless the operator allows the surcharge"
        if self.kind == "accepted":
            return f"accepted ({self.detail})"
        if self.kind == "refused":
            return f"refused ({self.detail})" if self.detail else "refused"
        return self.kind


# -- sending each parameter with its own SDK ------------------------------------------------

class Refused(Exception):
    pass


def _fields(client: str, param: str | None, companion: str | None) -> dict[str, Any]:
    """The SDK call's keyword arguments for ``param`` (or only its companions)."""
    if param is None:
        return {}
    fields = dict(COMPANIONS.get((client, param), {}))
    if companion is None:
        value = VALUES[client][param]
        value = STORED_RESPONSES.get(value, value) if isinstance(value, str) else value
        if param in EXTRA_BODY[client]:
            fields["extra_body"] = {param: value}
        else:
            fields[param] = value
    return fields


def _openai(gw: Gw, model: str, param: str | None, companion: str | None) -> None:
    fields = _fields("openai", param, companion)
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}], **fields)
        except openai.BadRequestError as exc:
            raise Refused(str(exc.body)) from None


def _anthropic(gw: Gw, model: str, param: str | None, companion: str | None) -> None:
    fields = {"max_tokens": 64, **_fields("anthropic", param, companion)}
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        try:
            client.messages.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                   **fields)
        except anthropic.BadRequestError as exc:
            raise Refused(str(exc.body)) from None


def _genai(gw: Gw, model: str, param: str | None, companion: str | None) -> None:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    config = genai_types.GenerateContentConfig(**_fields("genai", param, companion))
    try:
        client.models.generate_content(model=model, contents=PROMPT, config=config)
    except genai.errors.ClientError as exc:
        if exc.code != 400:
            raise
        raise Refused(str(exc.message)) from None
    except ValueError as exc:  # the SDK itself: "not supported in Gemini API", ...
        raise Refused(f"SDK: {exc}") from None


def _responses(gw: Gw, model: str, param: str | None, companion: str | None) -> None:
    fields = _fields("responses", param, companion)
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        try:
            client.responses.create(model=model, input=PROMPT, **fields)
        except openai.BadRequestError as exc:
            raise Refused(str(exc.body)) from None


SEND: dict[str, Callable[[Gw, str, str | None, str | None], None]] = {
    "openai": _openai, "anthropic": _anthropic, "genai": _genai, "responses": _responses}


# Objects that only group parameters: a new one is named by its members.
CONTAINERS = {"generationConfig"}


def changed(before: Any, after: Any, path: str = "") -> list[str]:
    """Where ``after`` differs from ``before``: keys of the body (and of the containers), a
    new object or a changed value named whole."""
    if isinstance(before, dict) and isinstance(after, dict) and (
            not path or path in CONTAINERS):
        found: list[str] = []
        for key in sorted(before.keys() | after.keys()):
            where = f"{path}.{key}" if path else key
            found.extend(changed(before.get(key, {} if key in CONTAINERS else None),
                                 after.get(key, {} if key in CONTAINERS else None), where))
        return found
    return [] if before == after else [path or "(body)"]


# The API headers an upstream may be sent on a client's behalf (the SDKs send some
# parameters as headers); the gateway's own (version, key) are left out.
API_HEADERS = ("anthropic-", "openai-", "x-goog-")
OWN_HEADERS = {"anthropic-version", "x-goog-api-key"}


async def _send(gw: Gw, sim: Sim, client: str, model: str, param: str | None,
                companion: str | None = None) -> tuple[Any, str | None]:
    """What the upstream received, body and API headers (None if nothing came), and a
    refusal's text."""
    count = len(sim.records())
    try:
        await trio.to_thread.run_sync(SEND[client], gw, model, param, companion)
    except Refused as exc:
        assert len(sim.records()) == count, f"{client} {param}: refused after a call"
        return None, str(exc)
    records = sim.records()
    assert len(records) == count + 1, f"{client} {param} via {model}: {len(records) - count}"
    record = records[-1]
    headers = {f"header {k}": v for k, v in record.request_headers.items()
               if k.startswith(API_HEADERS) and k not in OWN_HEADERS}
    return {**record.body, **headers}, None


def _names_it(message: str, param: str) -> bool:
    """Whether a refusal names ``param`` as the client sent it: snake_case, camelCase on
    the Gemini wire, or kebab-case where the SDK sends it as a header."""
    camel = param.split("_")[0] + "".join(w.title() for w in param.split("_")[1:])
    return any(name in message for name in (param, camel, param.replace("_", "-")))


async def _outcome(gw: Gw, sim: Sim, client: str, upstream: str, param: str,
                   baseline: Any, same_sent: bool | None) -> Outcome:
    model = f"{upstream}-lorem"
    if (client, param) in COMPANIONS:
        baseline, refusal = await _send(gw, sim, client, model, param, companion=param)
        assert refusal is None, refusal
    body, refusal = await _send(gw, sim, client, model, param)
    if refusal is not None:
        if refusal.startswith("SDK: "):
            return Outcome("refused", "by the SDK")
        assert _names_it(refusal, param), f"{client} {param} -> {upstream}: {refusal}"
        if "drop_unsupported" in refusal:
            return Outcome("droppable")
        if "allow_surcharges" in refusal:
            return Outcome("surcharge")
        return Outcome("refused")
    diff = changed(baseline, body)
    if not diff and (client, param) in NOTHING_TO_SEND:
        return Outcome("accepted", NOTHING_TO_SEND[client, param])
    if CLIENT_DIALECT[client] == upstream:
        return Outcome("forwarded" if diff else "client-side")
    if diff:
        return Outcome("translated", ", ".join(diff))
    if same_sent is False:
        return Outcome("client-side")
    return Outcome("silent", f"{client} {param} -> {upstream}: a 200 and nothing sent")


LENIENT = {f"lenient-{d}": ProviderConfig(
    name=f"lenient-{d}", dialect=d, base_url="", api_key_env="AROUTER_TEST_FAKE_KEY",
    drop_unsupported=True, allow_surcharges=True) for d in UPSTREAMS}


async def test_every_sdk_parameter_is_forwarded_translated_or_refused_by_name(
        start_gateway: Any, sim: Sim) -> None:
    providers = {name: attrs.evolve(p, base_url=f"{sim.url}/v1" if p.dialect == "openai"
                                    else sim.url) for name, p in LENIENT.items()}
    models = {f"{name}-lorem": ModelRoute(name=f"{name}-lorem", provider=name, model="lorem")
              for name in providers}
    results: dict[str, dict[str, dict[str, Outcome]]] = {}
    async with start_gateway(providers=providers, models=models) as gw:
        # previous_response_id needs a response this key stored.
        made = await _stored_response(gw)
        STORED_RESPONSES[STORED] = made
        for client in SEND:
            decided = set(VALUES[client]) - EXTRA_BODY[client]
            assert sdk_parameters(client) <= decided, (
                f"{client}: parameters with no decided value (new in the SDK?): "
                f"{sorted(sdk_parameters(client) - decided)}")
            table = results[client] = {}
            baselines = {u: (await _send(gw, sim, client, f"{u}-lorem", None))[0]
                         for u in UPSTREAMS}
            # Same dialect first, where there is one: it tells what the SDK sends at all.
            order = [u for u in UPSTREAMS if u == CLIENT_DIALECT[client]] + [
                u for u in UPSTREAMS if u != CLIENT_DIALECT[client]]
            for param in sorted(sdk_parameters(client) | EXTRA_BODY[client]):
                row = table[param] = {}
                for upstream in order:
                    same = row.get(CLIENT_DIALECT[client])
                    row[upstream] = await _outcome(
                        gw, sim, client, upstream, param, baselines[upstream],
                        None if same is None else same.kind != "client-side")
                    if row[upstream].kind == "droppable":
                        await _check_dropped(gw, sim, client, upstream, param)
                    if row[upstream].kind == "surcharge":
                        await _check_surcharge_allowed(gw, sim, client, upstream, param,
                                                       baselines[upstream])
    silent = [o.detail for t in results.values() for r in t.values() for o in r.values()
              if o.kind == "silent"]
    assert silent == []
    page = render(results)
    if os.environ.get("AROUTER_WRITE_COMPATIBILITY"):
        PAGE.write_text(page)
    assert PAGE.read_text() == page, (
        "docs/compatibility.md is stale: AROUTER_WRITE_COMPATIBILITY=1 pytest "
        "tests/system/test_parameters.py rewrites it")


async def _stored_response(gw: Gw) -> str:
    def create() -> str:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as c:
            return c.responses.create(model="openai-lorem", input=PROMPT).id
    return await trio.to_thread.run_sync(create)


async def _check_dropped(gw: Gw, sim: Sim, client: str, upstream: str, param: str) -> None:
    """Where the operator allowed dropping, the request is served without it, and its
    ledger row says what was dropped."""
    before = len(await gw.records())
    body, refusal = await _send(gw, sim, client, f"lenient-{upstream}-lorem", param)
    assert refusal is None and body is not None, refusal
    rows = await gw.wait_records(before + 1)
    newest = max(rows, key=lambda r: r.created_at)
    assert newest.dropped, (client, param, upstream, newest)
    assert _names_it(newest.dropped, param), (client, param, newest.dropped)


async def _check_surcharge_allowed(gw: Gw, sim: Sim, client: str, upstream: str, param: str,
                                   baseline: Any) -> None:
    """Where the operator allowed the surcharge, the request is served: with the parameter
    on the client's own dialect, else as any other parameter (here: dropped)."""
    body, refusal = await _send(gw, sim, client, f"lenient-{upstream}-lorem", param)
    assert refusal is None and body is not None, (client, param, upstream, refusal)
    if CLIENT_DIALECT[client] == upstream:
        assert changed(baseline, body), (client, param, "not forwarded once allowed")


# -- the page ------------------------------------------------------------------------------

SDK_NAMES = {"openai": "OpenAI Chat Completions (`openai` SDK, `client.chat.completions.create`)",
             "anthropic": "Anthropic Messages (`anthropic` SDK, `client.messages.create`)",
             "genai": "Gemini generateContent (`google-genai` SDK, `GenerateContentConfig`)",
             "responses": "OpenAI Responses API (`openai` SDK, `client.responses.create`)"}


def render(results: Mapping[str, Mapping[str, Mapping[str, Outcome]]]) -> str:
    lines = [
        "# Compatibility: every request parameter, every upstream",
        "",
        "Generated by `tests/system/test_parameters.py` from what the official SDKs define "
        "and what the recording fake upstream received; the test fails if this page is "
        "stale. Each parameter was sent alone, with a valid value, by the SDK itself.",
        "",
        "- **forwarded**: the upstream speaks the client's dialect and gets the body as "
        "sent (only the model is rewritten, and on OpenAI streams `stream_options` asks "
        "for usage).",
        "- **translated to `X`**: the upstream of another dialect gets `X` (paths in its "
        "body).",
        "- **refused, dropped when allowed**: a 400 in the client's dialect naming the "
        "parameter and the deployment, unless the operator set `drop_unsupported` for it "
        "(then the request is served without it and the ledger row's `dropped` names it).",
        "- **refused unless the operator allows the surcharge**: the provider would charge "
        "for it beyond the tokens the gateway bills (a non-default service tier, web "
        "search, grounding); a 400 on every deployment, of any dialect, unless the "
        "operator set `allow_surcharges` for its provider (then it is forwarded to the "
        "client's own dialect, and treated as any other field elsewhere). Never dropped "
        "silently.",
        "- **refused**: a 400 naming the parameter wherever it goes.",
        "- **client-side**: the SDK acts on it itself and never sends it.",
        "",
        "Fields every request carries (`model`, `messages`/`contents`, `stream`) are the "
        "gateway's own to read and translate.",
        "",
        "**Answers.** A whole (non-streamed) answer from an upstream of the client's own "
        "dialect reaches it as sent, but for the id and the model name "
        "(`tests/system/test_same_dialect_answers.py`). On OpenAI streams to OpenAI "
        "clients every text chunk is relayed with all its fields (`logprobs`, "
        "`system_fingerprint`, `service_tier`, `obfuscation`); the opening, finish and "
        "usage chunks are the gateway's. Anthropic and Gemini streams to clients of "
        "their own dialect go out event by event as sent (citations deltas, server-tool "
        "blocks, per-chunk safety ratings, grounding), with the gateway's id and model "
        "and, on the last event, the usage it bills. Streams across dialects are built "
        "from the canonical events: text, reasoning with its signatures, tool calls, "
        "finish and usage.",
    ]
    for client, table in results.items():
        lines += ["", f"## {SDK_NAMES[client]}", "",
                  "| parameter | " + " | ".join(f"→ {u} upstream" for u in UPSTREAMS) + " |",
                  "|---|" + "---|" * len(UPSTREAMS)]
        for param, row in table.items():
            lines.append(f"| `{param}` | " + " | ".join(row[u].cell() for u in UPSTREAMS)
                         + " |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("client", list(SEND))
def test_every_sdk_parameter_has_a_decided_value(client: str) -> None:
    # The same check the system test makes first, as a fast unit: a new SDK field shows
    # here by name.
    assert sdk_parameters(client) <= set(VALUES[client]) - EXTRA_BODY[client]
