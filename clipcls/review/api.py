"""What the review page asks for, as plain values: the run's facts, a page of rows in margin
order with their live decisions, decisions and undo; the HTTP server only routes to it."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

from clipcls.errors import UsageError
from clipcls.pathtext import path_to_text
from clipcls.review.finish import finish_on_page, page_targets
from clipcls.review.ledger import applied_places, ledger_path
from clipcls.review.log import Decision, ReviewLog
from clipcls.review.sortfolder import open_sorted, sorted_file
from clipcls.review.table import ReviewRow, ReviewTable
from clipcls.review.thumbs import Opener, Thumb, Thumbs, open_file

PAGE_ROWS = 120
MAX_ROWS = 500  # rows one request may ask for
ACTIONS = ("set", "unknown", "accept")
STATUSES = ("unreviewed", "reviewed", "changed")  # the rows filter by their live decision


class ReviewApi:
    """One review: the table, its decision log and thumbnails, safe to call from threads."""

    def __init__(self, table: ReviewTable, log: ReviewLog, thumbs: Thumbs) -> None:
        self.table, self.log, self.thumbs = table, log, thumbs
        self.order = table.by_margin()
        self.rank = {index: rank for rank, index in enumerate(self.order)}
        # In the thumbnails' addresses: the browser keeps them, and the next review on the same
        # port and --api-key has the same row numbers for other pictures.
        self.session = secrets.token_hex(6)
        self.lock = threading.Lock()  # the log appends one decision at a time
        self._ledger_lock = threading.Lock()
        self._applied: dict[int, str] = {}
        self._ledger_version: tuple[int, int] | None = None
        self._finishing = threading.Lock()  # one finish action at a time
        self.closing = False

    def state(self) -> dict[str, Any]:
        """The run's facts the page shows once: labels (the run's in order, keys 1-9 the first
        nine; then those the review added), the unknown label, counts, where finishing writes."""
        table = self.table
        with self.lock:
            labels = self.log.labels()
        return {
            "output": os.path.basename(str(table.output)),
            "labels": list(labels),
            "added": list(labels[len(table.labels) :]),
            "unknown_label": table.unknown_label,
            "margin_source": table.margin_source,
            "sort_into": None if table.sort_into is None else str(table.sort_into),
            "mode": table.mode,
            "total": len(table.rows),
            "session": self.session,
            "progress": self.progress(),
            "finish": page_targets(table),
        }

    def progress(self) -> dict[str, int]:
        with self.lock:
            reviewed, changed, left = self.log.progress()
        return {"reviewed": reviewed, "changed": changed, "left": left}

    def rows(self, query: Mapping[str, str]) -> dict[str, Any]:
        """A page of rows, lowest margin first, of those matching the filters: `label` (the
        output's label), `min`/`max` (top-1 probability; rows without one are left out) and
        `status` (unreviewed, reviewed, changed); from `offset`, or past rank `after` (a
        page's last row: rows its decisions took out of a filter shift no offset)."""
        offset = _number(query, "offset", 0, int)
        after = _number(query, "after", -1, int)
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise UsageError(f"status must be one of {', '.join(STATUSES)}")
        limit = min(_number(query, "limit", PAGE_ROWS, int), MAX_ROWS)
        if offset < 0 or limit < 0:
            raise UsageError("offset and limit must not be negative")
        label = query.get("label") or None
        low = _number(query, "min", None, float)
        high = _number(query, "max", None, float)
        rows = self.table.rows
        with self.lock:
            live = self.log.current()
        chosen = [
            i
            for i in self.order
            if _matches(rows[i], label, low, high) and _in_status(rows[i], live.get(i), status)
        ]
        shown = [i for i in chosen if self.rank[i] > after][offset : offset + limit]
        page = [
            row_record(rows[i], live.get(i), self.missing(i), self._moved(i))
            | {"rank": self.rank[i]}
            for i in shown
        ]
        return {"total": len(chosen), "offset": offset, "rows": page, "progress": self.progress()}

    def decide(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record one decision: `set` a label, `unknown`, or `accept` the row's live label."""
        row = self.row(body.get("index"))
        action, label = body.get("action"), body.get("label") or ""
        if action not in ACTIONS or not isinstance(label, str):
            raise UsageError(f"action must be one of {', '.join(ACTIONS)}, label a string")
        with self.lock:
            decision = self.log.decide(row.index, label, action)
        return {"decision": asdict(decision), "progress": self.progress()}

    def add_label(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Add a label the run did not have (recorded in the review file): its name as kept,
        and every label now."""
        label = body.get("label")
        if not isinstance(label, str):
            raise UsageError("label must be a string")
        with self.lock:
            name = self.log.add_label(label)
            labels = self.log.labels()
        return {"label": name, "labels": list(labels)}

    def finish(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Export the corrected rows, export a support folder or apply to the sort folder
        (`action`), with the decisions so far; what was written where (finish_on_page)."""
        action = body.get("action")
        if not isinstance(action, str):
            raise UsageError("action must be export, support or apply")
        with self._finishing:
            if self.closing:
                raise UsageError("the review is stopping: nothing was done")
            with self.lock:
                decisions = self.log.current()
            done = finish_on_page(self.table, decisions, action)
        return done | {"progress": self.progress()}

    def close(self) -> None:
        """Take no more finish actions, and wait for the one under way (a stop waits for the
        move in progress and its ledger record)."""
        self.closing = True
        with self._finishing:
            pass

    def undo(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Undo decision `seq` (a page's own latest), else the latest decision: which row it
        was, and that row's live decision now."""
        seq = body.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise UsageError("seq must be a decision's number")
        with self.lock:
            undone = self.log.undo(seq)
            live = None if undone is None else self.log.current().get(undone.index)
        return {
            "undone": None if undone is None else undone.index,
            "decision": None if live is None else asdict(live),
            "progress": self.progress(),
        }

    def row(self, index: object) -> ReviewRow:
        """The row at index (an int within the table), or UsageError."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise UsageError("index must be a row number")
        if not 0 <= index < len(self.table.rows):
            raise UsageError(f"no row {index}")
        return self.table.rows[index]

    def thumb(self, index: int) -> Thumb:
        return self.thumbs.get(*self._picture(index))

    def image(self, index: int) -> tuple[bytes, str] | Thumb:
        return self.thumbs.full(*self._picture(index))

    def _picture(self, index: int) -> tuple[str, Opener]:
        """Where row index's image is now, and how to open it: a sorted file only beneath the
        run's sort folder, never by a link leading out of it."""
        path, in_sort_folder = self._where(index)
        sort_into = self.table.sort_into
        if in_sort_folder and sort_into is not None:
            return path, partial(open_sorted, sort_into)
        return path, open_file

    def _placed(self, index: int) -> str | None:
        """Where the row's sorted file is now: where an --apply moved it, else where the run
        put it."""
        return self._moved(index) or self.table.destination_path(index)

    def _moved(self, index: int) -> str | None:
        """Where the latest --apply moved the row's sorted file (its ledger, read again
        whenever the file changes: an apply may run while the page is open)."""
        try:
            status = os.stat(ledger_path(self.table.output))
            version: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except OSError:
            version = None
        with self._ledger_lock:
            if version != self._ledger_version:
                self._applied = applied_places(self.table) if version is not None else {}
                self._ledger_version = version
            return self._applied.get(index)

    def _sorted(self, index: int) -> str | None:
        """Where the row's sorted file is now, if that is inside the run's sort folder (the
        output or the ledger may name any place: only the sort folder's files are shown)."""
        return sorted_file(self.table.sort_into, self._placed(index))

    def _where(self, index: int) -> tuple[str, bool]:
        """Where row index's image is now (a moved file at its destination, else where it was
        labeled; a sorted copy or link stands in if the original is gone), and whether that is
        in the sort folder."""
        path = self.table.file_path(index)
        destination = self._sorted(index)
        if destination is None:
            return path, False
        if self.table.mode == "move" or not os.path.exists(path):
            return destination, True
        return path, False

    def source(self, index: int) -> str:
        """Where row index's image is now (see _where)."""
        return self._where(index)[0]

    def missing(self, index: int) -> bool:
        """No file left where the row's image was or went."""
        places = [self.table.file_path(index), self._sorted(index)]
        return not any(os.path.exists(place) for place in places if place is not None)


def row_record(
    row: ReviewRow, decision: Decision | None, missing: bool, moved: str | None = None
) -> dict[str, Any]:
    """A row as the page gets it: text fields only, which it renders with textContent; a
    sorted file an --apply moved shows its new place."""
    return {
        "index": row.index,
        "path": row.path,
        "label": row.label,
        "scores": [[label, probability] for label, probability in row.scores],
        "margin": None if row.margin is None else round(row.margin, 6),
        "destination": row.destination if moved is None else path_to_text(moved),
        "error": row.error,
        "missing": missing,
        "decision": None if decision is None else asdict(decision),
    }


def _in_status(row: ReviewRow, decision: Decision | None, status: str | None) -> bool:
    if status == "unreviewed":
        return decision is None and row.error is None
    if status == "reviewed":
        return decision is not None
    if status == "changed":
        return decision is not None and decision.label != decision.previous
    return True


def _matches(row: ReviewRow, label: str | None, low: float | None, high: float | None) -> bool:
    if label is not None and row.label != label:
        return False
    if low is None and high is None:
        return True
    if not row.scores:
        return False
    top = row.scores[0][1]
    return (low is None or top >= low) and (high is None or top <= high)


def _number(query: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    text = query.get(name)
    if text in (None, ""):
        return default
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{name} must be a number") from None
