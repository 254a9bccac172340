"""--from-embeddings re-scores the image embeddings a `label --save-embeddings` run saved, with
new labels, reading no image: rows byte-identical to a local run; prompts already cached need no
model at all; embeddings of another model, or a file without them, are refused in one line."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import class_folders, write_tiny_model
from typer.testing import CliRunner

from clipcls.backends.base import BackendConfig
from clipcls.backends.saved import SavedEmbeddingsBackend
from clipcls.cli import app
from clipcls.settings import ModelSettings

runner = CliRunner()
SAVED = ("cat", "coffee", "rocket")
NEW = "dog,tea cup,space ship"


def clipcls(*args: str, ok: bool = True):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.stderr
    return result


class NoModel:
    """Stands in for ClipModel: a run that tries to load the model fails the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")


def save_run(model: str, photos: Path, out: Path) -> Path:
    clipcls(
        "label",
        str(photos),
        "-o",
        str(out),
        "--save-embeddings",
        "--model",
        model,
        "--labels",
        ",".join(SAVED),
        "-q",
    )
    return out


@pytest.fixture
def photos_with_a_broken_file(photos: Path) -> Path:
    (photos / "broken.png").write_bytes(b"not an image")
    return photos


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_label_rows_match_a_local_run_without_reading_an_image(
    tiny_model: str,
    photos_with_a_broken_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    photos = photos_with_a_broken_file
    saved = save_run(tiny_model, photos, tmp_path / f"run{suffix}")
    common = ("--model", tiny_model, "-k", "2", "-q")
    clipcls("label", str(photos), "-o", str(tmp_path / "local.csv"), "--labels", NEW, *common)
    uncached = ("--labels", "bird,tree,car")  # never embedded: the text tower must run
    clipcls(
        "label", str(photos), "-o", str(tmp_path / "local2.csv"), *uncached, *common, "--no-cache"
    )
    shutil.rmtree(photos)  # no image can be read from here on

    clipcls(
        "label",
        "--from-embeddings",
        str(saved),
        "-o",
        str(tmp_path / "new2.csv"),
        *uncached,
        *common,
    )
    assert (tmp_path / "new2.csv").read_bytes() == (tmp_path / "local2.csv").read_bytes()

    monkeypatch.setattr("clipcls.engine.model.ClipModel", NoModel)  # every prompt is cached
    out = tmp_path / "new.csv"
    clipcls("label", "--from-embeddings", str(saved), "-o", str(out), "--labels", NEW, *common)
    assert out.read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert "not a readable image" in out.read_text()  # the saved error row stays an error


def test_predict_matches_a_local_run(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    args = ("--labels", NEW, "--model", tiny_model, "-f", "jsonl", "-q")
    local = clipcls("predict", str(photos), *args).stdout
    shutil.rmtree(photos)
    again = clipcls("predict", "--from-embeddings", str(saved), *args).stdout
    assert again == local and len(again.splitlines()) == 4


def test_evaluate_matches_a_local_run(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = class_folders(tmp_path / "data")
    saved = save_run(tiny_model, data, tmp_path / "run.jsonl")
    args = ("evaluate", str(data), "-m", tiny_model, "-f", "json", "-q")
    local = json.loads(clipcls(*args).stdout)
    for image in data.rglob("*.png"):  # the classes and targets stay; no image can be decoded
        image.write_bytes(b"not an image any more")
    monkeypatch.setattr("clipcls.engine.model.ClipModel", NoModel)
    assert json.loads(clipcls(*args, "--from-embeddings", str(saved)).stdout) == local


def test_a_file_not_in_the_saved_run_is_an_error_row(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    config = BackendConfig(settings=ModelSettings(model=tiny_model), embeddings=saved)
    backend = SavedEmbeddingsBackend(config)
    assert backend.paths == sorted(str(p) for p in photos.iterdir())
    found = list(backend.embed_images([photos / "chelsea.png", tmp_path / "elsewhere.png"]))
    assert found[0].embedding is not None and found[0].error is None
    assert found[1].embedding is None and "has no embedding in" in str(found[1].error)


def test_sorting_places_the_files_that_exist(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    sorted_into = tmp_path / "sorted"
    clipcls(
        "label",
        "--from-embeddings",
        str(saved),
        "-o",
        str(tmp_path / "s.csv"),
        "--labels",
        NEW,
        "--model",
        tiny_model,
        "--sort-into",
        str(sorted_into),
        "-q",
    )
    placed = sorted(p.name for p in sorted_into.rglob("*.*") if p.parent != sorted_into)
    assert placed == sorted(p.name for p in photos.iterdir())


def test_another_models_embeddings_are_refused(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    other = f"local-dir:{write_tiny_model(tmp_path / 'other', seed=7)}"
    args = (
        "label",
        "--from-embeddings",
        str(saved),
        "--labels",
        NEW,
        "-o",
        str(tmp_path / "o.csv"),
    )
    refused = clipcls(*args, "--model", other, ok=False)
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "holds embeddings of" in refused.stderr and "other" in refused.stderr
    (tmp_path / "run.jsonl.clipcls.json").unlink()  # no setup record: the rows' model decides
    refused = clipcls(*args, "--model", other, ok=False)
    assert refused.exit_code == 2 and "holds embeddings of" in refused.stderr
    assert not (tmp_path / "o.csv").exists()


def test_a_file_without_embeddings_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    for name in ("run.csv", "plain.jsonl"):  # the JSONL run saved no embeddings
        out = tmp_path / name
        clipcls("label", str(photos), "-o", str(out), "--labels", NEW, "--model", tiny_model)
        refused = clipcls("predict", "--from-embeddings", str(out), "--labels", NEW, ok=False)
        assert refused.exit_code == 2 and "holds no image embeddings" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_options_that_exclude_it_are_refused(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    saved = str(save_run(tiny_model, photos, tmp_path / "run.jsonl"))
    base = ("--labels", NEW, "--model", tiny_model)
    for extra in (("--server", "http://127.0.0.1:9"), ("--engine", "ray"), (str(photos),)):
        refused = clipcls(
            "label",
            *extra,
            "--from-embeddings",
            saved,
            *base,
            "-o",
            str(tmp_path / "x.csv"),
            ok=False,
        )
        assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    many = clipcls(
        "evaluate",
        str(photos),
        "--from-embeddings",
        saved,
        "-m",
        tiny_model,
        "-m",
        tiny_model,
        ok=False,
    )
    assert many.exit_code == 2 and "one --model" in many.stderr


def test_relative_paths_are_taken_from_the_folder_the_saving_run_started_in(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_run(tiny_model, Path("photos"), Path("run.jsonl"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ("--labels", NEW, "--model", tiny_model, "-f", "jsonl", "-q")
    rows = clipcls("predict", "--from-embeddings", "../run.jsonl", *args).stdout.splitlines()
    paths = [json.loads(row)["path"] for row in rows]
    assert paths == [str(tmp_path / "photos" / name) for name in sorted(os.listdir(photos))]


def test_without_model_the_files_own_model_is_used(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default model was loaded (a 600 MB download on a first run) only to be refused as
    # another model than the file's; dedupe and similar of a saved image need no model at all.
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    out = tmp_path / "new.jsonl"
    clipcls(
        "label", "--from-embeddings", str(saved), "--labels", NEW, "-o", str(out), "-f", "jsonl"
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["model"] for row in rows} == {tiny_model}
    monkeypatch.setattr("clipcls.engine.model.ClipModel", NoModel)
    grouped = clipcls("dedupe", "--from-embeddings", str(saved), "--threshold", "0.5", "-f", "csv")
    assert grouped.stdout.startswith("group,path,score,keep")
    cat = str(photos / "chelsea.png")
    near = clipcls("similar", cat, "--from-embeddings", str(saved), "-k", "2", "-f", "csv")
    assert len(near.stdout.splitlines()) == 3 and cat not in near.stdout
    other = ("--model", "ViT-B-32:openai")  # asked, and named: refused without loading it
    refused = clipcls("dedupe", "--from-embeddings", str(saved), *other, ok=False)
    assert refused.exit_code == 2 and "holds embeddings of" in refused.stderr


@pytest.mark.parametrize(
    "odd",
    [lambda vector: vector[:5], lambda vector: ["a"] * len(vector), lambda vector: [vector]],
    ids=["another width", "not numbers", "nested"],
)
def test_a_row_whose_embedding_is_no_vector_like_the_others_is_one_error_line(
    tiny_model: str, photos: Path, tmp_path: Path, odd: object
) -> None:
    # A hand-edited (or concatenated) file died with a numpy ValueError traceback, in the
    # reader (strings) or in the first batch scored or gathered (another width).
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    rows[1]["embedding"] = odd(rows[1]["embedding"])  # type: ignore[operator]
    saved.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for args in (("label", "-o", str(tmp_path / "o.csv"), "--labels", NEW), ("dedupe",)):
        refused = clipcls(args[0], "--from-embeddings", str(saved), *args[1:], ok=False)
        assert refused.exit_code == 2, refused.stderr
        assert f"{saved}:2: the embedding " in refused.stderr  # its line, then why
        assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()
