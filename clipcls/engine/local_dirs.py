"""The local-dir: folders this machine loaded models from, for `clipcls models --cached`: a
small JSON file in the cache folder, rewritten whole under a lock, read leniently (a damaged
file is an empty list, a folder since removed is marked gone)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from clipcls.engine.onnx_folder import MANIFEST
from clipcls.engine.sources import CONFIG_FILE, LOCAL_DIR
from clipcls.settings import ModelSettings
from clipcls.userfiles import UnusableFile, locked, read_small_text, replace_text

FILE_NAME = "local-dirs.json"
MARKERS = (CONFIG_FILE, MANIFEST)  # an open_clip folder, or an ONNX export
MAX_FOLDERS = 200  # the least recently used beyond this are forgotten
MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UsedFolder:
    """A local-dir: folder a model was loaded from: absolute path, when, and whether its
    open_clip_config.json is still there."""

    path: str
    last_used: float
    present: bool

    @property
    def model(self) -> str:
        return f"{LOCAL_DIR}{self.path}"


def _read(path: Path) -> dict[str, float]:
    """The recorded folders; whatever cannot be read as such is left out (never an error)."""
    try:
        found = json.loads(read_small_text(path, MAX_BYTES) or "{}")
    except (OSError, UnusableFile, ValueError, RecursionError):
        return {}
    folders = found.get("folders") if isinstance(found, dict) else None
    if not isinstance(folders, dict):
        return {}
    return {
        folder: float(used)
        for folder, used in folders.items()
        if os.path.isabs(folder)
        and "\x00" not in folder
        and isinstance(used, int | float)
        and not isinstance(used, bool)
        and math.isfinite(used)
    }


def note_local_dir(settings: ModelSettings) -> None:
    """Remember the folder of a local-dir: model just loaded; a failure only loses the note."""
    if not settings.model.startswith(LOCAL_DIR):
        return
    folder = os.path.abspath(os.path.expanduser(settings.model.removeprefix(LOCAL_DIR)))
    target = settings.resolved_cache_dir() / FILE_NAME
    with contextlib.suppress(OSError, ValueError):  # ValueError: a NUL or unencodable name
        with locked(target):
            folders = _read(target)
            folders[folder] = time.time()
            kept = sorted(folders.items(), key=lambda item: item[1])[-MAX_FOLDERS:]
            # ASCII JSON: a name that is not UTF-8 is kept as its \udcXX escapes
            replace_text(target, json.dumps({"version": 1, "folders": dict(kept)}, indent=1))


def used_local_dirs(cache_dir: Path) -> list[UsedFolder]:
    """The recorded folders, most recently used first."""
    folders = sorted(_read(cache_dir / FILE_NAME).items(), key=lambda item: -item[1])
    return [
        UsedFolder(folder, used, any(os.path.isfile(os.path.join(folder, n)) for n in MARKERS))
        for folder, used in folders
    ]
