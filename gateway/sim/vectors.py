"""Deterministic embedding vectors for the simulators (the fake upstream and the built-in
``sim/embed``): the same text and model give the same unit vector, different texts give
different ones, with no model and no network.

Rules: pure; a vector is ``dimensions`` floats from SHA-256 of the model and the text,
scaled to length 1 (as real embedding models return them).
"""

from __future__ import annotations

import hashlib
import math
import struct

DIMENSIONS = 16  # when the request asks for none
MAX_DIMENSIONS = 4096


def vector(model: str, text: str, dimensions: int | None = None) -> tuple[float, ...]:
    size = dimensions or DIMENSIONS
    raw: list[float] = []
    counter = 0
    while len(raw) < size:
        digest = hashlib.sha256(f"{model}\0{counter}\0{text}".encode()).digest()
        raw.extend(n / 2**31 - 1.0 for n in struct.unpack(">8I", digest))
        counter += 1
    raw = raw[:size]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return tuple(round(x / norm, 8) for x in raw)
