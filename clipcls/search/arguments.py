"""How `search`'s arguments divide into the inputs to search and the query text, and the
check of its query images, both before any model loads."""

from __future__ import annotations

import os
from pathlib import Path

from clipcls.errors import ImageError, UsageError
from clipcls.images import check_image
from clipcls.pathtext import clean_text


def split_query(args: list[str], images: list[Path], saved: bool) -> tuple[str | None, list[str]]:
    """(query text, inputs) from the arguments: the last is the query text, except with
    --image where it names an existing file or folder (then every argument is an input);
    with --from-embeddings there are no inputs."""
    if saved:
        if len(args) > 1:
            raise UsageError(
                "--from-embeddings searches the files the saved run labeled: give only the query"
            )
        return (args[0] if args else None), []
    if images and args and os.path.lexists(args[-1]):
        return None, args
    if len(args) < 2:
        raise UsageError('give the folders to search, then the query: search DIR... "QUERY"')
    return args[-1], args[:-1]


def check_query_images(images: list[Path]) -> None:
    """Refuse a query image that cannot be read, before anything loads or is embedded."""
    for image in images:
        try:
            check_image(image)
        except ImageError as error:
            raise UsageError(f"cannot read query image {clean_text(str(image))}: {error}") from None
