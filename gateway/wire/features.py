"""What a client's request asks for that not every upstream can honour, as parsers find it.

A parser notes each canonical feature it fills (``note("top_k", "generationConfig.topK")``)
and each of its dialect's own fields that has no canonical meaning (``own("safetySettings",
...)``, the feature ``"gemini:safetySettings"``), with the place the client asked for it;
the first place wins. The result is ``ChatRequest.features`` (``routing/fidelity.py`` reads it).

What makes the provider charge beyond the tokens the gateway bills is the feature
``paid:<what>`` (``PAID``): a dearer or cheaper service tier, per-call fees for web search,
grounding or code execution, long-context rates. The price table knows none of these, so
every deployment, of any dialect, refuses them unless its provider's ``allow_surcharges``
names them (``routing/fidelity.py``); they are never dropped.

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


PAID = {
    "service_tier": "a service tier other than the default, priced apart",
    "web_search": "web search, charged per call",
    "server_tools": "server tools charged per use (web search, code execution)",
    "grounding": "grounding with Google Search or Maps, charged per prompt",
    "long_context": "long-context rates (Anthropic's context-1m beta)",
}
# Anthropic server tools with a fee of their own (web fetch costs only its tokens).
PAID_SERVER_TOOLS = ("web_search", "code_execution")
# Gemini tools with a fee of their own (code execution and URL context cost only tokens).
PAID_GEMINI_TOOLS = frozenset({"googleSearch", "googleSearchRetrieval", "googleMaps"})


class Features:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.found: dict[str, str] = {}

    def note(self, feature: str, where: str) -> None:
        self.found.setdefault(feature, where)

    def own(self, name: str, where: str) -> None:
        self.found.setdefault(f"{self.dialect}:{name}", where)

    def paid(self, what: str, where: str) -> None:
        """A surcharge (a ``PAID`` key) the request would incur, and where it asks for it."""
        self.found.setdefault(f"paid:{what}", where)
