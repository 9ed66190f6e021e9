"""What a client's request asks for that not every upstream can honour, as parsers find it.

A parser notes each canonical feature it fills (``note("top_k", "generationConfig.topK")``)
and each of its dialect's own fields that has no canonical meaning (``own("safetySettings",
...)``, the feature ``"gemini:safetySettings"``), with the place the client asked for it;
the first place wins. The result is ``ChatRequest.features`` (``routing/fidelity.py`` reads it).

Rules: pure; names are the client's, as it wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.canonical import FilePart, ImagePart, Message


def note_media(messages: Iterable[Message], found: dict[str, str], *, images: str,
               documents: str, audio: str) -> None:
    """Note images, documents and audio in ``messages``, under the client's names."""
    for message in messages:
        for part in message.content:
            if isinstance(part, ImagePart):
                found.setdefault("images", images)
            elif isinstance(part, FilePart):
                found.setdefault(*(("audio", audio) if part.audio else ("documents", documents)))


class Features:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.found: dict[str, str] = {}

    def note(self, feature: str, where: str) -> None:
        self.found.setdefault(feature, where)

    def own(self, name: str, where: str) -> None:
        self.found.setdefault(f"{self.dialect}:{name}", where)
