"""How `search`'s arguments divide into the inputs to search and the query text, and the
check of its query images, both before any model loads."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from clipcls.errors import ImageError, UsageError
from clipcls.images import check_image
from clipcls.pathtext import clean_text

CURRENT = "."  # searched where no folder is given (rclip's habit: `search "a cat"`)


def split_query(args: list[str], images: list[Path], saved: bool) -> tuple[str | None, list[str]]:
    """(query text, inputs) from the arguments: the last is the query text, except with
    --image where it names an existing file or folder (then every argument is an input);
    no input means the current folder; with --from-embeddings there are no inputs."""
    if saved:
        if len(args) > 1:
            raise UsageError(
                "--from-embeddings searches the files the saved run labeled: give only the query"
            )
        return (args[0] if args else None), []
    if images and args and os.path.lexists(args[-1]):
        return None, args
    if not args and not images:
        raise UsageError('give the query: search "QUERY" (the current folder) or DIR... "QUERY"')
    text, inputs = (args[-1], args[:-1]) if args else (None, [])
    if text is not None and not inputs and os.path.isdir(text):
        raise UsageError(
            f"{clean_text(text)} is a folder: give the query after it: search "
            f'{_quoted(text)} "QUERY" (or search . {_quoted(text)} for that text here)'
        )
    missing = [path for path in inputs if not os.path.lexists(path)]
    if text is not None and missing and os.path.lexists(text):  # a folder or an image file
        order = [path for path in inputs if path != missing[0]] + [text, missing[0]]
        raise UsageError(
            f"input path does not exist: {clean_text(missing[0])}; the query comes last: "
            f"search {' '.join(_quoted(argument) for argument in order)}"
        )
    if not inputs:
        _check_current(text)
    return text, inputs or [CURRENT]


def _check_current(text: str | None) -> None:
    """Refuse to stand the current folder in for a folder not given where it is a file
    system's root (`/`, `C:\\`): walking every mount is never what `search "a cat"` meant."""
    here = os.path.realpath(CURRENT)
    if os.path.dirname(here) != here:
        return
    query = _quoted(text) if text is not None else "--image FILE"
    shown = clean_text(here)
    raise UsageError(
        f"the current folder is {shown}, the whole file system: give the folder to search: "
        f"search DIR {query} (or search {_quoted(here)} {query} to mean it)"
    )


def _quoted(text: str) -> str:
    """An argument as a shell would need it typed (plain words as they are)."""
    return clean_text(shlex.quote(text))


def check_query_images(images: list[Path]) -> None:
    """Refuse a query image that cannot be read, before anything loads or is embedded."""
    for image in images:
        try:
            check_image(image)
        except ImageError as error:
            raise UsageError(f"cannot read query image {clean_text(str(image))}: {error}") from None
