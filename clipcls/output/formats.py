"""The output formats, one object each, in one table by name and suffix: the writer a format's
rows go through, how it writes flat result records, how its rows are read back, and what it can
do (resume, hold embeddings). A new format is one class here and one row in the table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar, TextIO

from clipcls.errors import ClipclsError, UsageError
from clipcls.output.reading import Stored, read_csv, read_jsonl, read_parquet
from clipcls.output.records import Cell, csv_records, json_records, table_records
from clipcls.output.rows import Columns
from clipcls.output.writers import (
    CsvWriter,
    JsonlWriter,
    JsonWriter,
    ParquetWriter,
    TableWriter,
    Writer,
    plain_console,
)


class Format:
    """One output format. Callers ask it what it can do, never which one it is."""

    name: ClassVar[str]  # as --format takes it
    suffixes: ClassVar[tuple[str, ...]]  # the file names that mean it
    # A line per row, written as it comes: a killed run leaves every complete row, and --resume
    # appends to them. (Parquet's rows exist only once its footer is written at the end.)
    resumable: ClassVar[bool] = False
    holds_embeddings: ClassVar[bool] = False  # --save-embeddings can write and read them back
    flat: ClassVar[bool] = False  # rows are cells by column under a header (CSV, Parquet)
    binary: ClassVar[bool] = False  # not for a terminal
    for_people: ClassVar[bool] = False  # a table for people, not a document for programs

    TABLE: ClassVar[Format]
    CSV: ClassVar[Format]
    JSON: ClassVar[Format]
    JSONL: ClassVar[Format]
    PARQUET: ClassVar[Format]

    def __repr__(self) -> str:
        return f"Format.{self.name.upper()}"

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        """The writer of this format's rows to stream (header=False: appending to a resumed
        file, which has its header)."""
        raise NotImplementedError

    def write_records(
        self,
        stream: TextIO,
        columns: Sequence[str],
        records: Iterable[Sequence[Cell]],
        where: str = "stdout",
    ) -> None:
        """Write flat result records (one value per column; text columns are str, the others
        numbers or flags). A write error (a full disk) becomes one ClipclsError naming where; a
        closed pipe (`| head`) goes on up."""
        try:
            self._records(stream, columns, list(records))
            stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise ClipclsError(f"cannot write {where}: {error.strerror or error}") from None

    def _records(self, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
        raise UsageError(f"result records are not written as {self.name}")

    def read(self, path: Path, embeddings: bool = False) -> Stored:
        """The file's rows as stored (output.reading), each row's embedding only if asked;
        reading.Unreadable for a file clipcls did not write."""
        raise UsageError(f"clipcls does not read {self.name} outputs back")


class TableFormat(Format):
    """A Rich table for people, printed once every row is in."""

    name, suffixes, for_people = "table", (".txt",), True

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        console = plain_console(file=stream, soft_wrap=False)
        return TableWriter(console, bool(columns.multi_label))

    def _records(self, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
        table_records(stream, columns, rows)


class CsvFormat(Format):
    """CSV a spreadsheet reads as text, a row a line, flushed per row: resumable."""

    name, suffixes, resumable, flat = "csv", (".csv",), True, True

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        return CsvWriter(stream, columns, header)

    def _records(self, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
        csv_records(stream, columns, rows)

    def read(self, path: Path, embeddings: bool = False) -> Stored:
        return read_csv(path)


class JsonFormat(Format):
    """One JSON list of the JSONL objects, streamed element by element."""

    name, suffixes = "json", (".json",)

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        return JsonWriter(stream, columns)

    def _records(self, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
        json_records(stream, columns, rows, lines=False)


class JsonlFormat(Format):
    """One JSON object a line, flushed per row: resumable, and holds embeddings."""

    name, suffixes, resumable, holds_embeddings = "jsonl", (".jsonl", ".ndjson"), True, True

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        return JsonlWriter(stream, columns)

    def _records(self, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
        json_records(stream, columns, rows, lines=True)

    def read(self, path: Path, embeddings: bool = False) -> Stored:
        return read_jsonl(path, embeddings)


class ParquetFormat(Format):
    """Typed columns through pyarrow, written in row groups; its footer comes at the end."""

    name, suffixes, holds_embeddings, flat, binary = "parquet", (".parquet",), True, True, True

    def writer(self, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
        stream.flush()
        return ParquetWriter(stream.buffer, columns)

    def read(self, path: Path, embeddings: bool = False) -> Stored:
        return read_parquet(path, embeddings)


Format.TABLE, Format.CSV, Format.JSON = TableFormat(), CsvFormat(), JsonFormat()
Format.JSONL, Format.PARQUET = JsonlFormat(), ParquetFormat()

# The table: every format by name, in the order --format lists them, and by file suffix.
FORMATS = {f.name: f for f in (Format.TABLE, Format.CSV, Format.JSON, Format.JSONL, Format.PARQUET)}
SUFFIXES = {suffix: f for f in FORMATS.values() for suffix in f.suffixes}

LABEL_FORMATS = (Format.CSV, Format.JSONL, Format.PARQUET)  # files label writes, review reads
REPORT_FORMATS = (Format.TABLE, Format.JSON)  # evaluate's report
RESULT_FORMATS = (Format.TABLE, Format.CSV, Format.JSON, Format.JSONL)  # search, similar, dedupe


def format_of(path: Path) -> Format | None:
    """The format a file's name says (its suffix, in any case); None if it says none."""
    return SUFFIXES.get(path.suffix.lower())


def format_for(
    output: Path | None,
    explicit: Format | None,
    allowed: tuple[Format, ...] = tuple(FORMATS.values()),
) -> Format:
    """The format: --format, else the output's extension, else a table on stdout.

    A --format that contradicts the extension, or a format the command cannot write, is a
    usage error; so is an output whose extension says nothing without --format.
    """
    named = format_of(output) if output is not None else None
    choices = "|".join(f.name for f in allowed)
    if explicit is not None and named is not None and explicit is not named:
        raise UsageError(
            f"--format {explicit.name} contradicts the extension of {output} "
            f"({named.name}): drop --format or rename the file"
        )
    found = explicit or named
    if found is None and output is not None:
        raise UsageError(f"cannot tell the format of {output} from its name: --format {choices}")
    found = found or allowed[0]
    if found not in allowed:
        raise UsageError(f"this command writes {choices}, not {found.name}")
    return found
