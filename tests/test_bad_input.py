"""Bad input never crashes a run, never loses work, never lies: one test per case."""

import csv
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import ImageError
from clipcls.images import iter_image_paths, load_image

runner = CliRunner()
JPEG = (SAMPLE_IMAGES / "rocket.jpg").read_bytes()
PNG = (SAMPLE_IMAGES / "chelsea.png").read_bytes()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares width x height pixels (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = b"IDAT" + idat
    data += struct.pack(">I", len(idat)) + idat_chunk + struct.pack(">I", zlib.crc32(idat_chunk))
    return b"\x89PNG\r\n\x1a\n" + data


def rows_of(result) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in result.stdout.splitlines()]


def predict(model: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["predict", *args, "--model", model, "--templates", "photo", "-f", "jsonl", "-q"]
    )


BROKEN = {
    "empty.jpg": b"",
    "page.jpg": b"<!doctype html><html><body>404 not found</body></html>",
    "notes.png": b"just some text that pretends to be a png",
    "truncated.jpg": JPEG[: len(JPEG) // 3],
    "truncated.png": PNG[: len(PNG) // 3],
    "bomb.png": png_header(100_000, 100_000),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_undecodable_files_raise_the_projects_image_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BROKEN[name])
    with pytest.raises(ImageError):
        load_image(path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(100_000, 100_000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="10000 megapixels.*--max-megapixels"):
        load_image(path)  # refused from the header: a decode would take minutes and 30 GB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(big)
    with pytest.raises(ImageError, match="6 megapixels"):
        load_image(big, max_megapixels=5)
    assert load_image(big, max_megapixels=7).size == (3000, 2000)


def test_corrupted_jpeg_body_decodes_or_fails_cleanly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        data = bytearray(JPEG)
        for position in rng.integers(600, len(data) - 10, size=40):
            data[position] = int(rng.integers(0, 256))
        path = tmp_path / f"corrupt{trial}.jpg"
        path.write_bytes(bytes(data))
        try:
            image = load_image(path)
        except ImageError:
            continue
        assert image.mode == "RGB" and image.size == (640, 427)


def test_a_run_survives_every_broken_file(tiny_model: str, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, data in BROKEN.items():
        (folder / name).write_bytes(data)
    (folder / "good.png").write_bytes(PNG)
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    os.symlink(folder / "loop_b.jpg", folder / "loop_a.jpg")
    os.symlink(folder / "loop_a.jpg", folder / "loop_b.jpg")
    os.symlink(folder, folder / "self")  # a folder loop: folder links are not followed
    result = predict(tiny_model, str(folder), "--labels", "cat,dog")
    assert result.exit_code == 0, result.output
    records = {Path(r["path"]).name: r for r in rows_of(result)}
    assert set(records) == {*BROKEN, "good.png", "dangling.jpg", "loop_a.jpg", "loop_b.jpg"}
    assert "predictions" in records["good.png"]
    for name in set(records) - {"good.png"}:
        assert "error" in records[name], name
    assert result.stderr.count("warning:") == len(records) - 1
    strict = predict(tiny_model, str(folder), "--labels", "cat,dog", "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.stderr
    assert len(rows_of(strict)) == len(records)  # every result was still written


def test_file_that_disappears_mid_run_is_an_error_row(tiny_model: str, tmp_path: Path) -> None:
    from clipcls import Classifier, ModelSettings

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        path.write_bytes(PNG)
    settings = ModelSettings(model=tiny_model)
    classifier = Classifier.load(["cat", "dog"], "photo", settings, batch_size=1)
    stream = classifier.classify_paths(paths)
    first = next(stream)
    paths[2].unlink()
    rest = list(stream)
    assert first.error is None and rest[0].error is None
    assert rest[1].error is not None and "not found" in rest[1].error


def test_overlapping_inputs_give_each_file_once(tmp_path: Path) -> None:
    for name in ("a/1.png", "a/b/2.png", "c/3.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(PNG)
    inputs = [
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a"),
        str(tmp_path / "a"),
        str(tmp_path / "a" / "1.png"),
        str(tmp_path / "c" / "3.png"),
        str(tmp_path),
    ]
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_paths(inputs)]
    assert sorted(found) == ["a/1.png", "a/b/2.png", "c/3.png"]
    assert len(found) == 3


def gray16(path: Path) -> Path:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    image.save(path)
    return path


def test_image_modes_are_handled_correctly(tmp_path: Path) -> None:
    sixteen = load_image(gray16(tmp_path / "g16.png"))
    values = np.asarray(sixteen)[..., 0]
    assert sixteen.mode == "RGB" and values.max() > 230 and values.min() == 0  # scaled, not clipped
    assert len(np.unique(values)) > 30
    one_bit = tmp_path / "bw.png"
    Image.new("1", (10, 10), 1).save(one_bit)
    assert np.asarray(load_image(one_bit)).min() == 255
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    red = np.asarray(load_image(cmyk))[8, 8]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    palette = tmp_path / "palette.gif"
    frame = Image.new("P", (4, 4), 0)
    frame.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    frame.info["transparency"] = 0
    frame.save(palette, transparency=0)
    assert tuple(np.asarray(load_image(palette))[0, 0]) == (128, 128, 128)
    la = tmp_path / "la.png"
    Image.new("LA", (4, 4), (255, 0)).save(la)
    assert tuple(np.asarray(load_image(la))[0, 0]) == (128, 128, 128)


def test_animations_use_their_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((250, 0, 0), (0, 0, 250))]
    for name in ("anim.gif", "anim.webp", "anim.png"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
        pixel = np.asarray(load_image(path))[4, 4]
        assert pixel[0] > 200 and pixel[2] < 50, name


def test_tiny_and_extreme_shapes_classify(tiny_model: str, tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "dot.png")
    Image.new("RGB", (4000, 40), (9, 99, 9)).save(tmp_path / "strip.png")
    Image.new("RGB", (40, 4000), (9, 9, 99)).save(tmp_path / "pole.jpg")
    result = predict(tiny_model, str(tmp_path), "--labels", "cat,dog")
    assert result.exit_code == 0
    assert all("predictions" in r for r in rows_of(result))


def test_odd_names_appear_correctly_in_every_format(tiny_model: str, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    names = ["a b.png", "c,d.png", 'e"f.png', "g\nh.png", "ünï 猫.png"]
    for name in names:
        (folder / name).write_bytes(PNG)
    raw = os.fsencode(folder) + b"/bad\xffname.png"
    with open(raw, "wb") as stream:
        stream.write(PNG)
    expected = sorted([str(folder / n) for n in names] + [str(folder / "bad\\xffname.png")])
    jsonl = predict(tiny_model, str(folder), "--labels", "cat,dog")
    assert sorted(r["path"] for r in rows_of(jsonl)) == expected
    as_json = runner.invoke(
        app,
        [
            "predict",
            str(folder),
            "--labels",
            "cat,dog",
            "--model",
            tiny_model,
            "-t",
            "photo",
            "-f",
            "json",
            "-q",
        ],
    )
    assert sorted(r["path"] for r in json.loads(as_json.stdout)) == expected
    as_csv = runner.invoke(
        app,
        [
            "predict",
            str(folder),
            "--labels",
            "cat,dog",
            "--model",
            tiny_model,
            "-t",
            "photo",
            "-f",
            "csv",
            "-q",
        ],
    )
    assert sorted(r["path"] for r in csv.DictReader(io.StringIO(as_csv.stdout))) == expected
    table = runner.invoke(
        app,
        ["predict", str(folder), "--labels", "cat,dog", "--model", tiny_model, "-t", "photo", "-q"],
    )
    assert table.exit_code == 0 and "bad\\xffname.png" in table.stdout.replace("\n", "")


def test_hidden_files_need_include_hidden(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "seen.png").write_bytes(PNG)
    (tmp_path / ".hidden.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("ignored")
    default = predict(tiny_model, str(tmp_path), "--labels", "cat,dog")
    assert [Path(r["path"]).name for r in rows_of(default)] == ["seen.png"]
    hidden = predict(tiny_model, str(tmp_path), "--labels", "cat,dog", "--include-hidden")
    assert [Path(r["path"]).name for r in rows_of(hidden)] == [".hidden.png", "seen.png"]


def label_six_images(tiny_model: str, tmp_path: Path) -> tuple[list[str], Path]:
    """A folder of six PNGs, and the `label` arguments that write it to labels.csv."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.png").write_bytes(PNG)
    out = tmp_path / "labels.csv"
    args = ["label", str(folder), "-o", str(out), "--labels", "cat,dog", "--model", tiny_model]
    return [*args, "-t", "photo", "-q"], out


def test_write_errors_stop_cleanly_and_resume(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcls.output import writers as render

    args, out = label_six_images(tiny_model, tmp_path)
    original = render.CsvWriter.write
    calls = {"n": 0}

    def full_disk(self, row):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            self.stream.write("partial,row")  # what a full disk leaves behind
            self.stream.flush()
            raise OSError(28, "No space left on device")
        original(self, row)

    monkeypatch.setattr(render.CsvWriter, "write", full_disk)
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    assert "No space left on device" in failed.stderr and "--resume" in failed.stderr
    monkeypatch.setattr(render.CsvWriter, "write", original)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert sorted(Path(r["path"]).name for r in rows) == [f"{i}.png" for i in range(6)]


def test_running_out_of_memory_names_the_batch_size_and_keeps_the_rows(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip
    import torch

    args, out = label_six_images(tiny_model, tmp_path)
    args += ["--no-cache", "--batch-size", "2"]
    original = open_clip.CLIP.encode_image
    calls = {"n": 0}

    def second_batch_fails(self, image, normalize=False):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, image, normalize=normalize)

    monkeypatch.setattr(open_clip.CLIP, "encode_image", second_batch_fails)
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1
    assert len(failed.stderr.splitlines()) == 1
    assert "out of cpu memory embedding a batch of 2 images: pass a smaller --batch-size" in (
        failed.stderr
    )
    assert "--resume" in failed.stderr
    assert len(list(csv.DictReader(out.open(newline="")))) == 2  # the first batch is kept
    monkeypatch.setattr(open_clip.CLIP, "encode_image", original)
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert len(list(csv.DictReader(out.open(newline="")))) == 6


def test_predict_write_error_is_one_line(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    result = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "a.png"),
            "--labels",
            "cat,dog",
            "--model",
            tiny_model,
            "-o",
            "/dev/full",
            "-f",
            "csv",
            "-q",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write") and "Traceback" not in result.output


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.tuples(
            st.sampled_from([JPEG[:4096], PNG[:4096], png_header(64, 64)]),
            st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=30),
        ).map(lambda seed: _mutate(*seed)),
    )
)
def test_fuzzed_bytes_give_an_image_or_an_image_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageError:
        return
    assert image.mode == "RGB" and image.size[0] > 0 and image.size[1] > 0


def _mutate(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for position, value in changes:
        buffer[position % len(buffer)] = value
    return bytes(buffer)


def test_avif_is_read_where_pillow_supports_it(tiny_model: str, tmp_path: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF")
    Image.open(SAMPLE_IMAGES / "chelsea.png").save(tmp_path / "cat.avif")
    result = predict(tiny_model, str(tmp_path), "--labels", "cat,dog")
    assert [Path(r["path"]).name for r in rows_of(result)] == ["cat.avif"]
    assert "predictions" in rows_of(result)[0]


def test_unwritable_output_is_a_usage_error(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root
    for command in ("predict", "label"):
        result = runner.invoke(
            app,
            [
                command,
                str(tmp_path / "a.png"),
                "--labels",
                "cat,dog",
                "-o",
                str(tmp_path / "out.csv"),
                "--model",
                tiny_model,
            ],
        )
        assert result.exit_code == 2, command
        assert "permission denied" in result.stderr
