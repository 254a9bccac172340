"""An ONNX export folder (`clipcls models export MODEL DIR --onnx`): its manifest, the
digests of its files, its identity, and where `clipcls models prepare` keeps one in the cache.

The folder is used as `--model local-dir:DIR`; the manifest `clipcls_onnx.json` marks it and
lists every other file with its SHA-256, so the manifest's own digest names the whole folder.
Torch-free: reading a folder must cost milliseconds before ONNX Runtime is even imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcls.digests import file_digest, file_digests
from clipcls.errors import ModelLoadError, UnusableExport

MANIFEST = "clipcls_onnx.json"
FORMAT = "clipcls-onnx-1"
IDENTITY_PREFIX = "onnx:"
PREPARED = "onnx"  # the cache's subfolder of prepared exports
MAX_MANIFEST_BYTES = 1024 * 1024
RESIZE_MODES = ("shortest", "longest", "squash")
MAX_SIDE = 16384  # pixels: a manifest's image size beyond this is damage, not a model
MAX_CONTEXT = 1 << 16  # tokens


@dataclass(frozen=True)
class OnnxFolder:
    """A read, checked ONNX export folder."""

    root: Path
    manifest: dict[str, Any]
    identity: str  # onnx:sha256:<digest of the manifest's bytes>
    # each file's (device, inode, size, mtime, ctime) as it was before its digest was checked
    versions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.root / name

    def check_unchanged(self, names: list[str]) -> None:
        """The files named are still those whose digests were checked (a link swapped, a file
        replaced or rewritten since: refused, as a session may have read the new one)."""
        for name in names:
            known = self.versions.get(name)
            if known is not None and _version(self.root / name) != known:
                raise UnusableExport(
                    f"{self.root}: {name} changed while the export was being opened: "
                    "run again, and leave the folder alone while it runs"
                )

    @property
    def tokenizer(self) -> dict[str, Any]:
        return dict(self.manifest["tokenizer"])

    @property
    def text(self) -> dict[str, Any]:
        return dict(self.manifest["text"])

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.manifest["preprocess"])


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def is_onnx_folder(folder: str | Path) -> bool:
    """Whether folder holds an ONNX export's manifest (a cheap check, nothing read)."""
    return (Path(folder).expanduser() / MANIFEST).is_file()


def folder_identity(folder: str | Path) -> str | None:
    """The identity of the export in folder, or None without a readable manifest."""
    try:
        data = _manifest_bytes(Path(folder).expanduser())
    except ModelLoadError:
        return None
    return f"{IDENTITY_PREFIX}sha256:{hashlib.sha256(data).hexdigest()}"


