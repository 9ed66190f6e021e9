"""The Gemini dialect over real loopback HTTP, driven by httpx and the official google-genai
SDK. Its async client runs on asyncio (aiohttp or httpx), not under Trio, so the tests drive
the sync client in a worker thread."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import trio
from google import genai
from google.genai import errors, types

from gateway.sim.scenarios import token_texts
from tests.support.sim_clients import GEMINI_KEY, PROMPT, SPEAKERS, SimAt, sse_events

SPEAKER = SPEAKERS["gemini"]
TOKENS = "".join(token_texts("echo", PROMPT, 10))
T = TypeVar("T")


@pytest.fixture
def sdk(sim: SimAt) -> Iterator[genai.Client]:
    client = genai.Client(api_key=GEMINI_KEY, http_options={"base_url": sim.url, "timeout": 5000})
    try:
        yield client
    finally:
        client.close()


async def in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await trio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


def contents(directive: str) -> str:
    return f"{PROMPT}\n#sim {directive}"


async def sse_chunks(client: httpx.AsyncClient, directive: str, **changes: Any) -> list[Any]:
    request = SPEAKER.request(directive)
    request["json"].update(changes)
    async with client.stream("POST", **request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        raw = await response.aread()
    events = sse_events(raw, line_end="\r\n")  # Google ends SSE lines with CRLF
    assert all(event is None for event, _ in events)
    return [json.loads(data) if data != "{not json" else data for _, data in events]


def text_of(chunks: list[Any]) -> str:
    return "".join(
        part["text"]
        for chunk in chunks if "candidates" in chunk
        for part in chunk["candidates"][0]["content"]["parts"]
    )


async def test_sdk_stream_yields_the_text_and_the_usage(sim: SimAt, sdk: genai.Client) -> None:
    # google-genai 3.x calls /v1/models/...:streamGenerateContent?alt=sse by default.
    chunks = await in_thread(
        lambda: list(sdk.models.generate_content_stream(
            model="gemini-echo", contents=contents("tokens=5 tag=s")
        ))
    )
    assert "".join(chunk.text or "" for chunk in chunks) == " one two three one two"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    usage = last.usage_metadata
    assert usage is not None and usage.candidates_token_count == 5
    assert usage.total_token_count == 5 + (usage.prompt_token_count or 0)
    assert last.model_version == "gemini-echo"
    record = sim.record("s")
    assert (record.dialect, record.outcome, record.tokens_sent) == ("gemini", "completed", 5)
    assert record.saw_authorization == GEMINI_KEY[:8]
    assert record.request_headers["x-goog-api-key"] == GEMINI_KEY[:8]
    assert GEMINI_KEY not in json.dumps(record.to_json())


async def test_sdk_generate_content_on_v1beta_stops_at_max_output_tokens(sim: SimAt) -> None:
    client = genai.Client(
        api_key=GEMINI_KEY,
        http_options={"base_url": sim.url, "api_version": "v1beta", "timeout": 5000},
    )
    with client:
        response = await in_thread(
            client.models.generate_content,
            model="gemini-lorem",
            contents=contents("tag=w"),
            config=types.GenerateContentConfig(
                max_output_tokens=3, system_instruction="be brief"
            ),
        )
    assert response.text == "".join(token_texts("lorem", "", 3))
    assert response.candidates and response.candidates[0].finish_reason == (
        types.FinishReason.MAX_TOKENS
    )
    assert response.usage_metadata and response.usage_metadata.candidates_token_count == 3
    record = sim.record("w")
    assert (record.outcome, record.tokens_sent, record.stream) == ("completed", 3, False)


async def test_raw_sse_chunks_are_generate_content_responses(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    chunks = await sse_chunks(client, "tag=r")
    assert len(chunks) == 10 + 1  # a chunk per token, then the finish
    prompt = chunks[0]["usageMetadata"]["promptTokenCount"]
    response_id = f"sim{sim.record('r').id}"
    assert chunks[0] == {
        "candidates": [{"content": {"parts": [{"text": " one"}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
        "modelVersion": "sim-echo",
        "responseId": response_id,
    }
    assert text_of(chunks) == TOKENS
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["candidates"][0]["content"]["parts"] == [{"text": ""}]
    assert last["usageMetadata"] == {
        "promptTokenCount": prompt, "candidatesTokenCount": 10, "totalTokenCount": prompt + 10
    }
    assert all(chunk["responseId"] == response_id for chunk in chunks)


async def test_max_output_tokens_finishes_the_stream_with_max_tokens(
    client: httpx.AsyncClient,
) -> None:
    chunks = await sse_chunks(client, "", generationConfig={"maxOutputTokens": 3})
    assert text_of(chunks) == " one two three"
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_without_alt_sse_the_stream_is_one_json_array_growing(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    request = SPEAKER.request("tag=a interval_ms=10")
    del request["params"]
    pieces: list[bytes] = []
    async with client.stream("POST", **request) as response:
        assert response.headers["content-type"] == "application/json; charset=UTF-8"
        async for piece in response.aiter_raw():
            pieces.append(piece)
            if len(pieces) == 1:  # the array's first element arrives before the rest is made
                assert sim.record("a").ended_at is None
    raw = b"".join(pieces)
    assert raw.startswith(b'[{"candidates":') and raw.endswith(b"}]")
    assert raw.count(b"\n,\r\n{") == 10
    chunks = json.loads(raw)
    assert text_of(chunks) == TOKENS
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_array_mode_ends_with_an_error_element_or_breaks_off(
    client: httpx.AsyncClient,
) -> None:
    request = SPEAKER.request("scenario=midstream_error")
    del request["params"]
    chunks = json.loads((await client.post(**request)).content)
    assert chunks[-1]["error"]["status"] == "INTERNAL"
    assert text_of(chunks[:-1]) == "".join(token_texts("echo", PROMPT, 5))

    request = SPEAKER.request("scenario=cut")
    del request["params"]
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", **request) as response:
            async for chunk in response.aiter_raw():
                received += chunk
    assert received.startswith(b"[{") and received.count(b"\n,\r\n{") == 4
    assert not received.endswith(b"]")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "name"),
    [
        (401, "UNAUTHENTICATED"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (529, "UNAVAILABLE"),
    ],
)
async def test_status_scenarios_answer_with_google_error_bodies(
    sim: SimAt, client: httpx.AsyncClient, status: int, name: str, stream: bool
) -> None:
    request = SPEAKER.request(f"scenario=status_{status} tag=e", stream=stream)
    response = await client.post(**request)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, name)
    assert "simulated" in error["message"]
    assert "retry-after" not in response.headers  # Google says it in the body
    if status == 429:
        assert error["details"] == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}
        ]
    assert sim.record("e").outcome == "error_status"


async def test_sdk_maps_status_scenarios_to_its_errors(sdk: genai.Client) -> None:
    for scenario, exception, code in [
        ("status_429", errors.ClientError, 429),
        ("status_401", errors.ClientError, 401),
        ("status_503", errors.ServerError, 503),
    ]:
        with pytest.raises(exception, match="simulated") as raised:
            await in_thread(
                sdk.models.generate_content,
                model="gemini-echo", contents=contents(f"scenario={scenario}"),
            )
        assert raised.value.code == code


async def test_midstream_error_is_an_error_chunk_after_half(
    sim: SimAt, client: httpx.AsyncClient, sdk: genai.Client
) -> None:
    chunks = await sse_chunks(client, "scenario=midstream_error tag=m")
    assert chunks[-1] == {"error": {
        "code": 500,
        "message": "An internal error has occurred. (simulated by arouter sim)",
        "status": "INTERNAL",
    }}
    assert text_of(chunks[:-1]) == "".join(token_texts("echo", PROMPT, 5))
    record = sim.record("m")
    assert (record.outcome, record.tokens_sent) == ("error_event", 5)

    def read_all() -> list[str]:
        stream = sdk.models.generate_content_stream(
            model="gemini-echo", contents=contents("scenario=midstream_error")
        )
        return [chunk.text or "" for chunk in stream]

    with pytest.raises(errors.ServerError, match="INTERNAL"):
        await in_thread(read_all)
    whole = await client.post(**SPEAKER.request("scenario=midstream_error", stream=False))
    assert (whole.status_code, whole.json()["error"]["status"]) == (500, "INTERNAL")


async def test_malformed_and_invalid_json_send_a_broken_chunk(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    chunks = await sse_chunks(client, "scenario=malformed")
    assert chunks[-1] == "{not json"
    assert text_of(chunks[:-1]) == "".join(token_texts("echo", PROMPT, 5))
    assert await sse_chunks(client, "scenario=invalid_json tag=i") == ["{not json"]
    assert sim.record("i").outcome == "error_event"
    whole = await client.post(**SPEAKER.request("scenario=invalid_json", stream=False))
    assert (whole.status_code, whole.content) == (200, b"{not json")


async def test_no_usage_leaves_out_every_usage_metadata(client: httpx.AsyncClient) -> None:
    chunks = await sse_chunks(client, "scenario=no_usage")
    assert text_of(chunks) == TOKENS
    assert all("usageMetadata" not in chunk for chunk in chunks)
    whole = await client.post(**SPEAKER.request("scenario=no_usage", stream=False))
    assert "usageMetadata" not in whole.json()


async def test_bad_requests_get_google_errors_and_a_record(
    sim: SimAt, client: httpx.AsyncClient
) -> None:
    body = SPEAKER.request()["json"]
    url = "/v1beta/models/sim-echo:generateContent"
    cases: list[tuple[str, bytes | dict[str, Any], int, str, str]] = [
        (url, b"hello", 400, "INVALID_ARGUMENT", "Invalid JSON payload"),
        (url, {"contents": []}, 400, "INVALID_ARGUMENT", "contents is not specified"),
        (url, {**body, "generationConfig": {"maxOutputTokens": "3"}}, 400, "INVALID_ARGUMENT",
         "max_output_tokens"),
        (url, SPEAKER.request("tokens=lots")["json"], 400, "INVALID_ARGUMENT",
         "expected a whole number"),
        ("/v1beta/models/sim-echo:predict", body, 404, "NOT_FOUND", "Method not found"),
    ]
    for path, case, status, name, message in cases:
        content = case if isinstance(case, bytes) else json.dumps(case).encode()
        response = await client.post(path, content=content, params={"key": GEMINI_KEY})
        assert response.status_code == status
        error = response.json()["error"]
        assert (error["code"], error["status"]) == (status, name)
        assert message in error["message"] and GEMINI_KEY not in response.text
    records = sim.server.records
    assert [(r.dialect, r.outcome) for r in records] == [("gemini", "error_status")] * len(cases)
    assert all(r.saw_authorization == GEMINI_KEY[:8] for r in records)
    wrong = await client.get(url)
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert wrong.json()["error"]["code"] == 405
