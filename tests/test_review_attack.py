"""`clipcls review` under attack: Host headers of a page listening on every address, a flood of
connections, hostile bodies, a review file that is a FIFO or holds absurd numbers, an --export
onto someone's file, a support folder made after an --apply moved the files."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter
from clipcls.pathtext import path_to_text
from clipcls.prediction import LabelScore
from clipcls.review.api import ReviewApi
from clipcls.review.export import export_corrected, export_support
from clipcls.review.log import ReviewLog, review_path
from clipcls.review.resort import apply_sorting, ledger_path
from clipcls.review.server import ReviewServer, check_host
from clipcls.review.table import ReviewTable, load_review
from clipcls.review.thumbs import Thumbs

runner = CliRunner()
CHROMIUM = os.environ.get("CLIPCLS_CHROMIUM", "/usr/bin/chromium")
TOKEN = "attack-token-0123456789"
LABELS = "cat,coffee,rocket"


@pytest.fixture
def table(tmp_path: Path) -> ReviewTable:
    return write_table(tmp_path / "out.csv", [str(tmp_path / f"{i}.png") for i in range(3)])


def write_table(out: Path, paths: list[str]) -> ReviewTable:
    """A predict-style output of these files, all equally sure (no setup record, no model)."""
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = CsvWriter(stream, Columns(top_k=2, model=True))
        for path in paths:
            scores = (LabelScore("cat", 0.6, 0.2), LabelScore("dog", 0.4, 0.1))
            writer.write(Row(path, "cat", scores, model="m"))
    return load_review(out)


@contextmanager
def serving(table: ReviewTable, host: str, tmp_path: Path, port: int = 0) -> Iterator[ReviewServer]:
    with ReviewLog.open(table) as log:
        api = ReviewApi(table, log, Thumbs(tmp_path / "thumbs"))
        server = ReviewServer(api, host, port, TOKEN, timeout=0.5)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def status(port: int, host_header: str, method: str = "GET", body: bytes | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        path = "/api/state" if method == "GET" else "/api/decide"
        headers = {"Host": host_header, "X-Review-Token": TOKEN}
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_page_on_every_address_answers_the_addresses_it_is_reached_by(
    table: ReviewTable, tmp_path: Path
) -> None:
    # `--host 0.0.0.0 --key K` (the help's example) refused every request but "0.0.0.0:PORT":
    # a browser on another machine names the machine's address in Host.
    with serving(table, "0.0.0.0", tmp_path) as server:
        port = server.port
        for fine in ("192.0.2.7", "127.0.0.1", "localhost", "[::1]", socket.gethostname()):
            assert status(port, f"{fine}:{port}") == 200, fine
        # A DNS name could be rebound to this machine; an address or the wrong port is refused.
        for refused in (f"evil.example:{port}", f"192.0.2.7:{port + 1}", "192.0.2.7", ""):
            assert status(port, refused) == 403, refused
        assert status(port, f"evil@127.0.0.1:{port}") == 403


def test_loopback_pages_still_refuse_other_names(table: ReviewTable, tmp_path: Path) -> None:
    with serving(table, "127.0.0.1", tmp_path) as server:
        port = server.port
        assert status(port, f"LOCALHOST:{port}") == 200
        for refused in ("192.0.2.7", "evil.example", socket.gethostname(), "[::1]"):
            assert status(port, f"{refused}:{port}") == 403, refused


def test_a_burst_of_connections_is_queued_not_dropped(table: ReviewTable, tmp_path: Path) -> None:
    # With the default listen backlog (5) connections past the sixth waited for SYN retries
    # (1 s, 3 s, ...) and under 300 at once some timed out; here nobody accepts meanwhile.
    with ReviewLog.open(table) as log:
        server = ReviewServer(
            ReviewApi(table, log, Thumbs(tmp_path / "thumbs")), "127.0.0.1", 0, TOKEN
        )
        sockets = []
        try:
            for _ in range(40):
                sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=0.5))
        finally:
            for sock in sockets:
                sock.close()
            server.server_close()
        assert len(sockets) == 40


def test_a_deeply_nested_body_is_a_bad_request(table: ReviewTable, tmp_path: Path) -> None:
    with serving(table, "127.0.0.1", tmp_path) as server:
        host = f"127.0.0.1:{server.port}"
        assert status(server.port, host, "POST", b"[" * 60_000) == 400  # was 500 RecursionError
        assert status(server.port, host) == 200


def test_a_fifo_as_review_file_is_refused_in_one_line(table: ReviewTable) -> None:
    os.mkfifo(review_path(table.output))
    with pytest.raises(UsageError, match="not a regular file"):
        ReviewLog.open(table)  # was OSError "Illegal seek": a traceback
    result = runner.invoke(app, ["review", str(table.output), "--port", "0"])
    assert result.exit_code == 2 and "not a regular file" in result.output


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN"])
def test_a_review_line_with_an_absurd_number_is_refused_in_one_line(
    table: ReviewTable, number: str
) -> None:
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
    with review_path(table.output).open("a") as stream:
        stream.write(f'{{"seq": {number}, "undo": 1}}\n')
    with pytest.raises(UsageError, match="line 3 .* is not a review record"):
        ReviewLog.read(table)  # was OverflowError (or ValueError for NaN): a traceback


def test_export_never_replaces_a_file_it_did_not_write(table: ReviewTable, tmp_path: Path) -> None:
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
        decisions = log.current()
    foreign = tmp_path / "budget.csv"
    foreign.write_text("month,amount\njan,12\n")
    with pytest.raises(UsageError, match="budget.csv .*not a review export"):
        export_corrected(table, decisions, foreign)
    assert foreign.read_text() == "month,amount\njan,12\n"
    other_run = tmp_path / "run1.jsonl"  # another clipcls output is not an export either
    other_run.write_text('{"path": "a.png", "label": "cat", "predictions": []}\n')
    with pytest.raises(UsageError, match="not a review export"):
        export_corrected(table, decisions, other_run)
    # An earlier export (or an empty file) is replaced: exporting again is the workflow.
    for target in (tmp_path / "corrected.csv", tmp_path / "corrected.jsonl"):
        assert export_corrected(table, decisions, target) == 3
        assert export_corrected(table, decisions, target) == 3
    empty = tmp_path / "empty.csv"
    empty.touch()
    assert export_corrected(table, decisions, empty) == 3


def test_export_support_finds_the_files_an_apply_moved(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out, sort_dir = tmp_path / "out.csv", tmp_path / "sorted"
    args = ["label", str(photos), "--labels", LABELS, "--model", tiny_model, "-o", str(out)]
    result = runner.invoke(app, [*args, "--sort-into", str(sort_dir), "--mode", "move"])
    assert result.exit_code == 0, result.output
    table = load_review(out)
    new = next(name for name in LABELS.split(",") if name != table.rows[0].label)
    with ReviewLog.open(table) as log:
        log.decide(0, new, "set")
        log.decide(1, "", "accept")
        decisions = log.current()
    assert apply_sorting(table, decisions).problems == ()
    problems: list[str] = []
    assert export_support(table, decisions, tmp_path / "support", problems) == 2
    assert problems == []  # was "2 reviewed file(s) are gone": the ledger was not read
    linked = [p for p in (tmp_path / "support").rglob("*") if p.is_symlink()]
    assert sorted(p.exists() for p in linked) == [True, True]
    with ReviewLog.open(table) as log:  # the page says where the apply put it, too
        rows = ReviewApi(table, log, Thumbs(tmp_path / "thumbs")).rows({})["rows"]
    shown = next(row["destination"] for row in rows if row["index"] == 0)
    assert shown == path_to_text(str(sort_dir / new / os.path.basename(table.file_path(0))))


def test_export_support_beside_a_file_named_like_a_label_folder(
    table: ReviewTable, tmp_path: Path
) -> None:
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
        log.decide(1, "cat", "set")
        decisions = log.current()
    for index in (0, 1):
        Path(table.file_path(index)).write_bytes(b"x")
    support = tmp_path / "support"
    support.mkdir()
    (support / "dog").write_text("not a folder")
    problems: list[str] = []
    assert export_support(table, decisions, support, problems) == 1  # was FileExistsError
    assert len(problems) == 1 and "support/dog" in problems[0]
    assert (support / "dog").read_text() == "not a folder" and (support / "cat" / "1.png").exists()


def test_a_fifo_as_the_apply_ledger_is_refused_not_waited_on(
    table: ReviewTable, tmp_path: Path
) -> None:
    os.mkfifo(ledger_path(table.output))
    outcome: list[object] = []

    def attempt() -> None:
        try:
            export_support(table, {}, tmp_path / "support")
        except UsageError as error:
            outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # was: blocked for ever opening the FIFO (the page's rows too)
        with open(ledger_path(table.output), "wb"):
            pass  # a writer lets the reader go
        thread.join(5)
    assert len(outcome) == 1 and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize("key", ["Zm9v+YmFy/cXV4eg==", "ab&cd%41ef#gh0123", 'quote"d<tag>0123456'])
def test_a_key_the_address_cannot_carry_as_is_is_refused(table: ReviewTable, key: str) -> None:
    # It went into the printed address and the page's links unescaped: `+` read back as a
    # space, `&` and `#` cut it, so the address the command printed answered 403.
    with pytest.raises(UsageError, match="--api-key"):
        check_host("127.0.0.1", key)
    result = runner.invoke(app, ["review", str(table.output), "--port", "0", "--key", key])
    assert result.exit_code == 2 and "--api-key" in result.output
    check_host("0.0.0.0", "Az09-_.~" * 2)  # what `openssl rand -hex` and token_urlsafe make


def test_a_new_review_on_the_same_address_shows_its_own_thumbnails(tmp_path: Path) -> None:
    # With a fixed --key, the next review on the same port had the same thumbnail addresses,
    # and the browser showed the last review's pictures (kept 5 minutes) for its rows.
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    wide = write_table(tmp_path / "wide.csv", [str(SAMPLE_IMAGES / "chelsea.png")])
    square = write_table(tmp_path / "square.csv", [str(SAMPLE_IMAGES / "astronaut.png")])
    seen, port = [], 0
    with sync_api.sync_playwright() as play:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = play.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            tab = browser.new_page()  # one browser cache for both reviews
            for table in (wide, square):
                with serving(table, "127.0.0.1", tmp_path, port) as server:
                    port = server.port
                    tab.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
                    tab.wait_for_selector("body[data-ready='1']", timeout=15000)
                    for _ in range(300):  # wait_for_function evals a string: the CSP says no
                        if tab.eval_on_selector(".tile img", "img => img.complete"):
                            break
                        tab.wait_for_timeout(50)
                    seen.append(tab.eval_on_selector(".tile img", "img => img.naturalHeight"))
                time.sleep(1)  # the browser's idle connections to this server are dropped
        finally:
            browser.close()
    assert seen[0] < 256 and seen[1] == 256


def test_support_and_apply_in_one_command_leave_no_dangling_link(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out, sort_dir = tmp_path / "out.csv", tmp_path / "sorted"
    args = ["label", str(photos), "--labels", LABELS, "--model", tiny_model, "-o", str(out)]
    result = runner.invoke(app, [*args, "--sort-into", str(sort_dir), "--mode", "move"])
    assert result.exit_code == 0, result.output
    table = load_review(out)
    with ReviewLog.open(table) as log:
        for row in table.rows:
            log.decide(row.index, next(n for n in LABELS.split(",") if n != row.label), "set")
    support = tmp_path / "support"
    result = runner.invoke(app, ["review", str(out), "--export-support", str(support), "--apply"])
    assert result.exit_code == 0, result.output
    links = [p for p in support.rglob("*") if p.is_symlink()]
    # The links were made first, to where the files were until the apply moved them.
    assert len(links) == len(table.rows) and all(p.exists() for p in links)


def test_export_never_replaces_the_apply_ledger(table: ReviewTable) -> None:
    # Not there yet, it was a fine name: the export became the ledger a later --apply reads.
    with pytest.raises(UsageError, match="would replace"):
        export_corrected(table, {}, ledger_path(table.output))
    assert not ledger_path(table.output).exists()


@pytest.mark.parametrize("refused", ["/api/nope?token=" + TOKEN, "/api/decide"])
def test_the_body_of_a_refused_post_is_never_read_as_a_request(
    table: ReviewTable, tmp_path: Path, refused: str
) -> None:
    with serving(table, "127.0.0.1", tmp_path) as server:
        host = f"127.0.0.1:{server.port}"
        decision = b'{"index": 0, "action": "set", "label": "dog"}'
        inner = f"POST /api/decide?token={TOKEN} HTTP/1.1\r\nHost: {host}\r\n"
        inner += f"Content-Length: {len(decision)}\r\n\r\n"
        body = inner.encode() + decision
        outer = f"POST {refused} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(outer.encode() + body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.count(b"HTTP/1.1 ") == 1  # was two: the body ran as a second request
        assert server.api.log.current() == {}


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_output_that_is_not_a_regular_file_is_named_so(tmp_path: Path, kind: str) -> None:
    output = tmp_path / "out.csv"
    if kind == "fifo":
        os.mkfifo(output)
    else:
        output.symlink_to("/dev/zero")
    result = runner.invoke(app, ["review", str(output)])
    # Was: "no such output file", of a file that is there.
    assert result.exit_code == 2 and "out.csv is not a regular file" in result.output


def test_an_output_naming_one_file_twice_is_refused_saying_so(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    first = {"path": "a.png", "label": "cat", "predictions": [{"label": "cat", "probability": 1}]}
    second = {**first, "predictions": [{"label": "dog", "probability": 0.9}]}
    output.write_text("".join(json.dumps(record) + "\n" for record in (first, second, first)))
    with pytest.raises(UsageError, match="rows 1 and 2 both name a.png"):
        load_review(output)