def _manifest_bytes(root: Path) -> bytes:
    from clipcls.regular import open_regular

    try:
        with open_regular(str(root / MANIFEST)) as stream:
            data: bytes = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise UnusableExport(f"cannot read {root / MANIFEST}: {error.strerror or error}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise UnusableExport(f"{root / MANIFEST} is over {MAX_MANIFEST_BYTES} bytes: no manifest")
    return data


def read_folder(folder: str | Path, memo: Path | None = None, verify: bool = True) -> OnnxFolder:
    """Read and check an export folder: its manifest's shape, and (verify) every listed file
    against its recorded digest. One-line ModelLoadError on anything wrong."""
    root = Path(folder).expanduser()
    data = _manifest_bytes(root)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise UnusableExport(f"{root / MANIFEST} is not valid JSON: {error}") from None
    _check_shape(root, manifest)
    versions = verify_files(root, manifest["files"], memo) if verify else {}
    identity = f"{IDENTITY_PREFIX}sha256:{hashlib.sha256(data).hexdigest()}"
    return OnnxFolder(root, manifest, identity, versions)


def _version(path: Path) -> tuple[int, ...]:
    try:
        found = os.stat(path)
    except OSError:
        return ()
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _check_shape(root: Path, manifest: Any) -> None:
    """The manifest has what the runtime reads, of the right types."""
    where = root / MANIFEST
    if not isinstance(manifest, dict):
        raise UnusableExport(f"{where} is not a clipcls ONNX manifest")
    if manifest.get("format") != FORMAT:
        found = manifest.get("format")
        raise UnusableExport(
            f"{where} has format {found!r}; this clipcls reads {FORMAT!r}: export the model again"
        )
    for key in ("image", "text", "tokenizer", "preprocess", "files"):
        if not isinstance(manifest.get(key), dict):
            raise UnusableExport(f"{where} has no {key!r} section: export the model again")
    files = manifest["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise UnusableExport(f"{where}: its 'files' list is damaged: export the model again")
    for name in files:
        if name != os.path.basename(name) or name in ("", ".", "..", MANIFEST) or "\0" in name:
            raise UnusableExport(f"{where} lists {name!r}, which is not a file of the folder")
    for section in ("image", "text"):
        if not _text(manifest[section].get("file")) or manifest[section]["file"] not in files:
            raise UnusableExport(f"{where}: the {section} tower's file is not in its 'files' list")
    if manifest["preprocess"].get("resize_mode", "shortest") not in RESIZE_MODES:
        raise UnusableExport(
            f"{where}: unknown resize_mode {manifest['preprocess']['resize_mode']!r}"
        )
    _check_values(where, manifest)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _size(value: Any) -> bool:
    if isinstance(value, list) and len(value) in (1, 2):
        return all(_count(side, 1, MAX_SIDE) for side in value)
    return _count(value, 1, MAX_SIDE)


# What the runtime reads from each section, and what each value must be (a missing optional
# key reads as None, which its check allows).
_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "image": {"input": _text, "output": _text},
    "text": {
        "input": _text,
        "output": _text,
        "context_length": lambda v: _count(v, 2, MAX_CONTEXT),
        "cut": lambda v: isinstance(v, bool),
        "pool": lambda v: v is None or isinstance(v, str),
        "eos_id": lambda v: v is None or _count(v, 0, 2**31),
    },
    "tokenizer": {
        "kind": lambda v: v in ("bpe", "hf"),
        "file": _text,
        "context_length": lambda v: _count(v, 2, MAX_CONTEXT),
        "clean": lambda v: v is None or isinstance(v, str),
        "strip_sep_token": lambda v: v is None or isinstance(v, bool),
        "pad_id": lambda v: v is None or _count(v, 0, 2**31),
    },
    "preprocess": {
        "size": _size,
        "mode": lambda v: v is None or isinstance(v, str),
        "interpolation": lambda v: v is None or isinstance(v, str),
        "fill_color": lambda v: v is None or _count(v, 0, 255),
    },
    "": {
        "logit_scale": _number,
        "logit_bias": lambda v: v is None or _number(v),
        "random_weights": lambda v: v is None or isinstance(v, bool),
        "pretrained": lambda v: v is None or isinstance(v, str),
    },
}


def _check_values(where: Path, manifest: dict[str, Any]) -> None:
    """Every value the runtime reads has its type and a sane range: a damaged or hand-edited
    manifest is one line here, not a traceback from deep in a run."""
    for section, checks in _CHECKS.items():
        values = manifest[section] if section else manifest
        for key, check in checks.items():
            if not check(values.get(key)):
                name = f"{section}.{key}" if section else key
                raise UnusableExport(
                    f"{where}: {name} is {values.get(key)!r}, which is not a value it can have: "
                    "export the model again"
                )
    if manifest["tokenizer"]["file"] not in manifest["files"]:
        raise UnusableExport(f"{where}: the tokenizer's file is not in its 'files' list")
    if manifest["tokenizer"]["context_length"] != manifest["text"]["context_length"]:
        raise UnusableExport(  # the text tower's positions end at its own context length
            f"{where}: the tokenizer's context_length is not the text tower's: "
            "export the model again"
        )


def verify_files(
    root: Path, files: dict[str, str], memo: Path | None
) -> dict[str, tuple[int, ...]]:
    """Every listed file is there, a regular file, with the digest recorded for it: each one's
    version as it was before its digest was checked."""
    for name in files:
        path = root / name
        if not (path.exists() or path.is_symlink()):
            raise UnusableExport(f"{root}: {name} is missing; export the model again")
        if not path.is_file():  # a FIFO, a device (a link to /dev/zero), a folder: never read
            raise UnusableExport(f"{root}: {name} is not a regular file; export the model again")
        inside = os.path.realpath(root)
        if os.path.dirname(os.path.realpath(path)) != inside:
            raise UnusableExport(  # onnxruntime refuses external data from outside its folder
                f"{root}: {name} is a link out of the folder: copy the file itself there"
            )
    versions = {name: _version(root / name) for name in files}
    found = file_digests([root / name for name in files], memo)
    for name, expected in files.items():
        digest = found.get(str(root / name))
        if digest is None:
            raise UnusableExport(f"{root}: {name} cannot be read as a regular file")
        if digest != expected:
            raise UnusableExport(
                f"{root}: {name} does not match the digest its manifest records "
                "(changed or damaged since export): export the model again"
            )
    return versions


def write_manifest(folder: Path, manifest: dict[str, Any], memo: Path | None = None) -> None:
    """Write folder's manifest last: the format, and the digest of every other file there."""
    names = sorted(
        path.name
        for path in folder.iterdir()
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    )
    files = {name: file_digest(folder / name, memo) for name in names}
    whole = {**manifest, "format": FORMAT, "files": files}
    partial = folder / f"{MANIFEST}.partial"
    partial.write_text(json.dumps(whole, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(folder / MANIFEST)


def prepared_folder(cache_dir: Path, identity: str) -> Path:
    """Where `clipcls models prepare` keeps the export of the weights named identity."""
    key = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir / PREPARED / key
