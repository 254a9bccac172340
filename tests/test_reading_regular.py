"""An output is read only if it is a regular file, checked on the open file: a FIFO or a link to
/dev/zero (planted, or swapped in after a caller checked the path) is refused, never waited on
or read forever, in every format that reads back."""

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from clipcls.output import reading
from clipcls.output.reading import Unreadable

READERS = {
    "csv": reading.read_csv,
    "jsonl": reading.read_jsonl,
    "parquet": reading.read_parquet,
}


def plant(tmp_path: Path, kind: str, suffix: str) -> Path:
    path = tmp_path / f"out.{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def outcome(read: Any, path: Path) -> list[BaseException | None]:
    """What reading path ended in, waited for at most a minute (a FIFO opened for reading
    blocks until a writer comes: one is opened afterwards to let a hung reader go)."""
    seen: list[BaseException | None] = []

    def run() -> None:
        try:
            list(read(path).rows)
            seen.append(None)
        except BaseException as error:  # noqa: BLE001 - the test reports what it was
            seen.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive() and path.is_fifo():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    return seen


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("suffix", sorted(READERS))
def test_an_output_that_is_no_regular_file_is_refused_not_waited_on(
    tmp_path: Path, kind: str, suffix: str
) -> None:
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    seen = outcome(READERS[suffix], plant(tmp_path, kind, suffix))
    assert seen, "the reader hung on a file that is no regular file"
    assert isinstance(seen[0], Unreadable), seen[0]
    assert "not a regular file" in str(seen[0])
