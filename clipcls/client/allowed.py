"""Which paths a server with `--allow-dir` roots may read, by name and links resolved: asked
by the client before it sends a path, and by the server before it opens one beneath its root
(server/roots.py), so that both sides draw the line in the same place."""

from __future__ import annotations

import os
from collections.abc import Sequence

OUTSIDE = "outside the server's --allow-dir roots"  # the same for missing, present and links


def real_path(path: str) -> str:
    """path with links, `.`, `..` and repeated slashes resolved (`//x` is `/x` on Linux)."""
    real = os.path.realpath(path)
    return os.sep + real.lstrip(os.sep)


def under(real: str, root: str) -> str | None:
    """real relative to root ("" for the root itself), or None when not under it."""
    if real == root:
        return ""
    prefix = root.rstrip(os.sep) + os.sep
    return real[len(prefix) :] if real.startswith(prefix) else None


def allowed(path: str, allow_dirs: Sequence[str]) -> bool:
    """True if path, its links resolved, lies under one of the roots (also resolved): the
    check by name that answers 403 early; the worker opens the file beneath its root."""
    try:
        real = real_path(path)
        return any(under(real, real_path(root)) is not None for root in allow_dirs)
    except (OSError, ValueError):
        return False
