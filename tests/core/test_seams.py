"""The seams between the parts of crmsync, read from the source: what each part may import.

The engine knows neither SQL nor HTTP, adapters never touch the database, the router's module needs no
SQLAlchemy of its own, and no two modules import each other in a circle. Imports under
``TYPE_CHECKING`` are annotations only and do not count; imports inside functions are deliberate late
loads and count for the layer rules but not for circles (they run after both modules exist).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["crmsync_core", "crmsync_brevo", "crmsync_hubspot", "crmsync_mautic", "crmsync_n8n"]


@dataclass(frozen=True)
class Import:
    target: str
    #: at module level, not under ``if TYPE_CHECKING``: runs when the module is imported
    eager: bool
    #: under ``if TYPE_CHECKING``: never runs
    typing_only: bool


def _module_name(path: Path, package: str) -> str:
    parts = path.relative_to(ROOT / package / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    # `from . import x` may name a submodule: count both the package and the submodule.
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imports(path: Path, module: str) -> list[Import]:
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, eager=False, typing_only=True)
                for stmt in child.orelse:
                    visit_stmt(stmt, eager, typing_only)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, eager=False, typing_only=typing_only)
            else:
                visit_stmt(child, eager, typing_only)

    def visit_stmt(node: ast.AST, eager: bool, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, eager, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend(Import(t, eager, typing_only) for t in _resolve(module, is_package, node))
        else:
            visit(node, eager, typing_only)

    visit(tree, eager=True, typing_only=False)
    return found


def _graph() -> dict[str, list[Import]]:
    graph: dict[str, list[Import]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package / "src").rglob("*.py")):
            name = _module_name(path, package)
            graph[name] = _imports(path, name)
    return graph


GRAPH = _graph()


def _runtime_targets(module: str) -> set[str]:
    return {i.target for i in GRAPH[module] if not i.typing_only}


def _touches(targets: set[str], forbidden: str) -> list[str]:
    return sorted(t for t in targets if t == forbidden or t.startswith(forbidden + "."))


def test_the_graph_covers_every_package() -> None:
    assert {"crmsync_core.engine", "crmsync_core.store", "crmsync_core.web"} <= set(GRAPH)
    assert {f"{p}.adapter" for p in PACKAGES[1:]} <= set(GRAPH)


@pytest.mark.parametrize(
    "forbidden", ["sqlalchemy", "httpx", "crmsync_core.store", "crmsync_core.http"]
)
def test_the_engine_knows_neither_sql_nor_http(forbidden: str) -> None:
    assert _touches(_runtime_targets("crmsync_core.engine"), forbidden) == []


def test_the_router_module_needs_no_sqlalchemy_at_runtime() -> None:
    assert _touches(_runtime_targets("crmsync_core.web"), "sqlalchemy") == []


@pytest.mark.parametrize("module", ["crmsync_core.status_page", "crmsync_core.status_html"])
@pytest.mark.parametrize("forbidden", ["sqlalchemy", "crmsync_core.store"])
def test_the_status_page_asks_the_store_and_holds_no_sql(module: str, forbidden: str) -> None:
    assert _touches(_runtime_targets(module), forbidden) == []


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_adapters_never_touch_the_database(package: str) -> None:
    modules = [m for m in GRAPH if m.startswith(package + ".")]
    assert modules
    for module in modules:
        targets = _runtime_targets(module)
        for forbidden in ("sqlalchemy", "crmsync_core.store", "psycopg", "asyncpg"):
            assert _touches(targets, forbidden) == [], module


def test_the_queue_protocol_module_is_free_of_sql() -> None:
    targets = _runtime_targets("crmsync_core.queue")
    assert _touches(targets, "sqlalchemy") == []
    assert _touches(targets, "crmsync_core.store") == []


def _cycles() -> list[list[str]]:
    edges = {
        module: sorted({i.target for i in imports if i.eager} & set(GRAPH) - {module})
        for module, imports in GRAPH.items()
    }
    # A package's __init__ importing its own submodules is how packages are built, not a circle.
    for module, targets in edges.items():
        edges[module] = [t for t in targets if not t.startswith(module + ".")]
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    return cycles


def test_no_module_imports_another_in_a_circle() -> None:
    assert _cycles() == []


def test_the_circle_finder_finds_a_circle() -> None:
    # The check above must be able to fail: two modules importing each other are reported.
    saved = dict(GRAPH)
    try:
        GRAPH["crmsync_core.a_test_only"] = [Import("crmsync_core.b_test_only", True, False)]
        GRAPH["crmsync_core.b_test_only"] = [Import("crmsync_core.a_test_only", True, False)]
        assert _cycles() == [
            ["crmsync_core.a_test_only", "crmsync_core.b_test_only", "crmsync_core.a_test_only"]
        ]
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
