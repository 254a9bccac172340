"""A label run from Python: label_tree with any backend writes what `clipcls label` writes."""

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from clipcls.backends.base import BackendConfig, BaseBackend, Expected, open_backend
from clipcls.classify import Prediction
from clipcls.cli import app
from clipcls.labeling.options import LabelOptions
from clipcls.labeling.run import LabelEvents, label_tree
from clipcls.labeling.sorting import SortMode
from clipcls.labels import parse_labels
from clipcls.prompts import load_templates
from clipcls.settings import ModelSettings

LABELS = "cat,coffee,rocket"


def test_the_local_backend_writes_the_same_bytes_as_the_cli(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    (photos / "broken.jpg").write_bytes(b"GIF89a nonsense")
    by_cli = tmp_path / "cli.csv"
    args = ["label", str(photos), "-o", str(by_cli), "--labels", LABELS, "--top-k", "2"]
    args += ["--threshold", "0.4", "--model", tiny_model, "--templates", "photo", "--no-cache"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    by_api = tmp_path / "api.csv"
    backend = open_backend("local", BackendConfig(ModelSettings(model=tiny_model)))
    warnings: list[str] = []
    done = label_tree(
        [str(photos)],
        by_api,
        parse_labels(LABELS),
        load_templates("photo"),
        LabelOptions(top_k=2, threshold=0.4),
        backend,
        events=LabelEvents(warn=warnings.append),
    )
    assert by_api.read_bytes() == by_cli.read_bytes()
    assert done.started and done.summary.processed == 5 and done.summary.failures == 1
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]


class FakeBackend(BaseBackend):
    """Any embedding source is a backend: this one embeds each file as the axis whose index is
    its name's length, modulo the labels, and each label's prompts as the label's own axis."""

    weights = None
    model_id = "fake:v1"
    logit_scale, logit_bias, batch_size = 100.0, None, 32

    def __init__(self, n_labels: int = 3) -> None:
        super().__init__(BackendConfig())
        self.n_labels = n_labels
        self.expected: Expected | None = None

    def start(self, expected: Expected | None = None) -> None:
        self.expected = expected

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        each = len(texts) // self.n_labels  # label by label, as many prompts each
        return np.eye(self.n_labels, dtype=np.float32)[[i // each for i in range(len(texts))]]

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        for path in paths:
            axis = np.eye(self.n_labels, dtype=np.float32)[len(Path(path).name) % self.n_labels]
            yield Prediction(str(path), embedding=axis)


def test_any_backend_runs_a_label_job_that_sorts_and_resumes(photos: Path, tmp_path: Path) -> None:
    labels = parse_labels("a,b,c")
    out, sorted_into = tmp_path / "rows.jsonl", tmp_path / "sorted"
    options = LabelOptions(sort_into=sorted_into, mode=SortMode.COPY)
    backend = FakeBackend()
    done = label_tree([str(photos)], out, labels, load_templates("photo"), options, backend)

    assert backend.expected is not None and backend.expected.paths is not None
    names = sorted(p.name for p in photos.iterdir())
    assert sorted(Path(p).name for p in backend.expected.paths()) == names
    rows = out.read_text().splitlines()
    assert len(rows) == 4 and all('"model": "fake:v1"' in row for row in rows)
    for name in names:
        label = labels[len(name) % 3].name
        assert (sorted_into / label / name).read_bytes() == (photos / name).read_bytes()
    assert sum(done.summary.placed.values()) == 4

    resumed = FakeBackend()
    again = label_tree(
        [str(photos)], out, labels, load_templates("photo"), options, resumed, resume=True
    )
    assert again.started and again.summary.skipped == 4 and again.summary.processed == 0
    assert out.read_text().splitlines() == rows


def test_a_run_with_nothing_left_starts_no_backend(photos: Path, tmp_path: Path) -> None:
    labels, templates, out = parse_labels("a,b"), load_templates("photo"), tmp_path / "rows.csv"
    label_tree([str(photos)], out, labels, templates, LabelOptions(), FakeBackend(2))
    notices: list[str] = []
    idle = FakeBackend(2)
    again = label_tree(
        [str(photos)],
        out,
        labels,
        templates,
        LabelOptions(),
        idle,
        resume=True,
        events=LabelEvents(notice=notices.append),
    )
    assert not again.started and idle.expected is None
    assert notices == [f"nothing left to label: {out} holds every image found"]
