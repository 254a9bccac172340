"""The layers hold: torch and open_clip only in clipcls/engine/, typer only in clipcls/cli/, each
package imports only the packages the table below allows, no packages import each other in a
circle, every module says its job in a docstring and stays small, and outside clipcls/output/
no code asks which format it holds."""

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "clipcls"
MODULES = sorted(PACKAGE.rglob("*.py"))
RULES = {
    "torch": "engine",
    "open_clip": "engine",
    "torchvision": "engine",
    "safetensors": "engine",
    "typer": "cli",
}


# Which clipcls package may import which ("core" is the modules directly under clipcls/: the
# shared vocabulary of paths, images, prompts, the cache, the pipeline and the classifier).
# Data flows one way: the users of the library on top (cli, and server, which only cli starts)
# -> runs (labeling, evaluation, search) -> backends -> the model (engine) and the client of a
# server (client); output only writes rows. A package needs no entry for itself.
MAY_IMPORT = {
    # only where a model is loaded or named (engine.sources reads no torch), and the Python
    # API's Classifier (classify.py), which puts a model and a scorer together
    "core": {"engine", "scoring"},
    "engine": {"core"},
    "scoring": {"core"},  # how an embedding becomes an answer: numpy over embeddings, no model
    "output": {"core"},
    # the wire contract (a predict request carries the run's ScoreSpec); its connection is what
    # `search --server` loads before numpy or typer, and imports core alone
    "client": {"core", "scoring"},
    "backends": {"core", "engine", "output", "client", "scoring"},  # client: for ServerBackend
    "server": {"core", "engine", "output", "client", "backends", "fewshot", "scoring", "search"},
    "fewshot": {"core", "output", "scoring"},  # support folders and calibration files
    "multilabel": {"core", "output", "scoring"},  # truth CSVs, their metrics, the logistic fit
    "labeling": {"core", "output", "backends", "fewshot", "scoring"},
    "evaluation": {"core", "output", "backends", "fewshot", "multilabel", "scoring"},
    "review": {"core", "output", "labeling"},  # opening a review never loads a model
    "search": {"core", "output", "backends", "labeling", "scoring"},  # numpy over embeddings
    "cli": {
        "core",
        "engine",
        "output",
        "backends",
        "client",
        "server",
        "labeling",
        "evaluation",
        "fewshot",
        "review",
        "multilabel",
        "search",
        "scoring",
    },
}
# Modules a package must not import even where the table lets it into their package.
NEVER = {
    "engine": {"clipcls.classify", "clipcls.recorded"},  # the model knows nothing of scoring
}
ENTRY_POINTS = {"__main__.py"}  # `python -m clipcls` starts the command line


def package_of(module: str) -> str | None:
    """The clipcls package a dotted module name lies in ("core" for top-level modules)."""
    parts = module.split(".")
    if parts[0] != "clipcls" or len(parts) == 1:
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "core"


