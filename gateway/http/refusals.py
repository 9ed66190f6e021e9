"""Requests refused before admission, remembered briefly so their ids can be explained.

A refused request (401, 402, 403, 429, a bad body, the store down...) is answered at once
and never recorded: it holds nothing and costs nothing, so it has no ledger row. Its answer
still carries its generation id, and a client that asks ``GET /v1/generation?id=`` for it
deserves "refused, never recorded" rather than "not settled yet".

Rules: per process, in memory, bounded (the oldest are forgotten first); a refusal is shown
only to the key that made the request (or to any key when none was authenticated). Another
process of a fleet does not know this one's refusals: it answers the generic explanation.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from gateway.errors import GatewayError

MAX_REMEMBERED = 10_000


@attrs.frozen
class Refusal:
    status: int
    type: str
    key_id: str | None  # None: refused before a key was authenticated


class Refusals:
    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self._size = size
        self._seen: OrderedDict[str, Refusal] = OrderedDict()

    def note(self, generation_id: str, error: GatewayError, key_id: str | None) -> None:
        self._seen[generation_id] = Refusal(error.status, error.type, key_id)
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def find(self, generation_id: str, key_id: str) -> Refusal | None:
        """The refusal of ``generation_id`` if ``key_id`` may know of it."""
        found = self._seen.get(generation_id)
        if found is None or found.key_id not in (None, key_id):
            return None
        return found
