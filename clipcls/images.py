"""Find image files under the given paths and decode them into RGB pictures."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image, ImageOps, UnidentifiedImageError

from clipcls.errors import ImageError, UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
STDIN = "-"


def is_image_name(name: str) -> bool:
    """True if the file name has one of the image extensions, in any case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_sorted(folder: Path, include_hidden: bool, exclude: str | None) -> Iterator[Path]:
    """Yield image files below folder depth-first, each folder's entries sorted by name."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return  # an unreadable folder holds nothing we can classify
    for entry in entries:
        if not include_hidden and _is_hidden(entry.name):
            continue
        path = folder / entry.name
        # Folder links are not followed: that is how a tree with a link loop stays finite.
        if entry.is_dir(follow_symlinks=False):
            if exclude is None or os.path.realpath(path) != exclude:
                yield from _walk_sorted(path, include_hidden, exclude)
        elif is_image_name(entry.name):
            yield path


def read_path_list(stream: TextIO) -> list[str]:
    """Read one path per line (blank lines skipped), as `clipcls predict -` does from stdin."""
    return [line.rstrip("\r\n") for line in stream if line.strip()]


def check_inputs(inputs: Sequence[str]) -> None:
    """Fail before any work if an input path does not exist."""
    if not inputs:
        raise UsageError("no input paths given")
    for item in inputs:
        if not os.path.lexists(item):
            raise UsageError(f"input path does not exist: {item}")


def iter_image_paths(
    inputs: Iterable[str], include_hidden: bool = False, exclude: Path | None = None
) -> Iterator[Path]:
    """Yield the files to classify: named files as given, folders walked in sorted order.

    A folder equal to `exclude` (such as the --sort-into target inside the input) is not walked.
    """
    skip = os.path.realpath(exclude) if exclude is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from _walk_sorted(path, include_hidden, skip)
        else:
            yield path


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode a file into an RGB image as a viewer shows it, or raise ImageError.

    With draft_size, libjpeg decodes a large JPEG at 1/2, 1/4 or 1/8 scale, keeping both sides
    at least draft_size: several times faster and smaller in memory than a full decode.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's per-file warnings would flood stderr
            with Image.open(path) as opened:
                if draft_size is not None and opened.format == "JPEG":
                    opened.draft("RGB", (draft_size, draft_size))
                opened.load()
                image = ImageOps.exif_transpose(opened)
                return to_rgb(image)
    except FileNotFoundError:
        raise ImageError(f"file not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image: {path}") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large: {path} ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"cannot decode {path}: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency over neutral gray."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
