"""Fidelity: whether a deployment can honour everything a request asks for.

A request names, in ``ChatRequest.features``, each thing it asks for that not every
upstream dialect can honour, under the client's own name for it. A deployment honours:

- everything, when it speaks the client's dialect (the body goes as sent: ``raw``);
- the canonical features its dialect translates (``HONOURS`` of its ``wire/*/upstream``),
  plus the parameters its provider is configured to accept beyond them (``accepts``);
- nothing else. What it cannot honour is refused by name, unless the operator allowed
  dropping it (``drop_unsupported``, per provider or per model), in which case the
  deployment serves the request without it and the ledger row names what was dropped.

``fit_route`` keeps the deployments that can serve a request (each with what it drops) and
names the ones it skipped and why; when none is left the request is a 400 naming the field
and the deployments, in the client's dialect.

Rules: pure (no I/O); a dialect's translation table is the only source of what it honours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from gateway.canonical import FEATURES, ChatRequest
from gateway.errors import RequestError
from gateway.routing.catalog import Route
from gateway.routing.targets import Target
from gateway.wire.anthropic.upstream import HONOURS as ANTHROPIC
from gateway.wire.features import PAID
from gateway.wire.gemini.upstream import HONOURS as GEMINI
from gateway.wire.openai.upstream import HONOURS as OPENAI

# The built-in simulator takes every canonical feature (a simulator ignores sampling and
# formats alike), but no dialect's own parameter: those mean nothing without their API.
HONOURS: Mapping[str, frozenset[str]] = {
    "openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI, "sim": frozenset(FEATURES),
}
DIALECT_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Gemini",
                 "sim": "the simulator"}


@attrs.frozen
class Gap:
    """One thing a deployment cannot honour: the feature, and the client's name for it."""

    feature: str
    param: str

    @property
    def paid(self) -> bool:
        """A surcharge (``features.PAID``): never dropped, only allowed by the operator."""
        return self.feature.startswith("paid:")

    def allowed_by(self, drop: bool | tuple[str, ...]) -> bool:
        if drop is True:
            return True
        if drop is False:
            return False
        bare = self.feature.partition(":")[2] or self.feature
        return bool({self.feature, bare, self.param} & set(drop))


# Features a client dialect may ask for that are not its API's own (OpenRouter's sampling
# extensions on the OpenAI route): even a deployment of the same dialect must honour them.
EXTENSIONS: Mapping[str, frozenset[str]] = {
    "openai": frozenset({"top_k", "min_p", "repetition_penalty"}),
}


# Client dialects that only an upstream of another name serves, as it is: OpenAI's legacy
# Completions API is an OpenAI upstream's own.
NATIVE = {"completions": "openai"}


def gaps(request: ChatRequest, target: Target) -> list[Gap]:
    """What of ``request`` the deployment ``target`` has no way to honour, or (a surcharge
    its provider does not allow) may not."""
    provider = target.provider
    honoured = HONOURS[provider.dialect] | set(provider.accepts)
    same = provider.dialect in (request.dialect, NATIVE.get(request.dialect)) or (
        request.dialect == "responses" and provider.responses == "native")
    extensions = EXTENSIONS.get(request.dialect, frozenset())
    found = []
    for feature, param in request.features.items():
        gap = Gap(feature, param)
        if gap.paid:
            # Whatever the dialect: the price table cannot bill it (the simulator is free).
            if provider.dialect != "sim" and not gap.allowed_by(
                    provider.allow_surcharges):
                found.append(gap)
        elif feature not in honoured and (not same or feature in extensions):
            found.append(gap)
    return found


@attrs.frozen
class Skipped:
    label: str
    dialect: str
    gaps: tuple[Gap, ...]

    @property
    def why(self) -> str:
        """For the ledger's ``attempts``: the names as ``recorded``."""
        return "cannot honour " + ", ".join(f"'{recorded(g.param)}'" for g in self.gaps)

    @property
    def reason(self) -> str:
        """For the client: its own names, as it wrote them (the error body escapes them)."""
        names = ", ".join(f"'{g.param}'" for g in self.gaps)
        return f"{self.label} ({DIALECT_NAMES.get(self.dialect, self.dialect)}) cannot " \
            f"honour {names}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\[\]\-]")
RECORDED_MAX = 64  # characters of one name in a ledger column


def recorded(name: str) -> str:
    """A client's name for a field as the ledger's ``attempts`` and ``dropped`` columns hold
    it: a client chooses unknown keys' names, so the separators those columns use (``;``,
    ``,``, ``=``), quotes and control characters are percent-escaped, and it is cut short."""
    safe = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    return safe if len(safe) <= RECORDED_MAX else safe[:RECORDED_MAX] + "..."


def fit_route(request: ChatRequest, route: Route) -> Route:
    """The route's deployments that can serve ``request``, each with what it drops; the
    others are in ``Route.skipped``. A RequestError (400) naming the field and every
    deployment when none can."""
    kept: list[Target] = []
    skipped: list[Skipped] = []
    # OpenRouter's ``provider.require_parameters``: honour everything or do not serve.
    strict = request.routing.require_parameters
    for target in route.targets:
        found = gaps(request, target)
        drop = False if strict else target.drop_unsupported
        refused = tuple(g for g in found if g.paid or not g.allowed_by(drop))
        if refused:
            skipped.append(Skipped(target.label, target.provider.dialect, refused))
        else:
            kept.append(attrs.evolve(target, dropped=tuple(recorded(g.param) for g in found))
                        if found else target)
    if not kept:
        first = skipped[0].gaps[0]
        if first.paid:
            raise RequestError(
                f"'{first.param}' asks for {PAID[first.feature[5:]]}, which this gateway "
                "cannot bill (it charges by the token): not honoured by "
                + "; ".join(s.label for s in skipped)
                + ". Remove it, or ask the operator to allow it (allow_surcharges)",
                param=first.param)
        raise RequestError(
            f"'{first.param}' cannot be honoured by "
            + "; ".join(s.reason for s in skipped)
            + ": no equivalent in that API. Remove it, route to a deployment of the "
            "client's own dialect, or ask the operator to allow dropping it "
            "(drop_unsupported)", param=first.param)
    if not skipped and len(kept) == len(route.targets) and all(
            a is b for a, b in zip(kept, route.targets, strict=True)):
        return route  # every deployment honours all of it: the common case, unchanged
    why = tuple((s.label, s.why) for s in skipped)
    return attrs.evolve(route, targets=tuple(kept), skipped=route.skipped + why)
