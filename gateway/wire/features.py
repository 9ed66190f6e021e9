"""What a client's request asks for that not every upstream can honour, as parsers find it.

A parser notes each canonical feature it fills (``note("top_k", "generationConfig.topK")``)
and each of its dialect's own fields that has no canonical meaning (``own("safetySettings",
...)``, the feature ``"gemini:safetySettings"``), with the place the client asked for it;
the first place wins. The result is ``ChatRequest.features`` (``routing/fidelity.py`` reads it).

Rules: pure; names are the client's, as it wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.canonical import FilePart, ImagePart, Message, Tool


def note_media(messages: Iterable[Message], found: dict[str, str], *, images: str,
               documents: str, audio: str) -> None:
    """Note images (and how finely they are to be read), documents, audio and named
    participants in ``messages``, under the client's names."""
    for i, message in enumerate(messages):
        if message.name is not None:
            found.setdefault("message_names", f"messages.{i}.name")
        for part in message.content:
            if isinstance(part, ImagePart):
                found.setdefault("images", images)
                if part.detail is not None:
                    found.setdefault("image_detail", f"{images}.detail")
            elif isinstance(part, FilePart):
                found.setdefault(*(("audio", audio) if part.audio else ("documents", documents)))


def note_tools(tools: Iterable[Tool], found: dict[str, str]) -> None:
    """Note strict tools (arguments that must match the schema)."""
    for i, tool in enumerate(tools):
        if tool.strict:
            found.setdefault("strict_tools", f"tools.{i}.strict")


class Features:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.found: dict[str, str] = {}

    def note(self, feature: str, where: str) -> None:
        self.found.setdefault(feature, where)

    def own(self, name: str, where: str) -> None:
        self.found.setdefault(f"{self.dialect}:{name}", where)
