"""``POST /v1/responses``: the Responses API route, and the answers it keeps.

Everything a generation route does (``generation.py``: admission, the relay's nursery,
the commit point, one ledger row) plus the conversation: a ``previous_response_id`` is
looked up for the same key and its items come before the new input; an answer made with
``store`` (the default) is kept, before its last bytes go out, so that the next turn can
name it the moment this one ends. Keeping is bounded by the settle deadline and never fails
the answer: a store that cannot take it leaves the response unstored (logged, counted).

The stored responses are read and deleted by ``routes.py`` (``GET``/``DELETE
/v1/responses/{id}``, ``.../input_items``), for the key that made them only.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import trio

from gateway.canonical import ChatRequest
from gateway.errors import GatewayError, RequestError
from gateway.http.dialects import PathParams
from gateway.http.generation import Generation
from gateway.relay.exchange import Exchange
from gateway.store.rows import ApiKey, StoredResponse
from gateway.wire.responses import render
from gateway.wire.responses import request as responses_request

log = logging.getLogger("arouter.responses")


class ResponsesGeneration(Generation):
    keeps = True

    async def _history(self, body: Any, key: ApiKey) -> list[Any]:
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if previous is None:
            return []
        if not isinstance(previous, str):
            raise RequestError("'previous_response_id' must be a string",
                               param="previous_response_id")
        stored = await self.gateway.store.find_response(previous, key.id, time.time())
        if stored is None:
            raise RequestError(f"Previous response with id '{previous}' not found (stored "
                               "responses are kept for the key that made them, until they "
                               "expire)", param="previous_response_id")
        items: list[Any] = json.loads(stored.items)
        return items

    async def parse(self, body: Any, call: PathParams, key: ApiKey) -> ChatRequest:
        return responses_request.parse_request(body, await self._history(body, key))

    async def keep(self, key: ApiKey, exchange: Exchange, answer: bytes | None) -> None:
        try:
            await self._keep(key, exchange, answer)
        except Exception:
            # Keeping never fails the answer: it goes out unstored.
            self.gateway.metrics.store_errors.labels("responses").inc()
            log.exception("response not stored", extra={"generation_id": exchange.generation_id})

    async def _keep(self, key: ApiKey, exchange: Exchange, answer: bytes | None) -> None:
        request = exchange.request
        retention = self.gateway.config.responses_retention
        if request.raw.get("store") is False or retention <= 0:
            return
        if answer is not None:
            response = json.loads(answer)
        else:
            assert isinstance(exchange.encoder, render.StreamEncoder)
            response = exchange.encoder.response
        with trio.move_on_after(self.gateway.config.deadlines.settle) as waited:
            try:
                history = await self._history(request.raw, key)
            except RequestError:
                history = []  # it expired meanwhile: this turn stands alone
            except GatewayError:
                history = []
            own = render.input_items(request.raw.get("input"), response["id"][5:])
            now = time.time()
            stored = StoredResponse(
                id=response["id"], key_id=key.id, created_at=now, expires_at=now + retention,
                response=json.dumps(response, ensure_ascii=False),
                input_items=json.dumps(own, ensure_ascii=False),
                items=json.dumps([*history, *own, *response["output"]], ensure_ascii=False))
            try:
                await self.gateway.store.save_response(stored)
                return
            except GatewayError:
                pass
        self.gateway.metrics.store_errors.labels("responses").inc()
        log.warning("response not stored%s", " (deadline)" if waited.cancelled_caught else "",
                    extra={"generation_id": exchange.generation_id})
