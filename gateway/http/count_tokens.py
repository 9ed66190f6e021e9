"""Token counting: Anthropic's ``POST /v1/messages/count_tokens`` and Gemini's
``:countTokens``.

The body is read as the dialect's generation request would be (validated the same way),
the model resolved, and the count asked of the deployment the model would be served by
when it speaks the client's dialect: its own tokenizer's answer, passed on. Any other
deployment, or an upstream that fails to answer in time, gets the gateway's estimate,
marked so: ``"estimated": true`` in the body and ``x-arouter-token-count: estimate``
(``upstream`` otherwise).

Not charged and not recorded in the ledger; the key's model allowlist and rate limits hold
as for any request (``Accounts.limited``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from gateway.canonical import ChatRequest
from gateway.errors import GatewayError, RequestError
from gateway.http.dialects import ClientDialect, PathParams
from gateway.http.generation import new_generation_id, read_request
from gateway.http.messages import (
    ClientGone,
    Receive,
    Scope,
    Send,
    has_body,
    send_error,
    send_json,
)
from gateway.http.service import Service
from gateway.tokens import estimate_prompt_tokens, estimate_tokens

log = logging.getLogger("arouter.count_tokens")


def estimate(request: ChatRequest) -> int:
    """The gateway's own count: the prompt's, and its tools' definitions."""
    tools = [json.dumps([t.name, t.description, t.parameters]) for t in request.tools]
    return estimate_prompt_tokens(request) + sum(estimate_tokens(t) for t in tools)


async def _watch(receive: Receive, cancel: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel.cancel("client disconnected")


class TokenCount:
    """One dialect's count route; ``answer`` renders ``(count, estimated)`` in its shape."""

    def __init__(self, gateway: Service, dialect: ClientDialect) -> None:
        self.gateway = gateway
        self.dialect = dialect

    def parse(self, body: Any, call: PathParams) -> ChatRequest:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if self.dialect.name == "gemini":
            inner = body.get("generateContentRequest", body.get("generate_content_request"))
            return self.dialect.parse(inner if isinstance(inner, dict) else body, call)
        if "max_tokens" in body:
            raise RequestError("max_tokens: Extra inputs are not permitted", param="max_tokens")
        # A count has no output: the Messages parser's required cap is not the client's.
        return self.dialect.parse({**body, "max_tokens": 1}, call)

    def answer(self, count: int, estimated: bool) -> dict[str, Any]:
        name = "totalTokens" if self.dialect.name == "gemini" else "input_tokens"
        return {name: count, **({"estimated": True} if estimated else {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send, PathParams())

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     call: PathParams) -> None:
        gateway = self.gateway
        unread = has_body(scope)
        generation_id = new_generation_id()
        try:
            key, body = await read_request(gateway, scope, receive, self.dialect.key_header,
                                           call.key)
            unread = False
            request = self.parse(body, call)
            route = gateway.catalog.resolve(request.model)
            async with gateway.accounts.limited(key, request.model, generation_id):
                counted: list[tuple[int, bool]] = []
                async with trio.open_nursery() as nursery:
                    # A client that leaves ends the count (and frees its slot) at once.
                    nursery.start_soon(_watch, receive, nursery.cancel_scope)
                    counted.append(await self._count(request, route.targets[0]))
                    nursery.cancel_scope.cancel("counted")
                if not counted:
                    return  # the client left
                count, estimated = counted[0]
        except ClientGone:
            return
        except GatewayError as exc:
            await send_error(send, exc, self.dialect.error_body, generation_id, close=unread)
            return
        source = b"estimate" if estimated else b"upstream"
        await send_json(send, 200, json.dumps(self.answer(count, estimated)).encode(),
                        [(b"x-arouter-token-count", source)])

    async def _count(self, request: ChatRequest, target: Any) -> tuple[int, bool]:
        provider = self.gateway.attempts.providers.get(target.provider.dialect)
        counter = getattr(provider, "count_tokens", None)
        if target.provider.dialect != self.dialect.name or counter is None:
            return estimate(request), True
        try:
            with trio.fail_after(self.gateway.config.deadlines.first_token):
                return await counter(request, target), False
        except RequestError:
            raise  # the upstream says the request is wrong: the client should know
        except (GatewayError, trio.TooSlowError) as exc:
            log.warning("token count by estimate: the upstream did not answer",
                        extra={"deployment": target.label, "reason": str(exc)})
            return estimate(request), True
