"""Feed a review back: the output with its corrected labels and a `reviewed` column, a support
folder of the reviewed images per label (for `--support`), and sorted files moved to their
corrected label folder (resort.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from clipcls.errors import RecordError, UsageError
from clipcls.labeling.manifest import sidecar
from clipcls.labeling.sorting import UNSAFE, safe_folder_name, unique_destination
from clipcls.output.csv_text import SafeCsv, is_number_column
from clipcls.output.files import check_writable, temporary_beside
from clipcls.output.formats import Format, format_of
from clipcls.output.rows import Columns, Row
from clipcls.pathtext import clean_text, path_key, text_to_path
from clipcls.prediction import Prediction
from clipcls.remote import is_url
from clipcls.review.answers import MODEL_COLUMNS, corrected_cells, model_answer
from clipcls.review.ledger import applied_places, ledger_path
from clipcls.review.log import Decision, review_path
from clipcls.review.records import DESTINATIONS, Records, foreign, read_records
from clipcls.review.resort import apply_sorting, plan_sorting
from clipcls.review.sortfolder import sorted_file
from clipcls.review.table import ReviewTable

__all__ = ["apply_sorting", "export_corrected", "export_support", "plan_sorting"]

UNDECODABLE = re.compile("[\udc80-\udcff]")  # a file name's bytes that are not UTF-8


def _export_format(table: ReviewTable, target: Path) -> Format:
    """The target's format by its name; UsageError for another format or a file the review
    must not replace (the output, its review file, setup record or apply ledger)."""
    kind = format_of(target)
    if kind is None or kind not in WRITERS:
        raise UsageError(f"--export writes .csv or .jsonl, not {clean_text(str(target))}")
    output = table.output
    for kept in (output, review_path(output), sidecar(output), ledger_path(output)):
        same = path_key(str(target)) == path_key(str(kept))
        with contextlib.suppress(OSError):
            same = same or os.path.samefile(target, kept)
        if same:
            raise UsageError(
                f"--export {clean_text(str(target))} would replace {clean_text(str(kept))}: "
                "name another file"
            )
    check_writable(target, "--export")
    if os.path.lexists(target) and not _earlier_export(target, kind):
        raise UsageError(
            f"--export {clean_text(str(target))} exists and is not a review export: name "
            "another file or remove it"
        )
    return kind


def _earlier_export(target: Path, kind: Format) -> bool:
    """Whether target is empty or a file an --export wrote (its first line names `reviewed`):
    exporting again replaces it, anything else is someone's data."""
    if not target.is_file():
        return False
    try:
        with target.open("rb") as stream:
            first = stream.readline(1 << 20).decode("utf-8", "replace").strip()
    except OSError:
        return True  # the write itself will say why it cannot be replaced
    if not first:
        return True
    if kind.flat:  # a CSV header
        return "reviewed" in first.lstrip("\ufeff").split(",")
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "reviewed" in record


def _decision(decisions: Mapping[int, Decision], index: int, path: str) -> Decision | None:
    """The live decision for a row, if it was made for the file the row names now."""
    decision = decisions.get(index)
    return decision if decision is not None and decision.path == path else None


def _jsonl_row(record: dict[str, Any]) -> Row:
    """A JSONL record as the writers' Row, to write it as CSV the way a label run would."""
    prediction = Prediction.from_record(record)
    top = prediction.top.label if prediction.top else ""
    destination = next((record[name] for name in DESTINATIONS if record.get(name)), "")
    return Row(
        prediction.path,
        str(record.get("label") or top) if prediction.error is None else "",
        prediction.scores,
        prediction.error,
        str(record.get("model") or ""),
        text_to_path(str(destination)),
    )


def _csv_cells(found: Records) -> tuple[list[str], list[dict[str, str]]]:
    """The output's CSV columns (no embedding: CSV never holds one) and each row's cells."""
    if found.kind.flat:
        return [name for name in found.header if name != "embedding"], list(found.records)
    rows = [_jsonl_row(record) for record in found.records]
    key = next((k for k in DESTINATIONS if any(k in r for r in found.records)), "")
    columns = Columns(
        top_k=max((len(row.scores) for row in rows), default=1),
        best_label=any(row.best and row.label != row.best.label for row in rows),
        model=any("model" in record for record in found.records),
        destination=key,
    )
    header = columns.header()
    return header, [dict(zip(header, columns.csv_values(row), strict=True)) for row in rows]


def _export_names(header: list[str] | tuple[str, ...]) -> list[str]:
    """An export's columns: path, the corrected label, the model's label and probability, the
    output's other columns, `reviewed`, and error last."""
    return [*header[:2], *MODEL_COLUMNS, *header[2:-1], "reviewed", header[-1]]


def _write_csv(found: Records, decisions: Mapping[int, Decision], stream: TextIO) -> None:
    header, cells = _csv_cells(found)
    names = _export_names(header)
    writer = SafeCsv(stream, names)
    writer.header(names)
    for index, row in enumerate(cells):
        decision = _decision(decisions, index, found_path(found, index))
        values = corrected_cells(row, decision) | {"reviewed": "true" if decision else "false"}
        writer.row([values[name] for name in names])


def found_path(found: Records, index: int) -> str:
    """The path text of a stored row, as ReviewRow.path holds it."""
    return str(found.records[index]["path"])


