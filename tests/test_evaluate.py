"""`clipcls evaluate`: metrics equal scikit-learn's, predictions equal open_clip's, reports work."""

import csv
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.evaluation.dataset import class_labels, folder_text, load_dataset
from clipcls.evaluation.metrics import compute_metrics

runner = CliRunner()
REPORT_KEYS = {
    "top1",
    "top5",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "n_images",
    "n_failed",
    "classes",
    "per_class",
    "confusion_matrix",
    "model",
    "pretrained",
    "templates",
    "classnames",
    "calibration",
}


def evaluate(model: str, *args: str):
    return runner.invoke(app, ["evaluate", *args, "--model", model, "-q"])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Three classes of real photos, one unreadable file, and a class with no images."""
    root = tmp_path / "dataset"
    layout = {
        "cat": ["chelsea.png", "grace_hopper.jpg"],
        "coffee_cup": ["coffee.png"],
        "space-rocket": ["rocket.jpg", "astronaut.png", "hubble_deep_field.jpg"],
        "zebra": [],
    }
    for folder, names in layout.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(SAMPLE_IMAGES / name, root / folder / name)
    (root / "cat" / "nested").mkdir()
    shutil.copy(SAMPLE_IMAGES / "coins.png", root / "cat" / "nested" / "coins.png")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def test_metrics_equal_scikit_learn_on_awkward_predictions() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    for _ in range(200):
        n_classes = int(rng.integers(2, 9))
        y_true = rng.integers(0, n_classes, size=int(rng.integers(1, 50)))
        y_true[y_true == n_classes - 1] = 0  # a class with no images
        scores = rng.normal(size=(len(y_true), n_classes))
        scores[:, 1] -= 5  # a class (almost) never predicted
        got = compute_metrics(y_true, scores, n_classes, ks=(2, 5))
        y_pred = scores.argmax(axis=1)
        labels = list(range(n_classes))
        kwargs = {"labels": labels, "zero_division": np.nan}
        per_class = sklearn.precision_recall_fscore_support(y_true, y_pred, average=None, **kwargs)
        macro = sklearn.precision_recall_fscore_support(y_true, y_pred, average="macro", **kwargs)

        def same(a: float | None, b: float) -> bool:
            return np.isnan(b) if a is None else a == pytest.approx(b, abs=1e-12)

        for i, metrics in enumerate(got.per_class):
            assert same(metrics.precision, per_class[0][i])
            assert same(metrics.recall, per_class[1][i])
            assert same(metrics.f1, per_class[2][i])
            assert metrics.support == per_class[3][i]
        assert same(got.macro_precision, macro[0]) and same(got.macro_recall, macro[1])
        assert same(got.macro_f1, macro[2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns about classes with no images
            balanced = sklearn.balanced_accuracy_score(y_true, y_pred)
        assert same(got.balanced_accuracy, balanced)
        assert got.top1 == pytest.approx(sklearn.accuracy_score(y_true, y_pred))
        assert (
            got.confusion_matrix == sklearn.confusion_matrix(y_true, y_pred, labels=labels)
        ).all()
        for k in (2, 5):
            if k < n_classes:
                want = sklearn.top_k_accuracy_score(y_true, scores, k=k, labels=labels)
                assert got.top_k[k] == pytest.approx(want)
            elif k == n_classes:
                assert got.top_k[k] == 1.0  # every class is in the top k
            else:
                assert got.top_k[k] is None


def test_dataset_classes_are_sorted_subfolders_with_images_found_recursively(dataset: Path) -> None:
    found = load_dataset(dataset)
    assert found.classes == ("cat", "coffee_cup", "space-rocket", "zebra")
    by_class = {
        c: sorted(
            p.name for p, t in zip(found.paths, found.targets, strict=True) if found.classes[t] == c
        )
        for c in found.classes
    }
    assert by_class["cat"] == ["broken.jpg", "chelsea.png", "coins.png", "grace_hopper.jpg"]
    assert by_class["zebra"] == []
    assert (
        folder_text("space-rocket") == "space rocket" and folder_text("coffee_cup") == "coffee cup"
    )


def test_max_per_class_is_a_seeded_sample(dataset: Path) -> None:
    first = load_dataset(dataset, max_per_class=2, seed=1)
    assert first == load_dataset(dataset, max_per_class=2, seed=1)
    counts = {c: sum(1 for t in first.targets if first.classes[t] == c) for c in first.classes}
    assert counts == {"cat": 2, "coffee_cup": 1, "space-rocket": 2, "zebra": 0}
    others = {load_dataset(dataset, max_per_class=2, seed=s).paths for s in range(10)}
    assert len(others) > 1


def test_classnames_file_gives_texts_and_catches_typos(dataset: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("cat: cat | kitten\nspace-rocket: a rocket | a launch\n")
    labels = class_labels(load_dataset(dataset).classes, names)
    assert [(label.name, label.texts) for label in labels] == [
        ("cat", ("cat", "kitten")),
        ("coffee_cup", ("coffee cup",)),
        ("space-rocket", ("a rocket", "a launch")),
        ("zebra", ("zebra",)),
    ]
    names.write_text("dog: dog\n")
    with pytest.raises(UsageError, match="names folders that do not exist: dog"):
        class_labels(load_dataset(dataset).classes, names)


def test_json_report_has_exactly_the_documented_keys(tiny_model: str, dataset: Path) -> None:
    result = evaluate(tiny_model, str(dataset), "--templates", "photo", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert report["classes"] == ["cat", "coffee_cup", "space-rocket", "zebra"]
    assert report["n_images"] == 7 and report["n_failed"] == 1
    assert report["top5"] is None  # 4 classes
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 7
    assert [report["per_class"][c]["support"] for c in report["classes"]] == [3, 1, 3, 0]
    assert report["per_class"]["zebra"]["recall"] is None
    assert report["model"] == tiny_model and report["pretrained"] is None
    assert report["templates"] == {"name": "photo", "templates": ["a photo of a {}."]}
    assert report["classnames"]["space-rocket"] == ["space rocket"]
    assert "broken.jpg" in result.stderr  # unreadable files are listed, not dropped


def test_predictions_equal_open_clips_pipeline(
    tiny_model: str, dataset: Path, tmp_path: Path
) -> None:
    from test_model import open_clip_reference

    out = tmp_path / "predictions.csv"
    result = evaluate(
        tiny_model,
        str(dataset),
        "--templates",
        "simple",
        "--predictions",
        str(out),
        "--format",
        "json",
        "--precision",
        "fp32",
        "--exact-decode",
    )
    assert result.exit_code == 0
    rows = list(csv.DictReader(out.open(newline="")))
    readable = [r for r in rows if not r["error"]]
    classes = ["cat", "coffee cup", "space rocket", "zebra"]
    templates = [
        line
        for line in (Path(__file__).parent.parent / "prompts" / "simple.txt")
        .read_text()
        .splitlines()
        if line and not line.startswith("#")
    ]
    probabilities, _ = open_clip_reference(
        tiny_model, [Path(r["path"]) for r in readable], classes, templates
    )
    folders = json.loads(result.stdout)["classes"]
    for row, probs in zip(readable, probabilities, strict=True):
        assert row["predicted_class"] == folders[int(probs.argmax())]
        assert float(row["probability"]) == pytest.approx(float(probs.max()), abs=1e-5)
        assert row["correct"] == str(row["true_class"] == row["predicted_class"]).lower()
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["true_class"] == "cat"
    top1 = json.loads(result.stdout)["top1"]
    assert top1 == pytest.approx(sum(r["correct"] == "true" for r in readable) / 7, abs=1e-6)


def test_comparing_templates_encodes_the_images_once(
    tiny_model: str, dataset: Path, monkeypatch
) -> None:
    from clipcls.engine.model import ClipModel

    images_encoded: list[int] = []
    original = ClipModel.encode_prepared

    def counting(self, prepared):
        images_encoded.append(len(prepared))
        return original(self, prepared)

    monkeypatch.setattr(ClipModel, "encode_prepared", counting)
    result = evaluate(
        tiny_model,
        str(dataset),
        "-t",
        "photo",
        "-t",
        "simple",
        "--template",
        "art of a {}.",
        "--format",
        "json",
    )
    assert result.exit_code == 0
    reports = json.loads(result.stdout)
    assert [r["templates"]["name"] for r in reports] == ["photo", "simple", "custom"]
    assert sum(images_encoded) == 7
    table = evaluate(tiny_model, str(dataset), "-t", "photo", "-t", "simple")
    assert "photo" in table.stdout and "simple" in table.stdout and "top-1" in table.stdout


def test_comparing_models(tiny_model: str, tiny_biased_model: str, dataset: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(dataset),
            "-m",
            tiny_model,
            "-m",
            tiny_biased_model,
            "-t",
            "photo",
            "-f",
            "json",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [r["model"] for r in json.loads(result.stdout)] == [tiny_model, tiny_biased_model]


def test_terminal_output_for_few_and_many_classes(
    tiny_model: str, tmp_path: Path, dataset: Path
) -> None:
    few = evaluate(tiny_model, str(dataset), "-t", "photo")
    assert "confusion matrix" in few.stdout and "balanced accuracy" in few.stdout
    many = tmp_path / "many"
    for i in range(30):
        (many / f"class_{i:02d}").mkdir(parents=True)
        Image.new("RGB", (40, 40), (i * 8, 255 - i * 8, 100)).save(
            many / f"class_{i:02d}" / "a.png"
        )
    result = evaluate(tiny_model, str(many), "-t", "photo", "--top-k", "3", "--top-k", "5")
    assert result.exit_code == 0
    assert "most frequent confusions" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100
    assert "top-3 accuracy" in result.stdout


def test_bad_datasets_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "flat")])
    assert result.exit_code == 2 and "no class folders" in result.stderr
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no images found" in result.stderr
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_html_report_is_self_contained(tiny_model: str, dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = evaluate(
        tiny_model, str(dataset), "-t", "photo", "--report", str(tmp_path / "rep.html")
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "rep.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3  # heat map, per-class bars, reliability
    assert "data:image/jpeg;base64," in page  # misclassified thumbnails
    assert "http://" not in page and "https://" not in page
    assert "broken.jpg" in page  # the unreadable file is listed


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(
    tiny_model: str, dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    assert (
        evaluate(
            tiny_model, str(dataset), "-t", "photo", "--report", str(tmp_path / "rep.html")
        ).exit_code
        == 0
    )
    script = Path(__file__).parent / "render_report.sh"
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["bash", str(script), str(tmp_path / "rep.html"), str(shot)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (pixels[..., 2] > pixels[..., 0] + 60).mean()  # the heat map's blues
    assert blue > 0.005
    assert (pixels.sum(axis=2) < 600).mean() > 0.05  # far from a blank page
