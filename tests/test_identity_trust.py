"""A model is known by the bytes of all its weights: a same-size rewrite of a weights file's
middle with the mtime put back, or a `cp -p` replacement, gives the new model's answers, with
the model loaded or not; digests are remembered per file version, and a damaged or busy memo
only costs a hash."""

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import jsonl, scores, write_tiny_model
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.sources import model_identity
from clipcls.settings import ModelSettings

runner = CliRunner()
WEIGHTS = "open_clip_model.safetensors"
ARGS = ("-f", "jsonl", "--precision", "fp32")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny models of the same architecture: weights files of the same size."""
    root = tmp_path_factory.mktemp("two")
    return write_tiny_model(root / "a", seed=0), write_tiny_model(root / "b", seed=7)


def middle_of(a: Path, b: Path) -> bytes:
    """a's weights with b's bytes between the first and last 2 MiB: the same size and ends."""
    first, second = (a / WEIGHTS).read_bytes(), (b / WEIGHTS).read_bytes()
    assert len(first) == len(second) and len(first) > 6 << 20
    edge = 2 << 20
    mixed = first[:edge] + second[edge:-edge] + first[-edge:]
    assert mixed != first
    return mixed


def rewrite_keeping_mtime(path: Path, data: bytes) -> None:
    """Write data over path in place, then put its mtime back (`touch -r`)."""
    before = path.stat()
    with open(path, "r+b") as stream:
        stream.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def predict(model: str, folder: Path, *extra: str, labels: str = "cat,coffee") -> tuple[list, str]:  # type: ignore[type-arg]
    """(scores, stderr) of one in-process predict run."""
    args = ["predict", str(folder), "--labels", labels, "--model", model, *ARGS, *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return scores(jsonl(result.stdout)), result.stderr


def test_a_same_size_middle_rewrite_with_the_mtime_put_back_is_another_model(
    two_models: tuple[Path, Path], tmp_path: Path, photos: Path
) -> None:
    a, b = two_models
    folder = shutil.copytree(a, tmp_path / "model")
    model = f"local-dir:{folder}"
    first, _ = predict(model, photos)
    _, stderr = predict(model, photos)
    assert "the model was not loaded" in stderr  # the model-free record is in place
    identity = model_identity(ModelSettings(model=model)).key
    rewrite_keeping_mtime(folder / WEIGHTS, middle_of(a, b))
    assert model_identity(ModelSettings(model=model)).key != identity
    fresh, _ = predict(model, photos, "--no-cache")
    assert fresh != first  # the rewrite is another model
    again, stderr = predict(model, photos)
    assert "the model was not loaded" not in stderr and again == fresh
    # A label never embedded loads the model; the images' embeddings must not be the old ones.
    three = "cat,coffee,rocket"
    loaded = predict(model, photos, labels=three)[0]
    assert loaded == predict(model, photos, "--no-cache", labels=three)[0]


def test_a_cp_p_replacement_of_a_pretrained_file_is_another_model(
    two_models: tuple[Path, Path], tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip
    from conftest import TINY_MODEL_CFG

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "clipcls-test-tiny", dict(TINY_MODEL_CFG))
    a, b = two_models
    weights = tmp_path / "weights.safetensors"
    shutil.copy2(a / WEIGHTS, weights)
    mixed = tmp_path / "mixed.safetensors"
    mixed.write_bytes(middle_of(a, b))
    os.utime(mixed, ns=(1, weights.stat().st_mtime_ns))
    model = ("clipcls-test-tiny", "--pretrained", str(weights))
    first, _ = predict(model[0], photos, *model[1:])
    _, stderr = predict(model[0], photos, *model[1:])
    assert "the model was not loaded" in stderr
    shutil.copy2(mixed, weights)  # cp -p: the same size and mtime, new bytes
    fresh, _ = predict(model[0], photos, *model[1:], "--no-cache")
    assert fresh != first
    again, stderr = predict(model[0], photos, *model[1:])
    assert "the model was not loaded" not in stderr and again == fresh


def test_digests_are_remembered_per_file_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcls import digests

    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(digests, "_seen", {})
    hashed: list[str] = []
    real_hash = digests._hash
    monkeypatch.setattr(digests, "_hash", lambda p: hashed.append(p) or real_hash(p))
    memo = tmp_path / "memo"
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 3_000_000)
    time.sleep(0.05)
    first = digests.file_digest(path, memo)
    digests._seen.clear()
    assert digests.file_digest(path, memo) == first and len(hashed) == 1  # from the memo
    time.sleep(0.05)
    rewrite_keeping_mtime(path, b"a" * 1_000_000 + b"b" + b"a" * 1_999_999)
    second = digests.file_digest(path, memo)
    assert second != first and len(hashed) == 2


@pytest.fixture
def memo_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remember digests at once (the worst case for telling a later change), none in memory."""
    from clipcls import digests

    monkeypatch.setattr(digests, "RACY_SECONDS", 0.0)
    monkeypatch.setattr(digests, "_seen", {})


