"""An ONNX export folder (`clipcls models export MODEL DIR --onnx`): its manifest, the
digests of its files, its identity, and where `clipcls models prepare` keeps one in the cache.

The folder is used as `--model local-dir:DIR`; the manifest `clipcls_onnx.json` marks it and
lists every other file with its SHA-256, so the manifest's own digest names the whole folder.
Torch-free: reading a folder must cost milliseconds before ONNX Runtime is even imported.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OnnxFolder:
    """A read, checked ONNX export folder."""

    root: Path
    manifest: dict[str, Any]
    identity: str  # onnx:sha256:<digest of the manifest's bytes>

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def tokenizer(self) -> dict[str, Any]:
        return dict(self.manifest["tokenizer"])

    @property
    def text(self) -> dict[str, Any]:
        return dict(self.manifest["text"])

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.manifest["preprocess"])


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
    if verify:
        verify_files(root, manifest["files"], memo)
    identity = f"{IDENTITY_PREFIX}sha256:{hashlib.sha256(data).hexdigest()}"
    return OnnxFolder(root, manifest, identity)


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
        if name != os.path.basename(name) or name in ("", ".", "..", MANIFEST):
            raise UnusableExport(f"{where} lists {name!r}, which is not a file of the folder")
    for section in ("image", "text"):
        if manifest[section].get("file") not in files:
            raise UnusableExport(f"{where}: the {section} tower's file is not in its 'files' list")
    if manifest["preprocess"].get("resize_mode", "shortest") not in RESIZE_MODES:
        raise UnusableExport(
            f"{where}: unknown resize_mode {manifest['preprocess']['resize_mode']!r}"
        )
    if not isinstance(manifest.get("logit_scale"), int | float):
        raise UnusableExport(f"{where} has no logit_scale: export the model again")


def verify_files(root: Path, files: dict[str, str], memo: Path | None) -> None:
    """Every listed file is there, a regular file, with the digest recorded for it."""
    for name in files:
        if not (root / name).is_file():
            raise UnusableExport(f"{root}: {name} is missing; export the model again")
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
