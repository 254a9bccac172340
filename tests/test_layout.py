"""The layers hold: torch and open_clip only in clipcls/engine/, typer only in clipcls/cli/, and
every module says its job in a docstring and stays small."""

import ast
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