def _json_record(found: Records, index: int, decision: Decision | None) -> dict[str, Any]:
    """A JSONL row: a JSONL output's own record, or a CSV/Parquet row's columns as JSON (numbers
    as numbers, empty cells as null); the label corrected beside the model's answer, `reviewed`
    before the error."""
    stored = found.records[index]
    if not found.kind.flat:
        rest = {k: v for k, v in stored.items() if k not in ("path", "label", "embedding")}
        record: dict[str, Any] = {"path": stored["path"]}
        if decision is not None or "label" in stored:
            record["label"] = decision.label if decision is not None else stored["label"]
        record |= model_answer(stored) | rest | {"reviewed": decision is not None}
        return record | ({"embedding": stored["embedding"]} if "embedding" in stored else {})
    cells = corrected_cells(stored, decision)
    record = {}
    for name in _export_names(found.header):
        cell = cells.get(name, "")
        if name == "reviewed":
            record[name] = decision is not None
        elif is_number_column(name) or name == "model_probability":
            record[name] = float(cell) if cell else None
        else:
            record[name] = cell if cell or name in ("path", "model") else None
    return record


def _write_jsonl(found: Records, decisions: Mapping[int, Decision], stream: TextIO) -> None:
    for index in range(len(found.records)):
        decision = _decision(decisions, index, found_path(found, index))
        record = _json_record(found, index, decision)
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


WRITERS = {Format.CSV: _write_csv, Format.JSONL: _write_jsonl}  # what --export writes


def write_atomically(target: Path, write: Callable[[TextIO], None]) -> None:
    """Write a file under a temporary name and rename it into place: never half-written."""
    temporary: Path | None = None
    try:
        fd, temporary = temporary_beside(target)  # never a name planted there, followed
        # backslashreplace: a lone surrogate a foreign JSON escape made is written as that escape
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if isinstance(error, OSError):
            message = error.strerror or str(error)
            raise UsageError(f"cannot write {clean_text(str(target))}: {message}") from None
        raise


def export_corrected(table: ReviewTable, decisions: Mapping[int, Decision], target: Path) -> int:
    """Write the output's rows to target (.csv or .jsonl) with each reviewed row's label replaced
    by its decision and a `reviewed` column; return the number of rows written."""
    kind = _export_format(table, target)
    found = read_records(table.output, embeddings=kind.holds_embeddings)
    write = WRITERS[kind]
    try:
        write_atomically(target, lambda stream: write(found, decisions, stream))
    except (RecordError, KeyError, TypeError, ValueError):
        raise foreign(table.output, "a row without label and scores") from None
    return len(found.records)


def _matches(label: str) -> bool:
    """Whether find_support will take the label's folder name for the label itself."""

    def key(name: str) -> str:
        return unicodedata.normalize("NFC", name).casefold()

    return key(safe_folder_name(label)) == key(label)


def _link_name(source: str) -> str:
    """A link's name: the file's, with what label's folder names avoid (CR, LF and other
    control characters; characters Windows refuses) and bytes that are not UTF-8 as `_`."""
    name = UNDECODABLE.sub("_", UNSAFE.sub("_", os.path.basename(source)))
    return f"_{name}" if name.startswith(".") else name  # a support walk skips hidden names


def _same_link(target: str) -> Callable[[Path], bool]:
    def same(candidate: Path) -> bool:
        return candidate.is_symlink() and os.readlink(candidate) == target

    return same


def export_support(
    table: ReviewTable,
    decisions: Mapping[int, Decision],
    folder: Path,
    problems: list[str] | None = None,
) -> int:
    """Link every reviewed image (accepted or set to a label; not unknown) into
    folder/<label>/, usable as `--support folder` for the run's labels; a link already there is
    kept, no file is replaced. Return the links in place; problems hears what was skipped."""
    notes = problems if problems is not None else []
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--export-support {clean_text(str(folder))} is not a folder")
    linked, gone, unnamed, blocked = 0, 0, set(), set()
    moved = applied_places(table)  # where --apply put sorted files since
    for index, decision in sorted(decisions.items()):
        row = table.rows[index] if 0 <= index < len(table.rows) else None
        if row is None or row.path != decision.path or row.error is not None:
            continue
        if decision.action == "unknown" or decision.label == table.unknown_label:
            continue
        if not _matches(decision.label):
            unnamed.add(decision.label)
            continue
        source = _existing_file(table, index, moved.get(index))
        if source is None:
            gone += 1
            continue
        label_folder = folder / safe_folder_name(decision.label)
        if label_folder in blocked:
            continue
        try:
            label_folder.mkdir(parents=True, exist_ok=True)
            if label_folder.is_symlink():  # planted: the images would be linked where it leads
                raise OSError(errno.ELOOP, "a symbolic link, not followed")
        except OSError as error:  # a file by that name, or a folder we may not write
            blocked.add(label_folder)
            notes.append(f"cannot make {clean_text(str(label_folder))}: {error.strerror or error}")
            continue
        link = unique_destination(label_folder, _link_name(source), None, _same_link(source))
        try:
            if not os.path.lexists(link):
                os.symlink(source, link)
        except OSError as error:
            notes.append(f"cannot link {clean_text(str(link))}: {error.strerror or error}")
            continue
        linked += 1
    if gone:
        notes.append(f"{gone} reviewed file(s) are gone: left out of the support set")
    for label in sorted(unnamed):
        notes.append(f"label {clean_text(label)!r} cannot name a support folder: left out")
    return linked


def _existing_file(table: ReviewTable, index: int, applied: str | None) -> str | None:
    """The absolute path the row's image is at now: where the output names it, or where an
    --apply or else the sorted run moved it (in the run's sort folder only); None if it is
    gone (or a URL: nothing to link)."""
    sorted_places = (applied, table.destination_path(index))
    places = (table.file_path(index), *(sorted_file(table.sort_into, p) for p in sorted_places))
    for where in places:
        if where and not is_url(where) and os.path.isfile(where):
            return os.path.abspath(where)
    return None
