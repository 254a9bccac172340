"""Find image files under the given paths and decode them into RGB pictures."""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

import clipcls.regular as regular
from clipcls.errors import ImageError, UsageError
from clipcls.remote import fetch, is_s3, is_url, list_s3

try:  # HEIC/HEIF through the optional extra: pip install 'clipcls[heif]'
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_EXTENSIONS = {".heic", ".heif"}
except ImportError:
    HEIF_EXTENSIONS = set()

BASE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
AVIF_EXTENSIONS = {".avif"} if features.check("avif") else set()
IMAGE_EXTENSIONS = frozenset(BASE_EXTENSIONS | AVIF_EXTENSIONS | HEIF_EXTENSIONS)
DEFAULT_MAX_MEGAPIXELS = 200.0
HEADER_BUDGET = 4 << 20  # bytes Pillow may read before it knows the image size
# clipcls checks the declared size itself, before decoding, against --max-megapixels.
Image.MAX_IMAGE_PIXELS = None
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
STDIN = "-"
MARKER = ".clipcls-sort"  # marks a --sort-into folder, so that walks skip clipcls's own output


def is_image_name(name: str) -> bool:
    """True if the file name has one of the image extensions, in any case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


Scan = Callable[[Path], list[tuple[str, bool]]]  # a folder's entries: (name, is a folder)


def scan_folder(folder: Path | int) -> list[tuple[str, bool]]:
    """folder's (or an open folder fd's) entries, each (name, whether it is a folder, not
    through a link); OSError if it cannot be listed. A server lists beneath its roots."""
    with os.scandir(folder) as scan:
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]


def _walk_sorted(
    folder: Path,
    include_hidden: bool,
    exclude: set[str],
    on_skip: Callable[[Path], None] | None,
    scan: Scan,
) -> Iterator[Path]:
    """Yield image files below folder depth-first, each folder's entries sorted by name.

    The walk keeps its own stack, so a tree of any depth is fine. A folder that cannot be
    listed is yielded itself: loading it gives an error row that says why. A folder below the
    top that clipcls sorted files into (it holds the MARKER file) is not walked: its files are
    copies, links or moves of images labeled before.
    """
    stack: list[Iterator[tuple[Path, bool]]] = []
    try:
        stack.append(_listing(folder, True, on_skip, scan))
    except OSError:
        yield folder
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path, is_dir = entry
        if not include_hidden and path.name.startswith("."):  # hidden
            continue
        # Folder links are not followed: that is how a tree with a link loop stays finite.
        if is_dir:
            if not exclude or os.path.realpath(path) not in exclude:
                try:
                    stack.append(_listing(path, False, on_skip, scan))
                except OSError:
                    yield path
        elif is_image_name(path.name):
            yield path  # dangling links and special files too: reported, never skipped silently


def _listing(
    folder: Path, top: bool, on_skip: Callable[[Path], None] | None, scan: Scan
) -> Iterator[tuple[Path, bool]]:
    """A folder's entries sorted by name (none for a sorted folder below the top)."""
    entries = sorted(scan(folder))
    if not top and any(name == MARKER for name, _ in entries):
        if on_skip is not None:
            on_skip(folder)
        return iter(())
    return ((folder / name, is_dir) for name, is_dir in entries)


def _wanted(include_hidden: bool) -> Callable[[str], bool]:
    """Which keys under an s3:// prefix are images, by the rules a folder walk uses."""

    def wanted(key: str) -> bool:
        parts = key.split("/")
        hidden = not include_hidden and any(part.startswith(".") for part in parts)
        return is_image_name(parts[-1]) and not hidden

    return wanted


def read_path_list(stream: TextIO) -> list[str]:
    """Read one path per line (blank lines skipped), as `clipcls predict -` does from stdin."""
    return [line.rstrip("\r\n") for line in stream if line.strip()]


def check_inputs(inputs: Sequence[str]) -> None:
    """Fail before any work if an input path does not exist."""
    if not inputs:
        raise UsageError("no input paths given")
    for item in inputs:
        if not is_url(item) and not os.path.lexists(item):
            raise UsageError(f"input path does not exist: {item}")


def _inside(real: str, folders: Iterable[str]) -> bool:
    return any(
        real == folder or real.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders
    )


def iter_image_paths(
    inputs: Iterable[str],
    include_hidden: bool = False,
    exclude: Path | None = None,
    on_skip: Callable[[Path], None] | None = None,
    scan: Scan = scan_folder,
) -> Iterator[Path]:
    """Yield the files to classify, each once: named files as given, folders walked sorted.

    A folder given twice, or inside another input folder, is walked once; a folder equal to
    `exclude` (such as the --sort-into target inside the input) is not walked at all, and
    neither is a folder an earlier run sorted into; on_skip hears of each such folder.
    """
    inputs = list(inputs)
    # Files named on their own are always tried, hidden or not, whatever their extension, in
    # their place in the list; a walk that meets them leaves them out.
    named = {os.path.realpath(i) for i in inputs if not is_url(i) and not os.path.isdir(i)}
    walked: list[str] = []
    done: set[str] = set()
    skip = {os.path.realpath(exclude)} if exclude is not None else set()
    for item in inputs:
        if is_url(item):  # kept as text (Path folds its //); an s3:// prefix is listed
            urls = list_s3(item, _wanted(include_hidden)) if is_s3(item) else [item]
            for url in urls:
                if url not in done:
                    done.add(url)
                    yield url  # type: ignore[misc]
            continue
        path, real = Path(item), os.path.realpath(item)
        if not path.is_dir():
            if real not in done:
                done.add(real)
                yield path
        elif not _inside(real, walked):  # else already covered by an earlier folder
            for found in _walk_sorted(path, include_hidden, skip | set(walked), on_skip, scan):
                if not named or os.path.realpath(found) not in named:
                    yield found
            walked.append(real)


