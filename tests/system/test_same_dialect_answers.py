"""A whole answer from an upstream of the client's own dialect reaches it field for field.

The canonical model holds what every dialect shares; a client whose upstream speaks its
own dialect is owed the rest too: OpenAI's ``logprobs``, ``refusal``,
``system_fingerprint`` and ``service_tier``, Anthropic's usage ``service_tier``, Gemini's
candidate ``safetyRatings``. Only the id and the model are the gateway's. (Each SDK reads
the answer; the fake upstream's answer is the reference.)
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import trio
from google import genai

from tests.support.gateways import Gw, Sim

PROMPT = "#sim tokens=3 interval_ms=0\nhi"


def _openai(gw: Gw) -> Any:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        return client.chat.completions.create(
            model="openai-lorem", messages=[{"role": "user", "content": PROMPT}],
            logprobs=True, top_logprobs=0)


async def test_an_openai_client_gets_every_field_an_openai_upstream_sent(
        gw: Gw, sim: Sim) -> None:
    answer = await trio.to_thread.run_sync(_openai, gw)
    assert (answer.system_fingerprint, answer.service_tier) == ("fp_sim", "default")
    choice = answer.choices[0]
    assert choice.message.refusal is None and choice.message.content == " Lorem ipsum dolor"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [t.token for t in choice.logprobs.content] == ["Lorem", "ipsum", "dolor"]
    assert answer.model == "openai-lorem" and answer.id.startswith("gen-")
    [row] = await gw.wait_records(1)
    assert (row.completion_tokens, row.status) == (3, "ok")


def _anthropic(gw: Gw) -> Any:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        return client.messages.create(model="anthropic-lorem", max_tokens=64,
                                      messages=[{"role": "user", "content": PROMPT}])


async def test_an_anthropic_client_gets_every_field_an_anthropic_upstream_sent(
        gw: Gw, sim: Sim) -> None:
    message = await trio.to_thread.run_sync(_anthropic, gw)
    assert message.usage.service_tier == "standard"
    assert message.model == "anthropic-lorem" and message.id.startswith("gen-")


def _genai(gw: Gw) -> Any:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    return client.models.generate_content(model="gemini-lorem", contents=PROMPT)


async def test_a_gemini_client_gets_every_field_a_gemini_upstream_sent(
        gw: Gw, sim: Sim) -> None:
    response = await trio.to_thread.run_sync(_genai, gw)
    [candidate] = response.candidates
    assert candidate.safety_ratings is not None
    assert [r.category for r in candidate.safety_ratings] == [
        "HARM_CATEGORY_HARASSMENT"]
    assert response.model_version == "gemini-lorem"


# -- streams: every event as the upstream sent it --------------------------------------------

def _anthropic_stream(gw: Gw) -> Any:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client, \
            client.messages.stream(model="anthropic-lorem", max_tokens=64,
                                   messages=[{"role": "user", "content": PROMPT}]) as stream:
        return stream.get_final_message()


async def test_an_anthropic_client_streaming_gets_every_field_an_anthropic_upstream_sent(
        gw: Gw, sim: Sim) -> None:
    message = await trio.to_thread.run_sync(_anthropic_stream, gw)
    # The usage's service_tier is only in the upstream's message_start: it is our opening.
    assert message.usage.service_tier == "standard"
    assert message.model == "anthropic-lorem" and message.id.startswith("gen-")
    assert [block.text for block in message.content if block.type == "text"] == [
        " Lorem ipsum dolor"]
    assert (message.usage.output_tokens, message.stop_reason) == (3, "end_turn")
    [row] = await gw.wait_records(1)
    assert (row.completion_tokens, row.status) == (3, "ok")


def _genai_stream(gw: Gw) -> list[Any]:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    return list(client.models.generate_content_stream(model="gemini-lorem", contents=PROMPT))


async def test_a_gemini_client_streaming_gets_every_field_a_gemini_upstream_sent(
        gw: Gw, sim: Sim) -> None:
    chunks = await trio.to_thread.run_sync(_genai_stream, gw)
    last = chunks[-1]
    # The safety ratings ride on the upstream's last chunk: it reaches the client as sent.
    [candidate] = last.candidates
    assert candidate.safety_ratings is not None
    assert [r.category for r in candidate.safety_ratings] == ["HARM_CATEGORY_HARASSMENT"]
    assert candidate.finish_reason == "STOP"
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == 3
    assert {chunk.model_version for chunk in chunks} == {"gemini-lorem"}
    assert len({chunk.response_id for chunk in chunks}) == 1
    assert "".join(chunk.text or "" for chunk in chunks) == " Lorem ipsum dolor"
    [row] = await gw.wait_records(1)
    assert (row.completion_tokens, row.status) == (3, "ok")


# -- several answers: OpenAI n, Gemini candidateCount ---------------------------------------

def _openai_choices(gw: Gw, model: str, stream: bool = False) -> Any:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        try:
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}], n=3,
                stream=stream)
        except openai.BadRequestError as exc:
            return exc


async def test_an_openai_client_gets_n_choices_from_an_openai_upstream(
        gw: Gw, sim: Sim) -> None:
    answer = await trio.to_thread.run_sync(_openai_choices, gw, "openai-lorem")
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert {c.message.content for c in answer.choices} == {" Lorem ipsum dolor"}
    assert answer.usage.completion_tokens == 9  # every choice's output
    [row] = await gw.wait_records(1)
    assert (row.completion_tokens, row.status) == (9, "ok")
    # Elsewhere, and on a stream, one choice is all there is: refused by name.
    for model, stream in (("anthropic-lorem", False), ("openai-lorem", True)):
        refused = await trio.to_thread.run_sync(_openai_choices, gw, model, stream)
        assert isinstance(refused, openai.BadRequestError), refused
        assert refused.body is not None and refused.body.get("param") == "n"  # type: ignore[union-attr]


def _genai_candidates(gw: Gw) -> Any:
    client = genai.Client(api_key=gw.key, http_options={"base_url": gw.url})
    return client.models.generate_content(
        model="gemini-lorem", contents=PROMPT,
        config=genai.types.GenerateContentConfig(candidate_count=2))


async def test_a_gemini_client_gets_candidate_count_candidates_from_a_gemini_upstream(
        gw: Gw, sim: Sim) -> None:
    response = await trio.to_thread.run_sync(_genai_candidates, gw)
    assert [c.index for c in response.candidates] == [0, 1]
    assert response.usage_metadata.candidates_token_count == 6
    [row] = await gw.wait_records(1)
    assert (row.completion_tokens, row.status) == (6, "ok")
