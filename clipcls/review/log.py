"""The review file beside an output (`OUTPUT.review.jsonl`): a header naming the output, then one
line per decision or undo, appended, flushed and fsynced at once, so a kill loses at most the
decision in flight; reopening replays it. One reviewer at a time (an OS lock)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.labeling.lock import lock_exclusively
from clipcls.pathtext import clean_text, path_key
from clipcls.review.beside import open_beside, sync_folder
from clipcls.review.newlabel import MAX_ADDED, check_new_label
from clipcls.review.table import ReviewTable

SUFFIX = ".review.jsonl"
RECORD = "clipcls-review/1"
ACTIONS = ("set", "unknown", "accept")
MAX_BYTES = 1 << 30  # a million decisions take ~200 MB; anything larger is not ours


@dataclass(frozen=True)
class Decision:
    """A reviewer's answer for one row."""

    index: int
    path: str
    label: str  # the label now given (the unknown label for `x`)
    previous: str  # the output's label
    action: str  # "set" (1-9 or click), "unknown" (x), "accept" (Enter: keep the label)
    seq: int = 0  # its number in the review file: what a page's undo of its own names


def review_path(output: Path) -> Path:
    """Where an output's review file lives."""
    return output.with_name(output.name + SUFFIX)


def output_digest(table: ReviewTable) -> str:
    """The output's identity for its review file: its first row (its scores name the columns
    too), which a resumed run's appended rows leave alone and a new run over the file changes.
    Each decision is bound to its own row the same way (ReviewRow.digest)."""
    return table.rows[0].digest()


def _line(record: dict[str, Any]) -> bytes:
    # ASCII escapes: any path text, even one holding a lone surrogate, reads back exactly.
    return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


