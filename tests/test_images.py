"""Finding image files and decoding them the way a viewer shows them."""

import io
from pathlib import Path

import pytest
from PIL import Image

from clipcls.errors import ImageError, UsageError
from clipcls.images import check_inputs, iter_image_paths, load_image, read_path_list


def touch_image(path: Path, color: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {
        "jpg": "JPEG",
        "jpeg": "JPEG",
        "png": "PNG",
        "webp": "WEBP",
        "bmp": "BMP",
        "gif": "GIF",
        "tif": "TIFF",
        "tiff": "TIFF",
    }[path.suffix.lower().lstrip(".")]
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def test_walk_is_recursive_sorted_and_case_insensitive(tmp_path: Path) -> None:
    for name in [
        "b.JPG",
        "a.png",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "e.Bmp",
        "f.gif",
        "g.tif",
        "h.jpeg",
    ]:
        touch_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_paths([str(tmp_path)])]
    assert found == [
        "a.png",
        "b.JPG",
        "e.Bmp",
        "f.gif",
        "g.tif",
        "h.jpeg",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
    ]


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    touch_image(tmp_path / "seen.png")
    touch_image(tmp_path / ".hidden.png")
    touch_image(tmp_path / ".thumbnails" / "x.png")
    found = [p.name for p in iter_image_paths([str(tmp_path)])]
    assert found == ["seen.png"]
    with_hidden = sorted(p.name for p in iter_image_paths([str(tmp_path)], include_hidden=True))
    assert with_hidden == [".hidden.png", "seen.png", "x.png"]


def test_named_files_keep_the_given_order(tmp_path: Path) -> None:
    b = touch_image(tmp_path / "b.png")
    a = touch_image(tmp_path / "a.png")
    assert list(iter_image_paths([str(b), str(a)])) == [b, a]


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist: .*missing.png"):
        check_inputs([str(tmp_path / "missing.png")])


def test_path_list_from_stdin_skips_blank_lines() -> None:
    stream = io.StringIO("a.jpg\n\n  \nsome dir/b c.png\n")
    assert read_path_list(stream) == ["a.jpg", "some dir/b c.png"]


def test_grayscale_and_palette_images_become_rgb(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.new("L", (5, 4), 200).save(gray)
    image = load_image(gray)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert image.getpixel((0, 0)) == (200, 200, 200)


def test_transparency_is_composited_on_neutral_gray(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(path)
    image = load_image(path)
    assert image.getpixel((1, 1)) == (128, 128, 128)
    assert image.getpixel((0, 0)) == (0, 0, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 128, 0)).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "not a readable image"), (b"<html>nope</html>", "not a readable image")],
)
def test_unreadable_files_raise_image_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_jpeg_raises_image_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(bad)


def test_missing_file_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "gone.png")
