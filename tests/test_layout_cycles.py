"""No circles of imports: none between packages (the client below the backends, the server on
top), none among the modules of one package; one cycle finder, tried on planted circles."""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from conftest import REPO
from test_layout import MODULES, PACKAGE, clipcls_imports, package_of


def node_of(module: str) -> str | None:
    """Where a dotted module lies in the package graph: its package, or for a module directly
    under clipcls/ the module itself (core is a set of modules, not one package: recorded.py
    names engine's model sources and engine reads settings.py, and that is no circle)."""
    package = package_of(module)
    return f"core.{module.split('.')[1]}" if package == "core" else package


def import_graph(modules: Iterable[Path] = MODULES) -> dict[str, set[str]]:
    """Which node imports which (each module's imports at any depth, lazy ones included)."""
    graph: dict[str, set[str]] = {}
    for path in modules:
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        source = node_of(".".join(("clipcls", *parts)))
        assert source is not None
        targets = {node_of(module) for module in clipcls_imports(path)}
        graph.setdefault(source, set()).update(t for t in targets if t not in (None, source))
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A circle of imports, its first node repeated at its end; None if there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    return next(filter(None, (visit(node) for node in sorted(graph))), None)


def test_no_packages_import_each_other_in_a_circle() -> None:
    assert find_cycle(import_graph()) is None


def test_a_planted_circle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    assert find_cycle(planted) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    # the old circle: the backends' client lived in the server's package, which imports them
    planted = import_graph()
    planted["backends"].add("server")
    cycle = find_cycle(planted)
    assert cycle is not None and {"backends", "server"} <= set(cycle)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_NAMES = {module_name(path) for path in MODULES}


def load_time_imports(path: Path) -> set[str]:
    """The clipcls modules a file imports as it loads, `if TYPE_CHECKING:` blocks included (a
    function's own imports run later): `from a.b import c` names a.b.c where that is a module."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        for node in ast.iter_child_nodes(pending.pop()):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    found.add(inner if inner in MODULE_NAMES else node.module)
            pending.append(node)
    return found & MODULE_NAMES


def test_no_import_circle_among_the_modules_of_a_package() -> None:
    """A circle inside a package (even one only type checking follows) means two modules
    are one job split in two, or a third module is missing below both."""
    graph = {module_name(path): load_time_imports(path) for path in MODULES}
    inside = {
        module: {other for other in imported if package_of(other) == package_of(module)}
        for module, imported in graph.items()
    }
    assert find_cycle(inside) is None
