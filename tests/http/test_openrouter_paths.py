"""OpenRouter's paths (``/api/v1/...``): a client set up for OpenRouter changes only the host."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import trio

from tests.support.gateways import Gw, Sim

PROMPT = "#sim tokens=2 interval_ms=0\nhi"


async def test_an_openrouter_client_changes_only_the_host(gw: Gw, sim: Sim) -> None:
    def run() -> tuple[Any, Any, list[str]]:
        with openai.OpenAI(base_url=f"{gw.url}/api/v1", api_key=gw.key,
                           max_retries=0) as client:
            chat = client.chat.completions.create(
                model="openai-lorem", messages=[{"role": "user", "content": PROMPT}])
            response = client.responses.create(model="anthropic-lorem", input=PROMPT)
            return chat, response, [m.id for m in client.models.list()]

    chat, response, models = await trio.to_thread.run_sync(run)
    assert chat.choices[0].message.content == " Lorem ipsum"
    assert response.output_text == " Lorem ipsum"
    assert "openai-lorem" in models and "sim/lorem" in models
    async with httpx.AsyncClient(base_url=f"{gw.url}/api/v1", headers=gw.headers) as http:
        key = await http.get("/key")
        rows = await gw.wait_records(2)
        generation = await http.get("/generation", params={"id": rows[0].generation_id})
        stranger = await http.get("/key", headers={"authorization": "Bearer nope"})
    assert key.status_code == 200 and key.json()["data"]["name"] == "test"
    assert generation.status_code == 200
    assert generation.json()["data"]["id"] == rows[0].generation_id
    assert stranger.status_code == 401
