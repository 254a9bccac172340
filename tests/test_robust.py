"""No file name, special file, deep tree or cache state crashes, hangs or serves stale results:
one test per case found by trying to break clipcls."""

import json
import os
import shutil
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    SAMPLE_IMAGES,
    jsonl,
)
from PIL import Image
from typer.testing import CliRunner

from clipcls.classify import Classifier
from clipcls.cli import app
from clipcls.errors import ImageError, UsageError
from clipcls.images import iter_image_paths, load_image
from clipcls.labels import parse_labels
from clipcls.pipeline import EmbedPlan

runner = CliRunner()
PNG = (SAMPLE_IMAGES / "chelsea.png").read_bytes()


def predict(model: str, *args: str, labels: str = "cat,dog"):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["predict", *args, "--model", model, "--templates", "photo", "--labels", labels]
    )


# Names are data, never markup


def test_names_labels_and_errors_print_literally(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[/b]y.png").write_bytes(PNG)
    (tmp_path / "IMG:x:2024:cat:.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "good.png").write_bytes(PNG)
    table = predict(tiny_model, str(tmp_path), labels="[/x],[bold]dog")
    assert table.exit_code == 0, table.output
    assert "a[/b]y.png" in table.stdout and "[/x]" in table.stdout
    assert "good.png" in table.stdout
    assert ":cat:" in table.stderr and "\N{CAT FACE}" not in table.stderr
    out = tmp_path / "l.csv"
    labeled = runner.invoke(
        app,
        ["label", str(tmp_path), "-o", str(out), "--model", tiny_model, "-t", "photo"]
        + ["--labels", "[/x],[red]y", "--threshold", "0.99", "--unknown-label", "[/u]"],
    )
    assert labeled.exit_code == 0, labeled.output
    assert "[/u]" in labeled.stderr


# Nothing hangs


def finishes(work, seconds: float = 20) -> object:  # type: ignore[no-untyped-def]
    """Run work in a thread; fail if it does not finish in time (a hang is a failure)."""
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(work)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, "hung"
    return outcome[0]


def _catch(work):  # type: ignore[no-untyped-def]
    try:
        return work()
    except Exception as error:
        return error


def test_fifos_and_devices_are_error_rows_never_hangs(tiny_model: str, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "other-pipe")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.png").write_bytes(PNG)
    os.symlink(tmp_path / "other-pipe", tree / "linked-pipe.png")
    os.symlink("/dev/zero", tree / "zero.jpg")
    os.mkfifo(tree / "in-tree-pipe.png")
    for path in (tmp_path / "pipe.png", tree / "zero.jpg"):
        error = finishes(lambda p=path: load_image(p))
        assert isinstance(error, ImageError) and "not a regular file" in str(error)
    result = finishes(
        lambda: predict(tiny_model, str(tmp_path / "pipe.png"), str(tree), "-f", "jsonl", "-q")
    )
    rows = jsonl(result.stdout)  # type: ignore[attr-defined]
    assert len(rows) == 5 and sum("error" in row for row in rows) == 4


def test_zeros_behind_a_jpeg_marker_are_rejected_fast(tmp_path: Path) -> None:
    bomb = tmp_path / "zeros.jpg"
    with bomb.open("wb") as stream:
        stream.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        stream.truncate(2 << 30)  # 2 GB, sparse
    started = time.process_time()
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(bomb)
    assert time.process_time() - started < 30  # a hang guard: was 108 s of CPU


def test_a_tree_1200_folders_deep_is_walked(tmp_path: Path) -> None:
    deep = tmp_path
    for _ in range(1200):
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "bottom.png").write_bytes(b"")
    try:
        assert list(iter_image_paths([str(tmp_path)])) == [deep / "bottom.png"]
    finally:  # pytest's own clean-up recurses, and would fail on this tree
        (deep / "bottom.png").unlink()
        while deep != tmp_path:
            deep.rmdir()
            deep = deep.parent


# Nothing is skipped silently


def test_named_files_are_always_tried(tmp_path: Path) -> None:
    (tmp_path / ".hidden.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_bytes(b"text")
    (tmp_path / "a.png").write_bytes(PNG)
    found = list(
        iter_image_paths(
            [str(tmp_path), str(tmp_path / ".hidden.png"), str(tmp_path / "notes.txt")]
        )
    )
    assert found == [tmp_path / "a.png", tmp_path / ".hidden.png", tmp_path / "notes.txt"]


def as_nobody(work, seconds: float = 120) -> str:  # type: ignore[no-untyped-def]
    """Run work() in a forked child that has dropped root for the nobody user; its str back.

    Forking keeps the already imported code, so the checkout need not be readable by nobody.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, work().encode("utf-8", "surrogateescape"))
            status = 0
        except BaseException as error:
            os.write(write, repr(error).encode())
        finally:
            os._exit(status)
    os.close(write)
    deadline = time.monotonic() + seconds
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.05)
    with os.fdopen(read, "rb") as stream:
        return stream.read().decode("utf-8", "surrogateescape")


class MeanColour:
    """A torch-free encoder (images: mean colour; texts: their length): enough for the walk,
    the loading and the error rows, and safe in a forked child."""

    logit_scale, logit_bias = 10.0, None
    plan = EmbedPlan()

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) + 1.0

    def encode_prepared(self, prepared: list[np.ndarray]) -> np.ndarray:
        rows = np.stack(prepared)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_unlistable_folders_are_failures_for_a_user_without_access(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    shared = Path(tempfile.mkdtemp(prefix="clipcls-user-"))
    try:
        (shared / "tree" / "locked").mkdir(parents=True)
        (shared / "tree" / "ok.png").write_bytes(PNG)
        (shared / "tree" / "locked" / "inside.png").write_bytes(PNG)
        for item in [shared, *shared.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        (shared / "tree" / "locked").chmod(0o000)
        classifier = Classifier(MeanColour(), ["cat", "dog"], ["a {}."])  # type: ignore[arg-type]

        def run() -> str:
            found = classifier.classify_paths(iter_image_paths([str(shared / "tree")]))
            return json.dumps([[Path(p.path).name, p.error] for p in found])

        rows = json.loads(as_nobody(run))
        assert [name for name, _ in rows] == ["locked", "ok.png"]
        assert "cannot list folder" in rows[0][1] and rows[1][1] is None
    finally:
        (shared / "tree" / "locked").chmod(0o755)
        shutil.rmtree(shared)


# The cache is an accelerator, never a source of errors or wrong answers


# evaluate never crashes after the embedding work


def test_evaluate_outputs_are_valid_for_any_class_or_file_name(
    tiny_model: str, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    dataset = tmp_path / "data"
    for name in ("bad $\\notacommand{$", os.fsdecode(b"caf\xe9"), "plain"):
        (dataset / name).mkdir(parents=True)
        (dataset / name / "a.png").write_bytes(PNG)
        (dataset / name / os.fsdecode(b"b\xff.png")).write_bytes(PNG)
    out, report, predictions = tmp_path / "ev.json", tmp_path / "rep.html", tmp_path / "p.csv"
    result = runner.invoke(
        app,
        ["evaluate", str(dataset), "--model", tiny_model, "-t", "photo", "-f", "json"]
        + ["-o", str(out), "--report", str(report), "--predictions", str(predictions)],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_bytes().decode("utf-8"))
    assert document
    predictions.read_bytes().decode("utf-8")
    page = next(report.rglob("*.html")) if report.is_dir() else report
    assert "notacommand" in page.read_bytes().decode("utf-8")


# Labels


def test_labels_are_compared_in_nfc() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    with pytest.raises(UsageError, match="duplicate label"):
        parse_labels(f"{nfc},{nfd}")
    assert parse_labels(nfd)[0].name == nfc
