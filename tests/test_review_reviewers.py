"""The review file under stress: two reviewers at once, a kill -9 landing during a decision, a
disk that fills mid-line; no acknowledged decision is lost and the file always reads back."""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from review_helpers import running

from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter
from clipcls.prediction import LabelScore
from clipcls.review.log import ReviewLog, review_path
from clipcls.review.table import ReviewTable, load_review

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
TOKEN = "reviewers-token-0123456789"


def write_table(out: Path, count: int) -> ReviewTable:
    """A predict-style output of count files, all equally sure (no setup record, no model)."""
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = CsvWriter(stream, Columns(top_k=2, model=True))
        for i in range(count):
            scores = (LabelScore("cat", 0.6, 0.2), LabelScore("dog", 0.4, 0.1))
            writer.write(Row(f"{i}.png", "cat", scores, model="m"))
    return load_review(out)


FULL_DISK = """
import os, resource, signal, sys
from pathlib import Path
from clipcls.errors import UsageError
from clipcls.review.log import ReviewLog
from clipcls.review.table import load_review
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
log = ReviewLog.open(load_review(Path(sys.argv[1])))
log.decide(0, "dog", "set")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.fstat(log.fd).st_size + 10, hard))
try:
    log.decide(1, "dog", "set")  # 10 bytes of it fit: the disk is full mid-line
except (UsageError, OSError) as error:
    print("refused:", error)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
log.decide(2, "dog", "set")
log.close()
"""


def test_a_disk_full_mid_decision_leaves_no_half_line_behind(tmp_path: Path) -> None:
    table = write_table(tmp_path / "out.csv", 3)
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(table.output)], env=ENV, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    # Was: the next decision was appended to the half line, and the review file was refused
    # ("line 3 ... is not a review record") with every decision in it.
    with ReviewLog.open(table) as log:
        assert sorted(log.current()) == [0, 2]
    assert review_path(table.output).read_bytes().count(b"\n") == 3
    assert b"refused: cannot write" in done.stdout  # one line for the page, not a traceback


def test_a_decision_binds_its_whole_row_not_only_its_file(tmp_path: Path) -> None:
    table = write_table(tmp_path / "out.csv", 3)
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
        log.decide(2, "dog", "set")
    text = table.output.read_text(encoding="utf-8").splitlines(keepends=True)
    text[3] = text[3].replace("cat,0.600000", "dog,0.600000", 1)  # row 3: another label
    table.output.write_text("".join(text), encoding="utf-8")
    with ReviewLog.open(load_review(table.output)) as log:
        # Was: both kept (only the first row named the output, and a row's path its decision).
        assert sorted(log.current()) == [0] and "1 decision(s) were made for rows" in log.notes[0]


INTERRUPTED_WHILE_LOADING = """
import sys
class Interrupting:  # Ctrl-C lands while the commands are being imported
    def find_spec(self, name, path=None, target=None):
        if name == "clipcls.cli.commands":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupting())
sys.argv = ["clipcls", "review", "out.csv", "--apply"]
from clipcls.cli import main
main()
"""


def test_a_ctrl_c_while_the_command_line_loads_is_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_LOADING], env=ENV, capture_output=True, text=True
    )
    # Was a KeyboardInterrupt traceback (seen when SIGINT hit `review --apply` at start-up).
    assert done.returncode == 130 and done.stderr == "interrupted\n"


def test_four_pages_deciding_and_undoing_at_once_lose_nothing(tmp_path: Path) -> None:
    table = write_table(tmp_path / "out.csv", 200)
    with running(table.output, tmp_path / "thumbs") as served:

        def reviewer(first: int) -> set[int]:
            """Decide every fourth row; take back each fifth decision, its own, at once."""
            kept = set()
            for index in range(first, 200, 4):
                body = {"index": index, "action": "set", "label": "dog"}
                seq = served.json("POST", "/api/decide", body)["decision"]["seq"]
                if index % 5:
                    kept.add(index)
                else:
                    assert served.json("POST", "/api/undo", {"seq": seq})["undone"] == index
            return kept

        with ThreadPoolExecutor(4) as pool:
            expected = set().union(*pool.map(reviewer, range(4)))
    with ReviewLog.open(load_review(table.output)) as log:  # every line whole, every one kept
        assert set(log.current()) == expected and len(expected) == 160 and log.notes == []


@pytest.mark.slow
def test_a_kill_during_the_pages_decisions_keeps_every_acknowledged_one(tmp_path: Path) -> None:
    """kill -9 the page's server at random moments while two clients post decisions; each
    restart must see every decision the server answered, and no more than the two in flight."""
    table = write_table(tmp_path / "out.csv", 3000)
    rng, acknowledged, sent = random.Random(35), set[int](), set[int]()
    command = [sys.executable, "-m", "clipcls", "review", str(table.output), "--port", "0"]
    for _ in range(4):
        server = subprocess.Popen([*command, "--key", TOKEN], env=ENV, stdout=subprocess.PIPE)
        assert server.stdout is not None
        port = int(server.stdout.readline().decode().rsplit(":", 1)[1].split("/")[0])
        state = Posting(port, iter(sorted(set(range(3000)) - sent)), sent, acknowledged)
        clients = [threading.Thread(target=state.post_until_gone) for _ in range(2)]
        for thread in clients:
            thread.start()
        time.sleep(rng.uniform(0.2, 1.5))
        server.kill()
        server.wait()
        server.stdout.close()
        for thread in clients:
            thread.join()
        with ReviewLog.open(table) as log:  # the lock died with the server; a torn line is cut
            live = set(log.current())
        assert acknowledged <= live and len(live - acknowledged) <= 2
        acknowledged |= live  # in flight, and written: it stands
    assert len(acknowledged) > 0


class Posting:
    """Clients' shared state: the rows left to decide, those sent and those answered."""

    def __init__(self, port: int, left: Iterator[int], sent: set[int], acked: set[int]) -> None:
        self.port, self.left, self.sent, self.acknowledged = port, left, sent, acked
        self.guard = threading.Lock()

    def post_until_gone(self) -> None:
        """Post one decision after another until the server is gone."""
        while True:
            with self.guard:
                index = next(self.left, None)
                if index is None:  # every row decided before the kill came: nothing left to send
                    return
                self.sent.add(index)
            try:
                post(self.port, {"index": index, "action": "set", "label": "dog"})
            except (OSError, http.client.HTTPException):  # gone, or killed mid-answer
                return
            with self.guard:
                self.acknowledged.add(index)


def post(port: int, body: dict[str, object]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"X-Review-Token": TOKEN, "Host": f"127.0.0.1:{port}"}
        connection.request("POST", "/api/decide", json.dumps(body), headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise AssertionError(answer.status)
    finally:
        connection.close()
