"""An evaluation from Python: any backend runs it (the local one, or a stand-in), and the local
one gives the numbers the CLI's JSON report gives."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from conftest import class_folders
from typer.testing import CliRunner

from clipcls.backends.base import BackendConfig, BaseBackend, Expected, Hooks, open_backend
from clipcls.backends.local import LocalBackend
from clipcls.cache import EmbeddingCache
from clipcls.classify import Prediction
from clipcls.cli import app
from clipcls.engine.hardware import pick_precision
from clipcls.evaluation.exports import json_document
from clipcls.evaluation.run import EvaluationRun, run_evaluation
from clipcls.pipeline import ModelInfo
from clipcls.prompts import load_templates, single_templates
from clipcls.settings import ModelSettings, Precision

runner = CliRunner()


def test_a_local_evaluation_from_python_matches_the_cli_report(
    tiny_model: str, tmp_path: Path
) -> None:
    data = class_folders(tmp_path / "data")
    (data / "cat" / "broken.png").write_bytes(b"not an image")
    args = ["evaluate", str(data), "--model", tiny_model, "-t", "simple", "--template", "a {}"]
    cli = runner.invoke(app, [*args, "-f", "json", "-q", "--no-cache"])
    assert cli.exit_code == 0, cli.output

    sets = (load_templates("simple"), single_templates(["a {}"]))
    run = EvaluationRun.from_folder(data, sets)
    notes: list[str] = []
    config = BackendConfig(ModelSettings(model=tiny_model), hooks=Hooks(notice=notes.append))
    evaluations = run_evaluation([open_backend("local", config)], run)

    assert json_document(evaluations) + "\n" == cli.stdout
    assert [e.templates.name for e in evaluations] == ["simple", "custom"]
    # auto precision: bf16 where the CPU has fast bf16 (AMX), else fp32
    assert notes == [f"model {tiny_model} on cpu, {pick_precision(Precision.AUTO, 'cpu')}"]
    assert [path for path, _, _ in evaluations[0].data.failures] == [str(data / "cat/broken.png")]


def test_a_cached_run_needs_no_model_even_with_an_unreadable_file(
    tiny_model: str, tmp_path: Path
) -> None:
    data = class_folders(tmp_path / "data", per_class=1)
    (data / "coffee" / "broken.png").write_bytes(b"not an image")
    run = EvaluationRun.from_folder(data)
    config = BackendConfig(ModelSettings(model=tiny_model), EmbeddingCache(tmp_path / "cache"))
    first, second = LocalBackend(config), LocalBackend(config)
    before = run_evaluation([first], run)
    after = run_evaluation([second], run)
    assert first.loaded and not second.loaded
    assert json_document(after) == json_document(before)


class Folders(BaseBackend):
    """A stand-in backend: each image's embedding is its class folder's axis, each label's
    weights its own axis; `bad.png` cannot be read."""

    name = "folders"
    weights = None

    def __init__(self, classes: Sequence[str], model: str, events: list[str]) -> None:
        super().__init__(BackendConfig())
        self.axes = {
            name: np.eye(len(classes), dtype=np.float32)[i] for i, name in enumerate(classes)
        }
        self.info = ModelInfo(model, None, "nowhere", "fp32")
        self.model_id = model
        self.events = events

    def start(self, expected: Expected | None = None) -> None:
        assert expected is not None and expected.labels[0].name == "cat"
        self.events.append(f"start {self.model_id}")

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        for path in map(Path, paths):
            if path.name == "bad.png":
                yield Prediction(str(path), error=f"not a readable image: {path}")
            else:
                yield Prediction(str(path), embedding=self.axes[path.parent.name])

    def predict(self, *args: object, **kwargs: object) -> Iterator[Prediction]:
        raise AssertionError("an evaluation embeds, then scores here")

    logit_scale, logit_bias = 100.0, None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Each prompt as the axis of the class it names: a label's weights are its axis."""
        return np.stack([next(v for k, v in self.axes.items() if k in t) for t in texts])


def test_any_backend_runs_an_evaluation(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "data")
    bad = data / "rocket" / "bad.png"
    bad.write_bytes(b"")
    sets = (load_templates("simple"), load_templates("photo"))
    run = EvaluationRun.from_folder(data, sets, ks=(2,))
    events: list[str] = []

    def backends() -> Iterator[Folders]:  # each opened when its turn comes
        for model in ("first", "second"):
            events.append(f"open {model}")
            yield Folders(run.dataset.classes, model, events)

    @contextmanager
    def progress(total: int) -> Iterator[Callable[[int], None]]:
        events.append(f"embed {total}")
        yield lambda done: events.append(f"+{done}")

    evaluations = run_evaluation(backends(), run, progress=progress)

    names = ["first / simple", "first / photo", "second / simple", "second / photo"]
    assert [e.name for e in evaluations] == names
    for evaluation in evaluations:
        assert evaluation.metrics.top1 == 1.0 and evaluation.metrics.top_k == {2: 1.0}
        assert evaluation.data.failures == [(str(bad), 2, f"not a readable image: {bad}")]
    each = ["embed 7", *["+1"] * 7]  # 6 readable images and bad.png, each counted once
    assert events == ["open first", "start first", *each, "open second", "start second", *each]
