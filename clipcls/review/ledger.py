"""The apply ledger beside an output (`OUTPUT.review-applied.jsonl`): each move `--apply` makes,
recorded as begun before the file moves and as done after, both on disk at once, so the next
apply finishes or forgets a move a stop cut short, and the page finds files where they went."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.pathtext import clean_text, path_to_text, text_to_path
from clipcls.review.beside import open_beside
from clipcls.review.table import ReviewRow, ReviewTable

LEDGER_SUFFIX = ".review-applied.jsonl"


def ledger_path(output: Path) -> Path:
    """Where the moves an apply made are recorded."""
    return output.with_name(output.name + LEDGER_SUFFIX)


@dataclass(frozen=True)
class Placed:
    """Where applies put a row's sorted file: the latest move done, and a move begun after it
    that nothing says was done (a stop cut it short, or it failed)."""

    done: str | None = None
    begun: str | None = None
    begun_label: str = ""


def _records(table: ReviewTable) -> list[dict[str, Any]]:
    path = ledger_path(table.output)
    try:
        fd = open_beside(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as stream:
        lines = stream.read().split(b"\n")
    records = []
    for line in lines:  # a line a kill cut short is left out
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def _for_row(table: ReviewTable, record: dict[str, Any]) -> tuple[int, str, str, bool] | None:
    """(index, to, label, done) of a record made for a row as the output holds it now; None for
    any other (a row that changed since, or not a record)."""
    try:
        index, to, label = int(record["index"]), str(record["to"]), str(record.get("label", ""))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not 0 <= index < len(table.rows):
        return None
    row = table.rows[index]
    if row.path != record.get("path") or record.get("row", row.digest()) != row.digest():
        return None  # a ledger from before rows were bound to has no "row": its path decides
    return index, text_to_path(to), label, record.get("done") is not False


def read_ledger(table: ReviewTable) -> dict[int, Placed]:
    """Where earlier applies put each row's file, for rows as the output holds them now."""
    placed: dict[int, Placed] = {}
    for record in _records(table):
        found = _for_row(table, record)
        if found is None:
            continue
        index, to, label, done = found
        earlier = placed.get(index, Placed())
        placed[index] = Placed(to) if done else Placed(earlier.done, to, label)
    return placed


def applied_places(table: ReviewTable) -> dict[int, str]:
    """Where the latest finished apply put each row's file."""
    return {index: at.done for index, at in read_ledger(table).items() if at.done is not None}


class Ledger:
    """The ledger open to append: each record a whole line, on disk before the next step."""

    def __init__(self, output: Path) -> None:
        self.path = ledger_path(output)
        self.fd = open_beside(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            self._write(b"\n")  # a line a kill cut short ends here: the next is whole

    def record(self, row: ReviewRow, index: int, label: str, to: Path, done: bool) -> None:
        """Say that row index's file is being moved (done=False), or was moved, to `to`."""
        record = {"index": index, "path": row.path, "label": label, "to": path_to_text(str(to))}
        record |= {"row": row.digest(), "done": done}
        self._write((json.dumps(record) + "\n").encode("ascii"))

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.fd, data) :]
            os.fsync(self.fd)
        except OSError as error:  # nothing moves that the ledger could not record first
            path = clean_text(str(self.path))
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