def test_links_and_truncation_are_told_apart(tmp_path: Path, memo_now: None) -> None:
    from clipcls import digests

    memo, a, b = tmp_path / "memo", tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"A" * 400_000)
    b.write_bytes(b"A" * 200_000 + b"B" + b"A" * 199_999)
    os.utime(b, ns=(1, a.stat().st_mtime_ns))
    time.sleep(0.05)
    first, second = digests.file_digest(a, memo), digests.file_digest(b, memo)
    link = tmp_path / "weights.bin"
    link.symlink_to(a)
    assert digests.file_digest(link, memo) == first
    link.unlink()
    link.symlink_to(b)  # the same size and mtime behind the same name
    digests._seen.clear()
    assert digests.file_digest(link, memo) == second
    os.link(a, tmp_path / "hard.bin")
    time.sleep(0.05)
    rewrite_keeping_mtime(tmp_path / "hard.bin", b.read_bytes())  # through the other name
    digests._seen.clear()
    assert digests.file_digest(a, memo) == second
    time.sleep(0.05)
    mtime = a.stat().st_mtime_ns
    os.truncate(a, 0)
    a.write_bytes(b"A" * 400_000)  # truncated, then the first bytes back
    os.utime(a, ns=(1, mtime))
    digests._seen.clear()
    assert digests.file_digest(a, memo) == first


def test_a_damaged_memo_only_costs_a_hash(tmp_path: Path, memo_now: None) -> None:
    from clipcls import digests

    memo, path = tmp_path / "memo", tmp_path / "w.bin"
    path.write_bytes(b"w" * 100_000)
    time.sleep(0.05)
    right = digests.file_digest(path, memo)
    for damage in ("UPDATE digests SET digest = 'sha256:xyz'", "UPDATE digests SET ctime = 'x'"):
        with sqlite3.connect(memo / digests.FILE_NAME) as db:
            db.execute(damage)
        digests._seen.clear()
        assert digests.file_digest(path, memo) == right
    for name in ("digests.sqlite3", "digests.sqlite3-wal", "digests.sqlite3-shm"):
        (memo / name).unlink(missing_ok=True)
    (memo / digests.FILE_NAME).write_bytes(b"not a database" * 100)
    digests._seen.clear()
    assert digests.file_digest(path, memo) == right


def test_weights_changed_while_loading_stop_the_load(
    two_models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcls.engine import model as engine
    from clipcls.errors import ModelLoadError

    a, b = two_models
    folder = shutil.copytree(a, tmp_path / "model")
    load = engine._load

    def swapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        loaded = load(*args, **kwargs)
        rewrite_keeping_mtime(folder / WEIGHTS, middle_of(a, b))
        return loaded

    monkeypatch.setattr(engine, "_load", swapped)
    with pytest.raises(ModelLoadError, match="its files changed meanwhile"):
        engine.ClipModel(ModelSettings(model=f"local-dir:{folder}"))


def test_an_output_recorded_with_the_old_fingerprint_still_resumes(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    """A setup record from before whole-content digests names the model by its ends: the
    model is then compared by name, as where only loading can tell."""
    import json

    out = tmp_path / "out.csv"
    label = ("label", str(photos), "-o", str(out), "--labels", "cat,coffee", "-q")
    assert runner.invoke(app, [*label, "--model", tiny_model]).exit_code == 0
    record = out.with_name(out.name + ".clipcls.json")
    setup = json.loads(record.read_text())
    setup["model_key"] = "local-dir:399:a6455073c7b0fa30a28e43bdfacf4d7f+13546068:c44a1f90d98b"
    record.write_text(json.dumps(setup))
    (photos / "more.png").write_bytes((photos / "coffee.png").read_bytes())
    resumed = runner.invoke(app, [*label, "--model", tiny_model, "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    assert len(out.read_text().splitlines()) == 6
    other = write_tiny_model(tmp_path / "other", seed=5)
    (photos / "last.png").write_bytes((photos / "coffee.png").read_bytes())
    refused = runner.invoke(app, [*label, "--model", f"local-dir:{other}", "--resume"])
    assert refused.exit_code == 2 and "it was labeled with" in refused.stderr


def test_many_digests_share_one_memo_and_skip_what_is_not_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcls import digests

    monkeypatch.setattr(digests, "RACY_SECONDS", -1.0)  # files made now count as settled
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(bytes([i]) * 1000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "zero").symlink_to("/dev/zero")
    memo = tmp_path / "memo"
    found = digests.file_digests([*files, fifo, tmp_path / "zero", tmp_path / "gone"], memo)
    assert list(found) == [str(p) for p in files]  # the FIFO, /dev/zero and a missing file: out
    assert found[str(files[0])] == digests.file_digest(files[0])
    monkeypatch.setattr(digests, "_seen", {})
    hashed: list[str] = []
    real_hash = digests._hash
    monkeypatch.setattr(digests, "_hash", lambda path: hashed.append(path) or real_hash(path))
    assert digests.file_digests(files, memo) == found
    assert hashed == []  # all three from the memo
