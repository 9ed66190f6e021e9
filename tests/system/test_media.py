"""Documents and audio across dialects: a PDF or a recording a client sends reaches every
upstream that reads it, in that upstream's own form, and one that cannot is a 400 naming it.

Sent with the official SDKs through the gateway to the recording fake upstream.
"""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import openai
import pytest
import trio

from tests.support.gateways import Gw, Sim

PDF = base64.b64encode(b"%PDF-1.4 a tiny document").decode()
WAV = base64.b64encode(b"RIFF....WAVEfmt ").decode()
PROMPT = "#sim tokens=2 interval_ms=0\nWhat does it say?"

# Where each upstream dialect finds the PDF in the first user turn.
AT_UPSTREAM = {
    "openai": lambda body: body["messages"][0]["content"][1],
    "anthropic": lambda body: body["messages"][0]["content"][1],
    "gemini": lambda body: body["contents"][0]["parts"][1],
}
PDF_AT = {
    "openai": {"type": "file", "file": {"filename": "paper.pdf",
                                        "file_data": f"data:application/pdf;base64,{PDF}"}},
    "anthropic": {"type": "document", "title": "paper.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": PDF}},
    "gemini": {"inlineData": {"mimeType": "application/pdf", "data": PDF}},
}


def _openai(gw: Gw, model: str, part: dict[str, Any]) -> Any:
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0) as client:
        try:
            return client.chat.completions.create(model=model, messages=[{
                "role": "user", "content": [{"type": "text", "text": PROMPT}, part]}])
        except openai.BadRequestError as exc:
            return exc


def _anthropic(gw: Gw, model: str, part: dict[str, Any]) -> Any:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        return client.messages.create(model=model, max_tokens=64, messages=[{
            "role": "user", "content": [{"type": "text", "text": PROMPT}, part]}])


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
async def test_an_openai_client_s_pdf_reaches_every_upstream(
        gw: Gw, sim: Sim, upstream: str) -> None:
    part = {"type": "file", "file": {"filename": "paper.pdf",
                                     "file_data": f"data:application/pdf;base64,{PDF}"}}
    answer = await trio.to_thread.run_sync(_openai, gw, f"{upstream}-lorem", part)
    assert not isinstance(answer, Exception), answer
    [record] = sim.records()
    assert AT_UPSTREAM[upstream](record.body) == PDF_AT[upstream]


@pytest.mark.parametrize("upstream", ["openai", "gemini"])
async def test_an_anthropic_client_s_pdf_reaches_other_upstreams(
        gw: Gw, sim: Sim, upstream: str) -> None:
    part = {"type": "document", "title": "paper.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": PDF}}
    await trio.to_thread.run_sync(_anthropic, gw, f"{upstream}-lorem", part)
    [record] = sim.records()
    assert AT_UPSTREAM[upstream](record.body) == PDF_AT[upstream]


async def test_audio_reaches_gemini_and_is_refused_by_name_for_anthropic(
        gw: Gw, sim: Sim) -> None:
    part = {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}
    await trio.to_thread.run_sync(_openai, gw, "gemini-lorem", part)
    [record] = sim.records()
    assert record.body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "audio/wav", "data": WAV}}
    refused = await trio.to_thread.run_sync(_openai, gw, "anthropic-lorem", part)
    assert isinstance(refused, openai.BadRequestError)
    assert "'input_audio' cannot be honoured by fake-anthropic/lorem" in str(refused.body)
    assert len(sim.records()) == 1  # the refused request reached no upstream
