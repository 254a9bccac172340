"""One model factory: engine/factory.py's open_model is the only way a model is built outside
clipcls/engine/, and its registry of runtimes picks the one the settings name."""

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

from clipcls.engine.factory import RUNTIMES, open_model
from clipcls.engine.runtimes import choose_runtime
from clipcls.errors import UsageError
from clipcls.pipeline import EmbedPlan, ModelInfo
from clipcls.settings import ModelSettings

PACKAGE = REPO / "clipcls"
OUTSIDE_ENGINE = sorted(p for p in PACKAGE.rglob("*.py") if "engine" not in p.parts)
# The classes the registry builds: what only the factory may name.
RUNTIME_CLASSES = {target.partition(":")[2] for target in RUNTIMES.values()}


def runtime_references(source: str, names: set[str]) -> list[int]:
    """Lines of source that import, call or otherwise name one of the runtime classes."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom | ast.Import):
            named = {alias.name.rpartition(".")[2] for alias in node.names}
        elif isinstance(node, ast.Name):
            named = {node.id}
        elif isinstance(node, ast.Attribute):
            named = {node.attr}
        else:
            continue
        if named & names:
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize("path", OUTSIDE_ENGINE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_factory_builds_a_model(path: Path) -> None:
    found = runtime_references(path.read_text(encoding="utf-8"), RUNTIME_CLASSES)
    assert not found, f"lines {found} name {RUNTIME_CLASSES}: ask engine.factory.open_model"


@pytest.mark.parametrize(
    "source",
    [
        "from clipcls.engine.model import ClipModel\nmodel = ClipModel(settings)\n",
        "import clipcls.engine.model as engine\nmodel = engine.ClipModel(settings)\n",
        "def load(settings):\n    from clipcls.engine import model\n"
        "    return model.ClipModel(settings)\n",
    ],
)
def test_the_check_catches_a_planted_construction(source: str) -> None:
    assert runtime_references(source, {"ClipModel"})


def test_the_check_passes_the_factory_and_prose() -> None:
    source = (
        '"""Stands in for ClipModel."""\n'
        "from clipcls.engine.factory import open_model\n"
        "model = open_model(settings)  # a ClipModel today\n"
    )
    assert runtime_references(source, {"ClipModel"}) == []


def test_an_unknown_runtime_is_one_usage_line_naming_the_choices() -> None:
    with pytest.raises(UsageError) as raised:
        open_model(ModelSettings(runtime="tensorrt"))
    message = str(raised.value)
    assert "\n" not in message
    assert "'tensorrt'" in message
    assert all(name in message for name in RUNTIMES)


def test_auto_is_the_default_runtime_and_is_torch_without_an_export(tmp_path: Path) -> None:
    settings = ModelSettings(cache_dir=tmp_path, device="cpu")
    assert settings.runtime == "auto"
    assert choose_runtime(settings) == "torch"
    assert RUNTIMES["torch"] == "clipcls.engine.model:ClipModel"
    assert RUNTIMES["onnx"] == "clipcls.engine.onnx_model:OnnxModel"


@dataclass
class EchoModel:
    """A second runtime as a test registers one: it keeps the settings it was opened with."""

    settings: ModelSettings
    plan: EmbedPlan = field(default_factory=EmbedPlan)
    info: ModelInfo = field(default_factory=lambda: ModelInfo("echo", None, "cpu", "fp32"))
    logit_scale: float = 100.0
    logit_bias: float | None = None
    weights: str = "echo"


def test_a_second_runtime_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, "echo", f"{__name__}:EchoModel")
    settings = ModelSettings(model="ViT-B-32", runtime="echo")
    opened = open_model(settings)
    assert isinstance(opened, EchoModel)
    assert opened.settings is settings
