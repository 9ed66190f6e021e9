"""The house's layering, checked on every module's imports (the source, parsed; nothing is run).

Every ``import`` counts, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING:``. The rules:

1. No import cycle among the gateway's modules.
2. The pure layers (``wire/``, ``routing/``, ``canonical.py``, ``tokens.py``, ``errors.py``
   and the money modules) import nothing that does I/O, directly or through another
   gateway module: no socket, event loop, driver or HTTP stack.
3. The arrows run down: nothing in ``http/``, ``relay/``, ``routing/``, ``accounts/``,
   ``store/``, ``limits/``, ``providers/`` or ``wire/`` imports the service or the
   composition root; only the CLI and the serving loop import ``app.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"

PURE = ("gateway.wire", "gateway.routing", "gateway.canonical", "gateway.tokens",
        "gateway.errors", "gateway.accounts.pricing", "gateway.relay.transcript")
# Modules (and third-party libraries) that do I/O: sockets, the event loop, drivers.
IO_LIBRARIES = ("trio", "socket", "select", "ssl", "selectors", "asyncio", "httptools", "h11",
                "httpx", "psycopg", "redis", "sqlite3", "quart", "quart_trio", "hypercorn",
                "urllib.request", "subprocess", "multiprocessing", "prometheus_client")
IO_MODULES = ("gateway.store", "gateway.limits", "gateway.providers", "gateway.serve",
              "gateway.http", "gateway.relay.nursery", "gateway.relay.attempts",
              "gateway.service", "gateway.app", "gateway.cli", "gateway.sim", "gateway.bench",
              "gateway.doctor", "gateway.observe.metrics", "gateway.observe.logs")
LOWER = ("gateway.http", "gateway.relay", "gateway.routing", "gateway.accounts",
         "gateway.store", "gateway.limits", "gateway.providers", "gateway.wire")


def _modules() -> dict[str, Path]:
    found = {}
    for path in GATEWAY.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@cache
def imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports, anywhere in its source (resolved, dotted)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            # ``from gateway.x import y`` imports the module gateway.x.y if there is one.
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in MODULES)
    return frozenset(found - {name})


def gateway_imports(name: str) -> set[str]:
    return {m for m in imports(name) if m in MODULES}


def reachable(name: str) -> Iterator[tuple[str, list[str]]]:
    """Every module ``name`` reaches through gateway imports, with one path to it."""
    seen = {name}
    todo = [(name, [name])]
    while todo:
        current, path = todo.pop()
        for other in sorted(imports(current)):
            if other in seen:
                continue
            seen.add(other)
            yield other, [*path, other]
            if other in MODULES:
                todo.append((other, [*path, other]))


def test_the_analysis_sees_the_tree() -> None:
    # A test that could not fail would be worthless: check it finds what is there.
    assert {"gateway.app", "gateway.wire.openai.render", "gateway.relay.exchange"} <= set(MODULES)
    assert "gateway.relay.exchange" in gateway_imports("gateway.relay.attempts")
    assert "trio" in imports("gateway.relay.nursery")


def test_there_is_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in gateway_imports(node):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, PURE)))
def test_a_pure_module_reaches_nothing_that_does_io(module: str) -> None:
    offending = [" -> ".join(path) for other, path in reachable(module)
                 if _under(other, IO_LIBRARIES) or _under(other, IO_MODULES)]
    assert offending == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, LOWER)))
def test_the_lower_layers_never_import_the_service_or_the_root(module: str) -> None:
    assert not gateway_imports(module) & {"gateway.service", "gateway.app", "gateway.cli"}


def test_only_the_cli_and_the_serving_loop_import_the_composition_root() -> None:
    importers = {m for m in MODULES if "gateway.app" in gateway_imports(m)}
    assert importers <= {"gateway.cli", "gateway.serve.server", "gateway.serve.workers",
                         "gateway.serve.preflight"}


def _cancels_without_a_reason(path: Path) -> Iterator[int]:
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "cancel" and not node.args and not node.keywords):
            yield node.lineno


def test_every_cancel_carries_a_reason() -> None:
    # trio >= 0.34 shows the reason in Cancelled's repr: a cancelled task explains itself
    # in a traceback or a log ("client disconnected", "hedge lost", "shutting down").
    bare = [f"{path.relative_to(ROOT)}:{line}" for path in sorted(MODULES.values())
            for line in _cancels_without_a_reason(path)]
    assert bare == []
