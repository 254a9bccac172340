"""Fully cached runs answer without loading the model (torch never imported), with output
byte-identical to a run that loads it; anything not cached brings the model back."""

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import clipcls_process


def clipcls(*args: str, cwd: Path) -> tuple[str, bool, str]:
    return clipcls_process(*args, cwd=cwd)


@pytest.fixture
def run_here(tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(*args: str) -> tuple[str, bool, str]:
        return clipcls(*args, cwd=tmp_path)

    return run


@pytest.mark.slow
def test_a_fully_cached_predict_never_loads_the_model(
    tiny_model: str, photos: Path, run_here
) -> None:  # type: ignore[no-untyped-def]
    args = ("predict", str(photos), "--labels", "cat,coffee,rocket", "--model", tiny_model)
    first, loaded, _ = run_here(*args, "-f", "jsonl")
    assert loaded
    second, loaded, stderr = run_here(*args, "-f", "jsonl")
    assert not loaded and "the model was not loaded" in stderr
    assert second == first  # byte-identical
    # A label never embedded needs the text tower: the model loads, and the answer is right.
    third, loaded, _ = run_here(*args[:3], "cat,coffee,rocket,dog", *args[4:], "-f", "jsonl")
    assert loaded and len(third.splitlines()) == len(first.splitlines())


@pytest.mark.slow
def test_label_and_evaluate_answer_from_the_cache_alone(
    tiny_model: str, photos: Path, tmp_path: Path, run_here
) -> None:  # type: ignore[no-untyped-def]
    common = ("--labels", "cat,coffee,rocket", "--model", tiny_model, "-q")
    run_here("label", str(photos), "-o", "a.csv", *common)
    _, loaded, _ = run_here("label", str(photos), "-o", "b.csv", *common)
    assert not loaded
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()

    data = tmp_path / "data"
    for name, source in (("cat", "chelsea.png"), ("coffee", "coffee.png")):
        (data / name).mkdir(parents=True)
        (data / name / source).write_bytes((photos / source).read_bytes())
    args = ("evaluate", str(data), "--model", tiny_model, "-f", "json", "-q")
    first, loaded, _ = run_here(*args)
    assert loaded
    second, loaded, _ = run_here(*args)
    assert not loaded and json.loads(second) == json.loads(first)


@pytest.mark.slow
def test_a_changed_file_or_a_damaged_record_brings_the_model_back(
    tiny_model: str, photos: Path, run_here, isolated_caches: Path
) -> None:  # type: ignore[no-untyped-def]
    args = ("predict", str(photos), "--labels", "cat,coffee", "--model", tiny_model, "-f", "csv")
    first, _, _ = run_here(*args)
    os.utime(photos / "coffee.png", ns=(1, 1))  # same bytes, another version: not cached
    again, loaded, _ = run_here(*args)
    assert loaded and again == first
    _, loaded, _ = run_here(*args)
    assert not loaded  # cached again
    for damage in ("'not json'", "json_set(value, '$.logit_scale', 'big')"):
        with sqlite3.connect(isolated_caches / "embeddings.sqlite3") as db:
            db.execute(f"UPDATE records SET value = {damage}")
        again, loaded, _ = run_here(*args)
        assert loaded and again == first  # and the run recorded the model again
    _, loaded, _ = run_here(*args, "--no-cache")
    assert loaded


@pytest.mark.slow
def test_other_weights_are_not_taken_for_the_recorded_model(
    tiny_model: str, photos: Path, tmp_path: Path, run_here
) -> None:  # type: ignore[no-untyped-def]
    from conftest import write_tiny_model

    args = ("predict", str(photos), "--labels", "cat,coffee", "-f", "csv")
    run_here(*args, "--model", tiny_model)
    other = write_tiny_model(tmp_path / "other", seed=7)
    out, loaded, _ = run_here(*args, "--model", f"local-dir:{other}")
    assert loaded
    again, loaded, _ = run_here(*args, "--model", f"local-dir:{other}")
    assert not loaded and again == out
