"""`review --apply` as a hostile output, ledger or folder would have it: only files inside the
run's sort folder move (links resolved, checked when opened), each decision is bound to its row,
the command says what it moved, and a stop at any point is finished by the next apply."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.images import MARKER
from clipcls.labeling.manifest import RunSetup, sidecar, write_setup
from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter
from clipcls.pathtext import path_to_text
from clipcls.prediction import LabelScore
from clipcls.review import resort
from clipcls.review.api import ReviewApi
from clipcls.review.ledger import ledger_path
from clipcls.review.log import ReviewLog
from clipcls.review.resort import apply_sorting, plan_sorting
from clipcls.review.table import ReviewTable, load_review
from clipcls.review.thumbs import Thumb, Thumbs

runner = CliRunner()
LABELS = ("cat", "dog")
PNG = b"\x89PNG\r\n\x1a\n"  # enough to tell files apart; never decoded here


def sorted_output(root: Path, count: int = 4, mode: str = "move") -> ReviewTable:
    """A label run's output as `label --sort-into root/sorted --mode MODE` leaves it: `count`
    files sorted into sorted/cat/, its CSV and setup record (written here: no model needed)."""
    sort_dir, photos = root / "sorted", root / "photos"
    (sort_dir / "cat").mkdir(parents=True)
    (sort_dir / MARKER).touch()  # as a label run leaves it
    photos.mkdir()
    out = root / "out.csv"
    columns = Columns(top_k=2, model=True, destination="destination")
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = CsvWriter(stream, columns)
        for i in range(count):
            name = f"{i:04d}.png"
            placed = sort_dir / "cat" / name
            placed.write_bytes(PNG + name.encode())
            if mode != "move":
                (photos / name).write_bytes(PNG + name.encode())
            scores = (LabelScore("cat", 0.6, 0.2), LabelScore("dog", 0.4, 0.1))
            writer.write(Row(str(photos / name), "cat", scores, model="m", destination=str(placed)))
    setup = RunSetup(
        format="csv",
        columns=tuple(columns.header()),
        labels=tuple((label, (label,)) for label in LABELS),
        templates=("{}",),
        top_k=2,
        threshold=None,
        unknown_label=None,
        sort_into=path_to_text(os.path.realpath(sort_dir)),
        mode=mode,
        model_key=None,
        cwd=path_to_text(os.getcwd()),
    )
    write_setup(out, setup)
    return load_review(out)


def decide_all(table: ReviewTable, label: str = "dog") -> None:
    with ReviewLog.open(table) as log:
        for row in table.rows:
            log.decide(row.index, label, "set")


def rewrite_cell(output: Path, index: int, column: str, value: str) -> ReviewTable:
    """Edit one cell of row index, as someone with the file open in an editor would."""
    with output.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    fields = list(rows[0])
    rows[index][column] = value
    with output.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return load_review(output)


def review_apply(output: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["review", str(output), "--apply"])
    return result.exit_code, result.output


def md5s(folder: Path, by_inode: bool = False) -> Counter[str]:
    """The multiset of the contents of every file under folder (links not followed); by_inode
    counts a file with two names once (a move stopped between its link and its unlink)."""
    found: Counter[str] = Counter()
    seen = set()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != MARKER:
            inode = (path.stat().st_dev, path.stat().st_ino) if by_inode else path
            if inode not in seen:
                seen.add(inode)
                found[hashlib.md5(path.read_bytes()).hexdigest()] += 1
    return found


# Only files in the sort folder move


def test_a_destination_outside_the_sort_folder_is_refused_not_moved(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    victim = tmp_path / "home" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("not the run's")
    table = rewrite_cell(table.output, 2, "destination", str(victim))
    decide_all(table)
    code, said = review_apply(table.output)
    # Was: exit 0, and precious.txt moved into sorted/dog/ as if it were the row's photo.
    assert victim.read_text() == "not the run's"
    assert not (tmp_path / "sorted/dog/precious.txt").exists()
    assert "precious.txt is not in the sort folder" in said and "refused" in said
    assert code == 0 and "moved 3 files" in said and "1 refused" in said


def test_a_forged_ledger_entry_is_refused_not_moved(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    victim = tmp_path / "precious.png"
    victim.write_bytes(b"someone's")
    decide_all(table)
    row = table.rows[1]  # a ledger line as an earlier version wrote it (no row digest)
    entry = {"index": 1, "path": row.path, "label": "cat", "to": str(victim)}
    ledger_path(table.output).write_text(json.dumps(entry) + "\n")
    code, said = review_apply(table.output)
    assert victim.read_bytes() == b"someone's" and "precious.png is not in the sort folder" in said
    # The row's own file is still where the run put it: it moves, the ledger line is refused.
    assert code == 0 and "moved 4 files" in said and "1 refused" in said
    assert len(list((tmp_path / "sorted/dog").iterdir())) == 4


def test_a_label_folder_swapped_for_a_link_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = sorted_output(tmp_path, count=1)
    victim = tmp_path / "home"
    victim.mkdir()
    (victim / "0000.png").write_bytes(b"someone's")
    decide_all(table)
    planned = resort.unique_destination

    def swap_then_plan(*args: object, **kwargs: object) -> Path:
        # Between the plan and the move, sorted/cat/ becomes a link to someone's folder.
        (tmp_path / "sorted/cat").rename(tmp_path / "sorted/cat.real")
        (tmp_path / "sorted/cat").symlink_to(victim)
        return planned(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(resort, "unique_destination", swap_then_plan)
    applied = apply_sorting(table, ReviewLog.read(table).current())
    # Was: someone's 0000.png moved into sorted/dog/ (paths resolved again at move time).
    # Now each step opens the label folder beneath the sort folder held open, never through a
    # link: the move is refused, and the run's file stays where it is.
    assert (victim / "0000.png").read_bytes() == b"someone's"
    assert not (tmp_path / "sorted/dog/0000.png").exists()
    assert applied.moved == 0 and applied.failed == 1
    assert (tmp_path / "sorted/cat.real/0000.png").read_bytes() == PNG + b"0000.png"


def test_a_label_folder_that_is_a_link_out_is_refused(tmp_path: Path) -> None:
    table = sorted_output(tmp_path, count=1)
    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "sorted/cat").rename(elsewhere)
    (tmp_path / "sorted/cat").symlink_to(elsewhere)
    decide_all(table)
    code, said = review_apply(table.output)
    assert code == 1 and "1 refused" in said and (elsewhere / "0000.png").exists()


def test_a_label_folder_made_a_link_out_is_never_moved_into(tmp_path: Path) -> None:
    table = sorted_output(tmp_path, count=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "sorted/dog").symlink_to(elsewhere)
    decide_all(table)
    code, said = review_apply(table.output)
    # Was: the run's file moved out of the sort folder, into elsewhere/.
    assert code == 1 and "1 failed" in said and list(elsewhere.iterdir()) == []
    assert (tmp_path / "sorted/cat/0000.png").exists()


def test_the_page_shows_no_file_outside_the_sort_folder(tmp_path: Path) -> None:
    table = sorted_output(tmp_path, count=1)
    secret = tmp_path / "secret.png"
    shutil.copy(SAMPLE_IMAGES / "coffee.png", secret)
    table = rewrite_cell(table.output, 0, "destination", str(secret))
    with ReviewLog.open(table) as log:
        page = ReviewApi(table, log, Thumbs(tmp_path / "thumbs"))
        shown = page.image(0)
        # Was: secret.png's own bytes, as the full-size view (a move run shows the destination).
        assert isinstance(shown, Thumb) and shown.problem == "missing"
        assert page.thumb(0).problem == "missing" and page.missing(0)


# Each decision is bound to its row


def test_a_decision_is_dropped_when_its_row_is_edited_after_it(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table)
    # A later row (not the first, which names the output) edited: another file moved instead.
    edited = rewrite_cell(table.output, 2, "destination", str(tmp_path / "sorted/cat/0003.png"))
    with ReviewLog.open(edited) as log:
        assert sorted(log.current()) == [0, 1, 3]  # was [0, 1, 2, 3]: the edit went unnoticed
        assert "1 decision(s) were made for rows the output no longer holds" in log.notes[0]
    assert len(plan_sorting(edited, ReviewLog.read(edited).current())[0]) == 3


# What --apply says


def test_apply_says_what_it_moved_and_fails_when_nothing_could_be(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table)
    shutil.rmtree(tmp_path / "sorted/cat")
    code, said = review_apply(table.output)
    # Was: "applied 4 decisions", exit 0, with every file gone and nothing moved.
    assert code == 1 and "error: no file moved in" in said and "4 gone" in said
    (tmp_path / "sorted/cat").mkdir()
    (tmp_path / "sorted/cat/0001.png").write_bytes(b"back")
    code, said = review_apply(table.output)
    assert code == 0 and "moved 1 file in" in said and "3 gone" in said
    code, said = review_apply(table.output)
    assert code == 1 and "no file moved" in said  # the three still gone: nothing to do but them


def test_apply_says_nothing_was_left_to_move(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table, "cat")
    code, said = review_apply(table.output)
    assert code == 0 and "nothing to move in" in said and "every reviewed file" in said


def test_a_copied_output_names_the_sort_folder_it_moves_files_in(tmp_path: Path) -> None:
    table = sorted_output(tmp_path / "run")
    decide_all(table)
    copy = tmp_path / "copy" / "out.csv"
    copy.parent.mkdir()
    for path in (table.output, sidecar(table.output), Path(f"{table.output}.review.jsonl")):
        shutil.copy(path, copy.with_name(path.name))
    code, said = review_apply(copy)
    sort_dir = os.path.realpath(tmp_path / "run" / "sorted")
    assert code == 0 and f"moved 4 files in {sort_dir}, the run's sort folder (not in" in said


# A stop at any point


def test_a_torn_ledger_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    table = sorted_output(tmp_path, count=2)
    decide_all(table)
    ledger_path(table.output).write_bytes(b'{"index": 0, "pa')  # a kill mid-write
    assert apply_sorting(table, ReviewLog.read(table).current()).moved == 2
    # Was: the first record glued to the torn line and lost: that file reported gone.
    assert plan_sorting(table, ReviewLog.read(table).current()) == ([], [])


KILLED_AFTER = """
import os, signal, sys
from pathlib import Path
from clipcls.review.log import ReviewLog
from clipcls.review.resort import apply_sorting
from clipcls.review.table import load_review
call, real = sys.argv[2], getattr(os, sys.argv[2])
def killed(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(os, call, killed)
table = load_review(Path(sys.argv[1]))
apply_sorting(table, ReviewLog.read(table).current())
"""


@pytest.mark.parametrize("call", ["unlink", "link"])
def test_a_kill_inside_a_move_is_finished_by_the_next_apply(tmp_path: Path, call: str) -> None:
    # unlink: killed once the file has its new name alone (was: not in the ledger, so the
    # next apply said "gone" and the page showed it missing); link: killed with both names.
    table = sorted_output(tmp_path, count=2)
    decide_all(table)
    before = md5s(tmp_path / "sorted")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER, str(table.output), call], env=env, check=False
    )
    assert child.returncode == -9
    applied = apply_sorting(table, ReviewLog.read(table).current())
    assert applied.problems == () and md5s(tmp_path / "sorted") == before
    assert sorted(p.name for p in (tmp_path / "sorted/dog").iterdir()) == ["0000.png", "0001.png"]
    assert list((tmp_path / "sorted/cat").iterdir()) == []


@pytest.mark.slow
def test_stops_at_random_points_of_an_apply_lose_or_double_no_file(tmp_path: Path) -> None:
    """SIGTERM, SIGINT and SIGKILL at random points of `review --apply` (a move run), then
    apply again until done; decisions flip each round, so files go back and forth. Was: a stop
    between a move and its ledger line left the file unrecorded: said gone, then stranded in
    the old label's folder when the decision changed back."""
    table = sorted_output(tmp_path, count=300)
    before = md5s(tmp_path / "sorted")
    rng = random.Random(35)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "clipcls", "review", str(table.output), "--apply"]
    for label in ("dog", "cat", "dog"):
        decide_all(table, label)
        for attempt in range(12):
            child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
            try:
                said = child.communicate(timeout=rng.uniform(0.5, 2.5) if attempt < 11 else 120)[1]
                break
            except subprocess.TimeoutExpired:
                child.send_signal(rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGKILL]))
                assert "Traceback" not in child.communicate()[1]
                # Nothing lost, nothing copied (a kill -9 may leave one file under two names).
                assert md5s(tmp_path / "sorted", by_inode=True) == before
        assert child.returncode == 0 and "gone" not in said and "Traceback" not in said, said
        assert {path.parent.name for path in (tmp_path / "sorted").rglob("*.png")} == {label}
        assert md5s(tmp_path / "sorted") == before  # and no second name left over


