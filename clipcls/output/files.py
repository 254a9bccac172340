"""Output files: the checks before anything is written (the format itself: output.formats)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from clipcls.errors import UsageError

# Created here or not at all: a name someone planted (a link to their chosen file) is not opened.
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
NEW_FILE |= getattr(os, "O_CLOEXEC", 0)


def temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file beside path, to be written whole and renamed over it: a hidden name no one
    can guess ahead (not the process id), created by this call, mode 0666 less the umask.
    OSError where the folder cannot take it."""
    name = path.name if len(os.fsencode(path.name)) <= 200 else ""  # room for the rest
    while True:
        temporary = path.with_name(f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, NEW_FILE, 0o666), temporary
        except FileExistsError:  # planted there, or a rare repeat: another name
            continue


def check_writable(path: Path, option: str = "--output") -> None:
    """Fail before any model loads if the output file cannot be created or appended to."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"{option} folder does not exist: {path.parent}")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")


def check_new_output(path: Path, overwrite: bool, option: str = "--output") -> None:
    """Fail before any model loads if the output cannot be written, or if it would replace
    the contents of an existing file without --overwrite (the rule `label` keeps too)."""
    check_writable(path, option)
    if path.is_file() and path.stat().st_size > 0 and not overwrite:
        raise UsageError(f"{option} {path} already exists: add --overwrite to replace it")


def page_path(given: str) -> Path:
    """The HTML file a --report value names: `out/` or an existing folder means out/index.html;
    a name without a suffix gets `.html` (`report` -> report.html), so a browser opens it.

    The folder itself may be new (it is made when the page is written); its parent must exist.
    """
    path = Path(given)
    if given.endswith(("/", os.sep)) or path.is_dir():
        return path / "index.html"
    return path if path.suffix else path.with_name(path.name + ".html")


def check_page(page: Path, overwrite: bool) -> None:
    """check_new_output for a --report page, whose folder may still have to be made."""
    if page.parent.exists():
        check_new_output(page, overwrite, "--report")
    else:
        check_writable(page.parent, "--report")


def check_target(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to replace an existing output unless told to resume or overwrite it."""
    if resume and overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    check_writable(path)
    if path.exists() and not path.is_file():
        raise UsageError(f"--output {path} is not a regular file")
    if path.exists() and path.stat().st_size > 0 and not (resume or overwrite):
        raise UsageError(
            f"{path} already exists: add --resume to continue it or --overwrite to replace it"
        )
