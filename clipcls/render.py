"""Write predictions as a terminal table, CSV, JSON or JSONL, one image at a time."""

from __future__ import annotations

import csv
import json
from enum import Enum
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clipcls.classify import Prediction


class Format(str, Enum):
    """Output formats."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


def clean_text(text: str) -> str:
    """Make undecodable file-name bytes (lone surrogates) printable as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def prediction_record(prediction: Prediction, top_k: int) -> dict[str, Any]:
    """The JSON object for one image: its top-k predictions, or its error."""
    path = clean_text(prediction.path)
    if prediction.error is not None:
        return {"path": path, "error": clean_text(prediction.error)}
    ranked = [
        {"label": s.label, "probability": s.probability, "similarity": s.similarity}
        for s in prediction.top_k(top_k)
    ]
    return {"path": path, "predictions": ranked}


class Writer(Protocol):
    """Receives predictions in input order; close() finishes the document."""

    def write(self, prediction: Prediction) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON object per line, flushed per image so `| jq` sees results as they come."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        self.stream, self.top_k = stream, top_k

    def write(self, prediction: Prediction) -> None:
        self.stream.write(json.dumps(prediction_record(prediction, self.top_k), ensure_ascii=False))
        self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class JsonWriter:
    """A JSON list of the JSONL objects, streamed element by element."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        self.stream, self.top_k, self.count = stream, top_k, 0

    def write(self, prediction: Prediction) -> None:
        record = json.dumps(prediction_record(prediction, self.top_k), ensure_ascii=False)
        self.stream.write(("[\n  " if self.count == 0 else ",\n  ") + record)
        self.count += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "[]\n")
        self.stream.flush()


def csv_header(top_k: int) -> list[str]:
    """path,label,probability,similarity for the top label, then label_N/probability_N, error."""
    ranks = [f"{name}_{n}" for n in range(2, top_k + 1) for name in ("label", "probability")]
    return ["path", "label", "probability", "similarity", *ranks, "error"]


def csv_row(prediction: Prediction, top_k: int) -> list[str]:
    """One CSV row; an unreadable image has empty label columns and its error filled in."""
    path = clean_text(prediction.path)
    if prediction.error is not None:
        return [path, *[""] * (len(csv_header(top_k)) - 2), clean_text(prediction.error)]
    scores = prediction.top_k(top_k)
    first = scores[0]
    rest = [value for s in scores[1:] for value in (s.label, f"{s.probability:.6f}")]
    rest += [""] * (2 * (top_k - len(scores)))
    return [path, first.label, f"{first.probability:.6f}", f"{first.similarity:.6f}", *rest, ""]


class CsvWriter:
    """CSV with proper quoting, flushed per row."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        self.stream, self.top_k = stream, top_k
        self.writer = csv.writer(stream)
        self.writer.writerow(csv_header(top_k))

    def write(self, prediction: Prediction) -> None:
        self.writer.writerow(csv_row(prediction, self.top_k))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def _bar(probability: float, width: int = 10) -> Text:
    filled = round(probability * width)
    return Text("█" * filled, style="green") + Text("░" * (width - filled), style="dim")


class TableWriter:
    """A Rich table, printed once all images are in: each image with its top-k labels."""

    def __init__(self, console: Console, top_k: int) -> None:
        self.console, self.top_k = console, top_k
        self.table = Table(show_lines=False, header_style="bold")
        self.table.add_column("image", overflow="fold", ratio=3)
        self.table.add_column("label", overflow="fold", ratio=2)
        self.table.add_column("prob", justify="right", no_wrap=True)
        self.table.add_column("", no_wrap=True)

    def write(self, prediction: Prediction) -> None:
        path = clean_text(prediction.path)
        if prediction.error is not None:
            message = Text(clean_text(prediction.error), style="red")
            self.table.add_row(Text(path), message, "", "", end_section=True)
            return
        scores = prediction.top_k(self.top_k)
        for rank, score in enumerate(scores):
            label = Text(score.label, style="bold" if rank == 0 else "")
            self.table.add_row(
                Text(path if rank == 0 else ""),
                label,
                f"{score.probability:.1%}",
                _bar(score.probability),
                end_section=rank == len(scores) - 1,
            )

    def close(self) -> None:
        self.console.print(self.table)


def make_writer(fmt: Format, stream: TextIO, top_k: int) -> Writer:
    """The writer for a format, writing to stream."""
    if fmt is Format.TABLE:
        return TableWriter(Console(file=stream, soft_wrap=False), top_k)
    if fmt is Format.CSV:
        return CsvWriter(stream, top_k)
    if fmt is Format.JSON:
        return JsonWriter(stream, top_k)
    return JsonlWriter(stream, top_k)