def test_a_link_planted_as_the_ledger_is_not_written_through(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table)
    victim = tmp_path / "bashrc"
    victim.write_text("export A=1\n")
    ledger_path(table.output).symlink_to(victim)
    result = runner.invoke(app, ["review", str(table.output), "--apply"])
    # Was: exit 0, with the ledger's lines appended to bashrc.
    assert result.exit_code == 2 and "is a symbolic link: not followed" in result.output
    assert (
        victim.read_text() == "export A=1\n" and len(list((tmp_path / "sorted/cat").iterdir())) == 4
    )


def test_a_link_planted_as_the_review_file_is_not_written_through(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    victim = tmp_path / "notes.txt"
    victim.touch()
    Path(f"{table.output}.review.jsonl").symlink_to(victim)
    with pytest.raises(UsageError, match="is a symbolic link: not followed"):
        ReviewLog.open(table)  # was: the review's header and decisions written into notes.txt
    assert victim.read_bytes() == b""


def test_a_setup_record_naming_a_folder_no_run_sorted_into_is_refused(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table)
    (tmp_path / "sorted" / MARKER).unlink()  # a forged record naming, say, the home folder
    code, said = review_apply(table.output)
    # Was: its folders' files moved between them as if they were label folders.
    assert code == 2 and f"holds no {MARKER}: no label run sorted into it" in said
    assert len(list((tmp_path / "sorted/cat").iterdir())) == 4


def test_a_sort_folder_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    table = sorted_output(tmp_path)
    decide_all(table)
    (tmp_path / "sorted").rename(tmp_path / "elsewhere")
    (tmp_path / "sorted").symlink_to(tmp_path / "elsewhere")
    code, said = review_apply(table.output)
    assert code == 2 and "sort folder" in said and "a symbolic link now: not followed" in said
    assert len(list((tmp_path / "elsewhere/cat").iterdir())) == 4