def clipcls_imports(path: Path) -> set[str]:
    """The clipcls modules the file imports, at any depth (`from clipcls import x` names x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("clipcls")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "clipcls":
                found |= {f"clipcls.{alias.name}" for alias in node.names}
            elif node.module.startswith("clipcls."):
                found.add(node.module)
    return found


def refused(package: str, modules: Iterable[str]) -> list[str]:
    """The imports of a module of package that the table (or NEVER) refuses."""
    return [
        f"{package} imports {module}"
        for module in sorted(modules)
        if package_of(module) not in (None, package, *MAY_IMPORT[package])
        or module in NEVER.get(package, set())
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_packages_import_only_what_the_table_allows(path: Path) -> None:
    parts = path.relative_to(PACKAGE).parts
    if parts[-1] in ENTRY_POINTS:
        return
    package = parts[0] if len(parts) > 1 else "core"
    assert refused(package, clipcls_imports(path)) == []


def test_a_planted_import_against_the_table_is_refused() -> None:
    assert refused("backends", {"clipcls.client.wire", "clipcls.server.app"}) == [
        "backends imports clipcls.server.app"
    ]
    assert refused("client", {"clipcls.backends.base"}) == ["client imports clipcls.backends.base"]
    assert refused("search", {"clipcls.server.searching"}) != []
    assert refused("engine", {"clipcls.classify"}) != []  # NEVER, though core is allowed


def test_the_server_is_on_top_and_its_client_below_the_backends() -> None:
    """Only the command line starts a server: nothing else may import it; the client (which
    the backends use) imports nothing but core, so no run depends on the server's package."""
    assert {package for package, allowed in MAY_IMPORT.items() if "server" in allowed} == {"cli"}
    assert not MAY_IMPORT["client"] & {"backends", "server", "cli"}
    assert "client" in MAY_IMPORT["backends"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_inside_imports_the_public_facade(path: Path) -> None:
    """`from clipcls import X` would load clipcls/__init__.py's whole API (the classifier, the
    cache, ...); inside the package each name comes from its own module."""
    if path.parent == PACKAGE and path.name == "__init__.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    facade = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "clipcls"]
    assert not facade, "import from the module that defines the name, not from clipcls"


def test_every_package_has_a_row_in_the_table() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages | {"core"} == set(MAY_IMPORT)


def imported(path: Path) -> set[str]:
    """Top-level names of every module the file imports, at any depth of the code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_heavy_and_cli_imports_stay_in_their_package(path: Path) -> None:
    package = path.relative_to(PACKAGE).parts[0]
    for name in imported(path):
        if name in RULES:
            assert package == RULES[name], f"{name} imported outside clipcls/{RULES[name]}/"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_say_their_job_and_stay_small(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name != "__main__.py":
        assert ast.get_docstring(tree), "no docstring saying the module's job"
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 340


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand: one left out installs without it (an editable
    install still finds it, so only a clean `pip install .` would fail)."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        "clipcls" + "".join(f".{part}" for part in init.parent.relative_to(PACKAGE).parts)
        for init in PACKAGE.rglob("__init__.py")
    }
    assert found - listed == set()
    assert set(config["tool"]["setuptools"]["package-dir"]) >= found


SWITCH_OPERATORS = (ast.Is, ast.IsNot, ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _names_a_format(node: ast.expr) -> bool:
    """`Format.CSV`, or a tuple/list/set literal holding one."""
    if isinstance(node, ast.Attribute):
        return isinstance(node.value, ast.Name) and node.value.id == "Format"
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_format(element) for element in node.elts)
    return False


def format_switches(source: str) -> list[int]:
    """Lines that ask which format a value is (`kind is Format.CSV`, `kind in (Format.CSV, ...)`)
    rather than what it can do: outside clipcls/output/, a format is asked, never named."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            switches = any(isinstance(op, SWITCH_OPERATORS) for op in node.ops)
            if switches and any(_names_a_format(operand) for operand in operands):
                found.append(node.lineno)
    return found


def test_format_switches_are_found() -> None:
    planted = (
        "if kind is Format.CSV:\n    pass\n"
        "ok = kind is not Format.JSONL\n"
        "ok = kind in (Format.CSV, Format.JSONL)\n"
        "ok = Format.PARQUET == kind\n"
        "writer = Format.CSV.writer(stream, columns)\n"  # using one by name is no switch
        "table = {Format.CSV: write}\n"
        "ok = kind.resumable and kind in WRITERS\n"
    )
    assert format_switches(planted) == [1, 3, 4, 5]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_format_switch_outside_the_format_objects(path: Path) -> None:
    if path.relative_to(PACKAGE).parts[0] == "output":
        return
    lines = format_switches(path.read_text(encoding="utf-8"))
    assert not lines, f"lines {lines} ask which format it is: ask the Format what it can do"


def test_the_architecture_page_shows_this_table() -> None:
    """docs/architecture.md's "may import" table is MAY_IMPORT, so the page a contributor
    reads first cannot drift from the rules the tests hold."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("| package | may import |") :].split("\n\n")[0].splitlines()[2:]
    shown = {}
    for line in table:
        package, allowed = (cell.strip() for cell in line.strip("|").split("|"))
        shown[package] = set(allowed.split(" (")[0].split(", "))
    assert shown == MAY_IMPORT


COMMANDS = ("label", "predict", "evaluate", "search", "dedupe", "review", "serve", "models")
COMMANDS += ("models_export", "templates", "cache", "doctor")


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_stay_thin(name: str) -> None:
    """A command parses, calls one library function and prints: its loops and checks live in
    the library, so its module stays within 160 lines."""
    assert len((PACKAGE / "cli" / f"{name}.py").read_text(encoding="utf-8").splitlines()) <= 160