def _check_size(path: str | Path, image: Image.Image, max_megapixels: float) -> None:
    width, height = image.size
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageError(
            f"image too large: {path} is {width}x{height} ({megapixels:.0f} megapixels), "
            f"over --max-megapixels {max_megapixels:g}"
        )


class HeaderTooLong(ValueError):
    """Pillow read too far without finding an image header."""


class _HeaderBudget(io.RawIOBase):
    """A file that Pillow may read only so far while it looks for a header: a file of zeros
    behind a JPEG marker is otherwise scanned byte by byte, 2 GB in 100 s."""

    def __init__(self, stream: BinaryIO, budget: int) -> None:
        super().__init__()
        self.stream, self.budget = stream, budget
        self.limited = True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        if self.limited:
            self.budget -= len(data)
            if self.budget < 0:
                raise HeaderTooLong(f"no image header in the first {HEADER_BUDGET >> 20} MiB")
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; a FIFO, device or socket is refused without blocking."""
    try:
        return regular.open_regular(path)
    except regular.NotRegular as error:
        if error.folder:
            os.scandir(path).close()  # raises the reason a walk could not list it
            raise ImageError(f"is a folder, not an image: {path}") from None
        raise ImageError(f"not a regular file: {path}") from None


def check_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> None:
    """Run load_image's checks on a file without decoding it: a regular file, a readable
    header, a declared size within max_megapixels (for images answered from the cache)."""
    try:
        if is_url(path):
            return  # checked when it was downloaded and embedded: a HEAD cannot tell its size
        with open_regular(path) as stream:
            budgeted = _HeaderBudget(stream, HEADER_BUDGET)
            with warnings.catch_warnings(), Image.open(io.BufferedReader(budgeted)) as opened:
                warnings.simplefilter("ignore")
                _check_size(path, opened, max_megapixels)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as error:
        raise ImageError(f"cannot read {path}: {error}") from None


def size_error(
    path: str | Path, max_megapixels: float, data: bytes | BinaryIO | None = None
) -> str | None:
    """load_image's error for an image declared larger than max_megapixels (or a file that is
    not regular), read from the header alone (of data: its bytes, or an open stream, closed
    after); None otherwise, also where the header cannot be read (decoding says why). For
    files sent to a server, and images a server answers from its cache: the same error row."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with source if source is not None else open_regular(path) as stream:
            budgeted = _HeaderBudget(stream, HEADER_BUDGET)
            with warnings.catch_warnings(), Image.open(io.BufferedReader(budgeted)) as opened:
                warnings.simplefilter("ignore")
                _check_size(path, opened, max_megapixels)
    except ImageError as error:
        return str(error)
    except Exception:  # unreadable: the server's decoding gives the reason, as here
        return None
    return None


def load_image(
    path: str | Path,
    draft_size: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    data: bytes | BinaryIO | None = None,
) -> Image.Image:
    """Decode a file (or data, the bytes or an open stream of one named path) into an RGB
    image as a viewer shows it, or raise ImageError.

    Only regular files are opened. The declared size is checked against max_megapixels before
    any pixel is decoded. With draft_size, libjpeg decodes a large JPEG at 1/2, 1/4 or 1/8
    scale, keeping both sides at least draft_size: several times faster and smaller in memory
    than a full decode.
    """
    try:
        if data is not None:
            source: BinaryIO = io.BytesIO(data) if isinstance(data, bytes) else data
        else:
            source = fetch(str(path), max_megapixels) if is_url(path) else open_regular(path)
        with warnings.catch_warnings(), source as stream:
            warnings.simplefilter("ignore")  # Pillow's per-file warnings would flood stderr
            budgeted = _HeaderBudget(stream, HEADER_BUDGET)
            with Image.open(io.BufferedReader(budgeted)) as opened:
                budgeted.limited = False
                _check_size(path, opened, max_megapixels)
                if draft_size is not None and opened.format == "JPEG":
                    opened.draft("RGB", (draft_size, draft_size))
                opened.load()
                image = ImageOps.exif_transpose(opened)
                return to_rgb(image)
    except FileNotFoundError:
        raise ImageError(f"file not found: {path}") from None
    except PermissionError:
        what = "cannot list folder" if os.path.isdir(path) else "permission denied"
        raise ImageError(f"{what}: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image: {path}") from None
    except HeaderTooLong as error:
        raise ImageError(f"not a readable image: {path} ({error})") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large: {path} ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as error:
        raise ImageError(f"cannot decode {path}: {error or type(error).__name__}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale scaled into 0-255 (convert() would clip them to white)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low or 1.0)
    else:
        scaled = values / (65535.0 if image.mode != "I" or values.max() > 255 else 255.0)
    return Image.fromarray(np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB, compositing transparency over neutral gray."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT or image.mode == "F":
        return _to_8bit(image).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
