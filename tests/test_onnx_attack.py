"""Attacks on ONNX export folders and the runs around them (issue 37): non-regular data files,
hand-edited manifests, odd folder paths, a byte changed under a restored mtime, a read-only
cache, and a label run resumed after `models prepare`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipcls.engine.factory import open_model
from clipcls.engine.onnx_export import PARTIAL_PREFIX
from clipcls.engine.onnx_folder import MANIFEST, PREPARED, read_folder
from clipcls.engine.onnx_sessions import OPTIMIZED, STALE_SECONDS
from clipcls.errors import ClipclsError, UnusableExport
from clipcls.labeling.label_file import LabelOutput, check_loaded_model
from clipcls.labeling.manifest import RunSetup
from clipcls.settings import ModelSettings

PHOTOS = [p for p in SAMPLE_IMAGES.iterdir() if p.suffix in (".png", ".jpg")]
PIXELS = [np.full((32, 32, 3), 80, np.uint8)]


def copy_of(export: Path, folder: Path) -> Path:
    shutil.copytree(export, folder)
    return folder


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipcls", *args], capture_output=True, text=True, timeout=300
    )


def predict_export(folder: Path | str) -> subprocess.CompletedProcess[str]:
    return run("predict", str(SAMPLE_IMAGES), "--labels", "a,b", "-m", f"local-dir:{folder}")


def one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "outside"])
def test_a_data_file_that_is_no_regular_file_is_refused_without_hanging(
    kind: str, onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    data = folder / "image.onnx.data"
    data.unlink()
    if kind == "fifo":
        os.mkfifo(data)
    elif kind == "dev-zero":
        data.symlink_to("/dev/zero")
    else:
        data.symlink_to(onnx_tiny_dir / "image.onnx.data")
        one_line(predict_export(folder), "image.onnx.data", "a link out of the folder")
        return
    one_line(predict_export(folder), "image.onnx.data", "not a regular file")


@pytest.mark.parametrize("name", ["../image.onnx", "/etc/passwd", "a\0b", ""])
def test_a_manifest_naming_files_outside_the_folder_is_refused(
    name: str, onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = "sha256:" + "0" * 64
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UnusableExport, match="not a file of the folder"):
        read_folder(folder)


def test_a_changed_byte_under_a_restored_mtime_is_refused(
    onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    settings = ModelSettings(f"local-dir:{folder}", device="cpu", cache_dir=tmp_path / "cache")
    data = folder / "image.onnx.data"
    before = data.stat()
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns - 10**10))  # settled: remembered
    before = data.stat()
    open_model(settings)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    with open(data, "r+b") as stream:  # same inode, same size
        stream.write(raw)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r
    assert data.stat().st_mtime_ns == before.st_mtime_ns and data.stat().st_size == before.st_size
    with pytest.raises(UnusableExport, match="does not match the digest"):
        open_model(settings)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.just([]),
    st.just({}),
    st.lists(st.integers(-5, 300), max_size=4),
    st.just("../x"),
)
FIELDS = [
    ("image", "file"),
    ("image", "input"),
    ("image", "output"),
    ("text", "file"),
    ("text", "input"),
    ("text", "output"),
    ("text", "context_length"),
    ("text", "cut"),
    ("text", "pool"),
    ("text", "eos_id"),
    ("tokenizer", "kind"),
    ("tokenizer", "file"),
    ("tokenizer", "context_length"),
    ("tokenizer", "clean"),
    ("preprocess", "size"),
    ("preprocess", "mean"),
    ("preprocess", "std"),
    ("preprocess", "interpolation"),
    ("preprocess", "resize_mode"),
    ("preprocess", "fill_color"),
    ("", "logit_scale"),
    ("", "logit_bias"),
    ("", "random_weights"),
    ("", "pretrained"),
    ("", "image"),
    ("", "text"),
]


def test_a_manifest_with_wrong_types_is_one_line_never_a_traceback(
    onnx_tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = json.loads((onnx_tiny_dir / MANIFEST).read_text())
    cache = tmp_path_factory.mktemp("fuzz_cache")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
    def attack(changes: list[tuple[tuple[str, str], Any]]) -> None:
        manifest = json.loads(json.dumps(base))
        for (section, key), value in changes:
            target = manifest if not section else manifest[section]
            if isinstance(target, dict):
                target[key] = value
        folder = tmp_path_factory.mktemp("fuzz")
        for item in onnx_tiny_dir.iterdir():
            if item.name != MANIFEST:  # hard links: onnxruntime refuses data linked from outside
                os.link(item, folder / item.name)
        (folder / MANIFEST).write_text(json.dumps(manifest))
        try:
            model = open_model(ModelSettings(f"local-dir:{folder}", device="cpu", cache_dir=cache))
            from PIL import Image

            model.encode_prepared([model.prepare(Image.new("RGB", (40, 30), (9, 80, 200)))])
            model.encode_texts(["a cat", "x " * 100])
        except ClipclsError as error:
            assert "\n" not in str(error)
        finally:
            shutil.rmtree(folder)

    attack()


def test_a_graph_without_the_named_input_or_of_another_size_is_refused_at_load(
    onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    manifest = json.loads((folder / MANIFEST).read_text())
    for change, words in (
        ({"image": {**manifest["image"], "input": "other"}}, "no input 'other'"),
        ({"preprocess": {**manifest["preprocess"], "size": [48, 48]}}, "preprocess.size"),
    ):
        (folder / MANIFEST).write_text(json.dumps({**manifest, **change}))
        with pytest.raises(UnusableExport, match=words):
            open_model(ModelSettings(f"local-dir:{folder}", device="cpu"))


@pytest.mark.parametrize("name", [b"x\xff\xfey", b"[/b]=cmd()", b"cr\r\nlf", b"n" * 255])
def test_odd_folder_names_run_and_their_errors_are_one_literal_line(
    name: bytes, onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/" + name))
    copy_of(onnx_tiny_dir, folder)
    model = open_model(ModelSettings(f"local-dir:{folder}", device="cpu"))
    assert model.encode_prepared(PIXELS).shape[0] == 1
    with open(folder / "text.onnx.data", "ab") as stream:
        stream.write(b"x")
    line = one_line(predict_export(folder), "text.onnx.data", "does not match")
    if name == b"[/b]=cmd()":
        assert "[/b]=cmd()" in line


def test_a_read_only_cache_still_runs_without_an_optimized_copy(
    onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    """A cache folder this user cannot write. Root writes anyway: there the run goes through
    setpriv without the capability to override file permissions (a plain user is refused by
    the permissions alone); os.setuid would not do, this Python lives under root's 0700 home."""
    wrap: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop the power to write anywhere")
        caps = "-dac_override,-dac_read_search"
        wrap = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    env = {**os.environ, "CLIPCLS_CACHE_DIR": str(cache)}
    try:
        done = subprocess.run(
            [*wrap, sys.executable, "-m", "clipcls", "predict", str(SAMPLE_IMAGES)]
            + ["--labels", "a,b", "-m", f"local-dir:{folder}", "-f", "jsonl"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    finally:
        cache.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(PHOTOS)
    said = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(said) <= 2, done.stderr  # the model line, and at most one about the cache
    assert not any(cache.iterdir())


def setup_of(precision: str | None) -> RunSetup:
    return RunSetup("csv", ("path",), (), (), 1, None, None, None, None, "w", "m", "", None,
                    precision=precision)  # fmt: skip


def test_a_resume_must_compute_in_the_precision_its_rows_were_computed_in(
    tmp_path: Path,
) -> None:
    output = LabelOutput(tmp_path / "out.csv", -1, False, recorded=setup_of("fp32"))
    with pytest.raises(ClipclsError, match="computed in fp32, this run computes in bf16"):
        check_loaded_model(output, setup_of(None), "m", "bf16")
    check_loaded_model(output, setup_of(None), "m", "fp32")  # torch fp32 or the ONNX export
    check_loaded_model(output, setup_of(None), "m", "auto")  # a server's or Ray's: unknown
    output.recorded = setup_of(None)  # an earlier clipcls's record
    check_loaded_model(output, setup_of(None), "m", "bf16")


def test_a_link_swapped_between_the_digest_check_and_the_session_is_refused(
    onnx_tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipcls.engine.onnx_model as onnx_model

    folder = copy_of(onnx_tiny_dir, tmp_path / "export")
    data = folder / "image.onnx.data"
    data.rename(folder / "real.data")
    data.symlink_to("real.data")  # inside the folder, as onnxruntime requires
    opened = onnx_model.open_session

    def swapping(*args: Any) -> Any:
        # the same bytes, another file: a swap all the same
        shutil.copyfile(folder / "real.data", folder / "other.data")
        data.unlink()
        data.symlink_to("other.data")
        return opened(*args)

    monkeypatch.setattr(onnx_model, "open_session", swapping)
    with pytest.raises(UnusableExport, match="changed while the export was being opened"):
        open_model(ModelSettings(f"local-dir:{folder}", device="cpu"))
    monkeypatch.setattr(onnx_model, "open_session", opened)
    assert open_model(ModelSettings(f"local-dir:{folder}", device="cpu")) is not None


def backdate(path: Path, seconds: float) -> None:
    when = path.stat().st_mtime - seconds
    os.utime(path, (when, when))


def test_copies_half_written_by_killed_runs_are_swept_and_a_fresh_one_kept(
    onnx_tiny_dir: Path, isolated_caches: Path
) -> None:
    optimized = isolated_caches / OPTIMIZED
    stale, writing = optimized / ".partial-killed", optimized / ".partial-writing"
    for folder in (stale, writing):
        folder.mkdir(parents=True)
        (folder / "image.onnx").write_bytes(b"half a graph")
    backdate(stale, STALE_SECONDS + 60)
    model = open_model(ModelSettings(f"local-dir:{onnx_tiny_dir}", device="cpu"))
    assert model.encode_prepared(PIXELS).shape[0] == 1
    assert not stale.exists() and writing.exists()
    assert len([p for p in optimized.glob("*/image.onnx") if p.parent != writing]) == 1


def prepare_process(model: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clipcls", "models", "prepare", model],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_prepare_killed_then_again_and_two_at_once(tiny_model: str, isolated_caches: Path) -> None:
    prepared = isolated_caches / PREPARED
    first = prepare_process(tiny_model)
    try:
        for _ in range(3000):  # a hang guard: 300 s
            if list(prepared.glob(f"{PARTIAL_PREFIX}*")) or first.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        first.kill()
        first.communicate()
    killed = list(prepared.glob(f"{PARTIAL_PREFIX}*"))
    assert killed, "the prepare ended before it could be killed mid-export"
    for folder in killed:
        backdate(folder, STALE_SECONDS + 60)  # as if killed an hour ago
    both = [prepare_process(tiny_model) for _ in range(2)]
    said = [process.communicate(timeout=300) for process in both]
    assert [process.returncode for process in both] == [0, 0], said
    assert sum("already prepared" in err for _, err in said) <= 1
    exports = [p for p in prepared.iterdir() if not p.name.startswith(".")]
    assert len(exports) == 1 and (exports[0] / MANIFEST).is_file()
    assert not any(folder.exists() for folder in killed)
    assert not list(prepared.glob(f"{PARTIAL_PREFIX}*"))
    settings = ModelSettings(tiny_model, device="cpu", precision="fp32", runtime="onnx")
    assert open_model(settings).encode_prepared(PIXELS).shape[0] == 1


@pytest.mark.parametrize("memo", ["corrupt", "locked"])
def test_a_corrupt_or_locked_digest_memo_costs_only_a_hash(
    memo: str, onnx_tiny_dir: Path, isolated_caches: Path
) -> None:
    import sqlite3

    isolated_caches.mkdir(parents=True, exist_ok=True)
    path = isolated_caches / "digests.sqlite3"
    holder = None
    if memo == "corrupt":
        path.write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    else:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
    try:
        model = open_model(ModelSettings(f"local-dir:{onnx_tiny_dir}", device="cpu"))
        assert model.encode_prepared(PIXELS).shape[0] == 1
        folder = copy_of(onnx_tiny_dir, isolated_caches.parent / "changed")
        with open(folder / "text.onnx.data", "r+b") as stream:
            stream.write(b"\xff\xff")
        with pytest.raises(UnusableExport, match="does not match"):
            open_model(ModelSettings(f"local-dir:{folder}", device="cpu"))
    finally:
        if holder is not None:
            holder.close()


@pytest.mark.parametrize(
    "how", ["env", "config", "torch-on-export", "bf16-on-export", "onnx-without-export"]
)
def test_runtime_choices_that_cannot_run_are_one_line(
    how: str, onnx_tiny_dir: Path, tiny_model: str, tmp_path: Path
) -> None:
    base = [sys.executable, "-m", "clipcls"]
    args = ["predict", str(SAMPLE_IMAGES), "--labels", "a,b", "-m", f"local-dir:{onnx_tiny_dir}"]
    env = dict(os.environ)
    if how == "env":
        env["CLIPCLS_RUNTIME"] = "bo[/b]gus"
        words: tuple[str, ...] = ("$CLIPCLS_RUNTIME", "bo[/b]gus")
    elif how == "config":
        subprocess.run([*base, "config", "set", "runtime", "onnx"], check=True, timeout=300)
        args[-1], words = tiny_model, ("models prepare",)
    elif how == "torch-on-export":
        args, words = [*args, "--runtime", "torch"], ("ONNX export", "--runtime onnx")
    elif how == "bf16-on-export":
        args, words = [*args, "--precision", "bf16"], ("bf16", "--runtime torch")
    else:
        args[-1], words = tiny_model, ("models prepare",)
        args += ["--runtime", "onnx"]
    done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300, env=env)
    one_line(done, *words)


@pytest.mark.slow
def test_a_label_run_on_torch_fp32_resumes_on_its_prepared_export_not_in_bf16(
    tiny_model: str, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in PHOTOS[:3]:
        shutil.copy(path, photos / path.name)
    out = tmp_path / "out.csv"
    label = ["label", str(photos), "--labels", "cat,rocket", "-o", str(out), "-m", tiny_model]
    assert run(*label, "--runtime", "torch", "--precision", "fp32").returncode == 0
    for path in PHOTOS[3:]:  # what the first run had not reached when it was stopped
        shutil.copy(path, photos / path.name)
    done = run(*label, "--resume", "--runtime", "torch", "--precision", "bf16")
    assert done.returncode == 2, done.stderr  # said once the model is loaded, after its line
    last = done.stderr.strip().splitlines()[-1]
    assert "computed in fp32" in last and "--precision fp32" in last, done.stderr
    assert len(out.read_text().splitlines()) == 4
    assert run("models", "prepare", tiny_model).returncode == 0
    done = run(*label, "--resume", "--runtime", "onnx")
    assert done.returncode == 0, done.stderr
    assert "ONNX Runtime" in done.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + len(PHOTOS) and len({row.split(",")[-2] for row in rows[1:]}) == 1