class ReviewLog:
    """The decisions of one review of one output; use open(), and close() when done."""

    def __init__(self, table: ReviewTable, path: Path, fd: int) -> None:
        self.table, self.path, self.fd = table, path, fd
        self.notes: list[str] = []  # what replaying cut off or dropped, one line each
        self._stack: list[tuple[int, Decision]] = []  # live decisions, oldest first, with seq
        self._current: dict[int, Decision] = {}
        self._seq = 0
        self.added: list[str] = []  # labels the review added, in order (record "add")
        self._guard = threading.Lock()  # the page's server answers from several threads
        self.read_only = False

    @classmethod
    def open(cls, table: ReviewTable) -> ReviewLog:
        """Open (or start) the review file beside the output, locked for this session, and
        replay what it holds. UsageError for a second reviewer (naming its pid), a file of
        another output, or a file at that name that is not a review file (left untouched)."""
        path = review_path(table.output)
        fd = open_beside(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            lock_exclusively(fd, clean_text(str(path)), "its review")
            log = cls(table, path, fd)
            log._replay()
        except BaseException:
            os.close(fd)
            raise
        return log

    @classmethod
    def read(cls, table: ReviewTable) -> ReviewLog:
        """The decisions so far, read without the lock and changing nothing (the file is
        append-only, so a page open on it meanwhile is fine): what exports need. No file yet:
        no decisions."""
        path = review_path(table.output)
        try:
            fd = open_beside(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = os.open(os.devnull, os.O_RDONLY)
        try:
            log = cls(table, path, fd)
            log.read_only = True
            log._replay()
        except BaseException:
            os.close(fd)
            raise
        return log

    def _header(self) -> dict[str, Any]:
        output = path_key(str(self.table.output))
        return {"record": RECORD, "output": output, "output_digest": output_digest(self.table)}

    def _foreign(self, why: str) -> UsageError:
        return UsageError(
            f"{clean_text(str(self.path))} is not a clipcls review file ({why}); nothing was "
            "changed: move it away to start a review"
        )

    def _read(self) -> bytes:
        size = os.fstat(self.fd).st_size
        if size > MAX_BYTES:
            raise self._foreign("larger than any review")
        return os.pread(self.fd, size, 0)

    def _replay(self) -> None:
        data = self._read()
        header = self._header()
        complete = data[: data.rfind(b"\n") + 1]
        if not complete:  # new, or a header cut short by a kill: (re)write it
            if not _line(header).startswith(data):
                raise self._foreign("no header line")
            if self.read_only:
                return
            os.ftruncate(self.fd, 0)
            self._append(header)
            sync_folder(self.path)
            return
        lines = complete.split(b"\n")[:-1]
        self._check_header(lines[0], header)
        if len(complete) < len(data) and not self.read_only:
            os.ftruncate(self.fd, len(complete))  # a kill mid-write: the decision in flight
            self.notes.append(f"{clean_text(self.path.name)}: a cut-off last line was removed")
        dropped = 0
        for number, line in enumerate(lines[1:], start=2):
            try:
                dropped += not self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError, OverflowError, UsageError):  # 1e999
                raise UsageError(
                    f"line {number} of {clean_text(str(self.path))} is not a review record: "
                    "fix or move the file"
                ) from None
        if dropped:
            self.notes.append(
                f"{dropped} decision(s) were made for rows the output no longer holds as they "
                "were (it changed since): dropped"
            )

    def _check_header(self, line: bytes, expected: dict[str, Any]) -> None:
        try:
            found = json.loads(line)
        except ValueError:
            raise self._foreign("its first line is not JSON") from None
        if not isinstance(found, dict) or found.get("record") != RECORD:
            raise self._foreign("not its header")
        if found.get("output_digest") != expected["output_digest"]:
            raise UsageError(
                f"{clean_text(str(self.path))} is the review of another output "
                f"({clean_text(str(found.get('output')))}, or an earlier run over this file): "
                "move it away to start a new review"
            )
        if found.get("output") != expected["output"]:
            self.notes.append(
                f"{clean_text(self.path.name)} was written beside the output at "
                f"{clean_text(str(found.get('output')))}: it has moved"
            )

    def _apply(self, record: dict[str, Any]) -> bool:
        """Replay one record; False if it is a decision for a row that holds another file."""
        seq = int(record["seq"])
        self._seq = max(self._seq, seq)
        if "add" in record:  # checked again: the file may have been edited
            self.added.append(check_new_label(str(record["add"]), self.labels()))
            return True
        if "undo" in record:
            undone = int(record["undo"])
            # Undo takes back the latest live decision: look from the end.
            for at in range(len(self._stack) - 1, -1, -1):
                if self._stack[at][0] == undone:
                    index = self._stack.pop(at)[1].index
                    self._recompute({index})
                    break
            return True
        decision = Decision(
            int(record["index"]),
            str(record["path"]),
            str(record["label"]),
            str(record["previous"]),
            str(record["action"]),
            seq,
        )
        rows = self.table.rows
        if not 0 <= decision.index < len(rows) or rows[decision.index].path != decision.path:
            return False
        # Made for the row as it was, if its label, scores or place changed since (a decision
        # from before rows were bound to has no "row": its path decides).
        if record.get("row", rows[decision.index].digest()) != rows[decision.index].digest():
            return False
        self._stack.append((seq, decision))
        self._current[decision.index] = decision
        return True

    def _recompute(self, indices: set[int]) -> None:
        for index in indices:
            live = [decision for _, decision in self._stack if decision.index == index]
            if live:
                self._current[index] = live[-1]
            else:
                self._current.pop(index, None)

    def _append(self, record: dict[str, Any]) -> None:
        """Write one line at the end and wait until it is on disk."""
        if self.read_only:
            raise UsageError("this review was opened to read: it takes no decisions")
        data = _line(record)
        size = os.fstat(self.fd).st_size
        try:
            while data:
                data = data[os.write(self.fd, data) :]
            os.fsync(self.fd)
        except OSError as error:  # a full disk: no half line for the next decision to follow
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)
            path = clean_text(str(self.path))
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None

    def _checked_label(self, index: int, label: str, action: str) -> str:
        if action not in ACTIONS:
            raise UsageError(f"unknown review action {action!r}: one of {', '.join(ACTIONS)}")
        if not 0 <= index < len(self.table.rows):
            raise UsageError(f"no row {index} in {clean_text(self.table.output.name)}")
        row = self.table.rows[index]
        if row.error is not None:
            raise UsageError(f"row {index} could not be read at label time: nothing to review")
        if action == "unknown":
            return self.table.unknown_label
        if action == "accept":
            live = self._current.get(index)
            label = label or (live.label if live else row.label)
        allowed = (*self.labels(), self.table.unknown_label, row.label)
        if label not in allowed:
            raise UsageError(f"{clean_text(label)!r} is not one of the run's labels")
        return label

    def labels(self) -> tuple[str, ...]:
        """The run's labels, then those the review added."""
        return (*self.table.labels, *self.added)

    def add_label(self, text: str) -> str:
        """Add a label the run did not have (check_new_label), on disk before this returns."""
        with self._guard:
            if len(self.added) >= MAX_ADDED:
                raise UsageError(f"a review adds at most {MAX_ADDED} labels")
            name = check_new_label(text, (*self.labels(), self.table.unknown_label))
            self._seq += 1
            self._append({"seq": self._seq, "add": name, "time": _now()})
            self.added.append(name)
            return name

    def decide(self, index: int, label: str, action: str) -> Decision:
        """Record a decision for row index, on disk before this returns."""
        with self._guard:
            label = self._checked_label(index, label, action)
            row = self.table.rows[index]
            self._seq += 1
            decision = Decision(index, row.path, label, row.label, action, self._seq)
            record = {"seq": self._seq, "index": index, "path": row.path, "label": label}
            record |= {"previous": row.label, "action": action, "time": _now()}
            record["row"] = row.digest()  # binds it to this row as the output holds it now
            self._append(record)
            self._stack.append((self._seq, decision))
            self._current[index] = decision
            return decision

    def undo(self, seq: int | None = None) -> Decision | None:
        """Take back decision number seq, or the latest live one (recorded as an undo line);
        None if it is not live (undone already) or none is left. Two pages on one review
        each take back their own decisions by number, never the other's latest."""
        with self._guard:
            numbers = [number for number, _ in self._stack]
            if not numbers or (seq is not None and seq not in numbers):
                return None
            at = len(numbers) - 1 if seq is None else len(numbers) - 1 - numbers[::-1].index(seq)
            taken, decision = self._stack[at]
            self._seq += 1
            self._append({"seq": self._seq, "undo": taken})
            self._stack.pop(at)
            self._recompute({decision.index})
            return decision

    def current(self) -> dict[int, Decision]:
        """The live decision per row index."""
        with self._guard:
            return dict(self._current)

    def progress(self) -> tuple[int, int, int]:
        """(reviewed, changed, left): rows with a decision, those whose label it changed, and
        the readable rows without one."""
        with self._guard:
            reviewed = len(self._current)
            changed = sum(d.label != d.previous for d in self._current.values())
            readable = sum(row.error is None for row in self.table.rows)
            return reviewed, changed, max(readable - reviewed, 0)

    def close(self) -> None:
        """Release the file and its lock."""
        with self._guard:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> ReviewLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
