"""Token estimates, for when no provider counted: ``ceil(chars / 4)``.

The usual rule of thumb for English BPE vocabularies. Used to size a reservation before a
request runs (the prompt), by the Anthropic route's ``message_start`` (which must say a
prompt size before the provider has), and for the usage of an answer the provider did not
count (always flagged ``estimated``). Pure.
"""

from __future__ import annotations

from gateway.canonical import ChatRequest


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_prompt_tokens(request: ChatRequest) -> int:
    # A few tokens of per-message framing, as chat templates add; token ids count as given.
    given = request.prompt_tokens or 0
    return given + estimate_tokens(request.prompt_text) + 4 * len(request.messages)
