"""The review page's own finishing, over HTTP: labels added during review (checked as labels and
as folder names, kept in the review file, honoured by --export, --export-support and --apply),
the unreviewed/changed filters, the finish actions writing beside the output, and the same
token, Host, Origin and body-size rules on the new endpoints; the favicon answered empty."""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from review_helpers import TOKEN, Running, label_output, running
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.labeling.sortfolder import SortFolder
from clipcls.review.finish import page_targets
from clipcls.review.log import ReviewLog, review_path
from clipcls.review.table import ReviewTable, load_review

NEW_POSTS = ["/api/label", "/api/finish"]


@pytest.fixture
def output(tmp_path: Path, tiny_model: str) -> Path:
    return label_output(tmp_path / "run", tiny_model)


@pytest.fixture
def served(output: Path, tmp_path: Path) -> Iterator[Running]:
    with running(output, tmp_path / "thumbs") as server:
        yield server


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Iterator[Running]:
    """One page for the tests that must change nothing (labelled once: it takes a while)."""
    root = tmp_path_factory.mktemp("untouched")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPCLS_CACHE_DIR", str(root / "cache"))
        output = label_output(root / "run", tiny_model)
    with running(output, root / "thumbs") as server:
        yield server


def post(served: Running, path: str, body: object) -> tuple[int, dict[str, object]]:
    status, _, data = served.request("POST", path, body)
    return status, json.loads(data)


def records(output: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in review_path(output).read_text().splitlines()[1:]]


@pytest.mark.parametrize("path", NEW_POSTS)
def test_new_posts_refuse_a_wrong_host_a_foreign_origin_and_a_big_body(
    served: Running, path: str
) -> None:
    body = {"label": "zebra", "action": "export"}
    for host in (f"evil.example:{served.server.port}", "127.0.0.1"):
        assert served.request("POST", path, body, headers={"Host": host})[0] == 403
    for origin in ("http://evil.example", "null", f"http://localhost:{served.server.port}"):
        assert served.request("POST", path, body, headers={"Origin": origin})[0] == 403, origin
    with socket.create_connection(("127.0.0.1", served.server.port)) as raw:
        head = f"POST {path}?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n"
        raw.sendall(f"{head}Content-Length: {1 << 20}\r\n\r\n".encode())
        raw.settimeout(5)
        assert raw.recv(1000).startswith(b"HTTP/1.1 413")
    assert not served.server.api.log.added  # nothing was done by any of them
    assert not list(served.server.api.table.output.parent.glob("out.corrected*"))
    same = {"Origin": f"http://{served.host}"}  # the page itself
    assert served.request("POST", "/api/label", {"label": "zebra"}, headers=same)[0] == 200


def test_the_favicon_is_an_empty_answer_and_nothing_else_loosens(untouched: Running) -> None:
    served = untouched
    status, headers, data = served.request("GET", "/favicon.ico", token=None)
    assert (status, data) == (204, b"")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    wrong = {"Host": f"evil.example:{served.server.port}"}
    assert served.request("GET", "/favicon.ico", token=None, headers=wrong)[0] == 403
    for path in ("/favicon.ico/../api/state", "/api/state?x=/favicon.ico", "/favicon.icox"):
        assert served.request("GET", path, token=None)[0] == 403, path
    assert served.request("POST", "/favicon.ico", {}, token=None)[0] == 403


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a/b",
        "..\\x",
        "..",
        ".hidden",
        "tail.",
        "[/b]",
        "two\nlines",
        "cr\rin",
        "\u202eevil",
        "zero\u200bwidth",
        "bad\udcffbyte",
        "x" * 121,
        "\u00e9" * 121,
        "a,b",
        "a:b",
        "a|b",
        "#comment",
        "CON",
        "CAT",
        "Unknown",
    ],
)
def test_a_new_label_must_be_a_clean_label_and_folder_name(untouched: Running, name: str) -> None:
    served = untouched
    status, answer = post(served, "/api/label", {"label": name})
    assert status == 400, answer
    assert len(str(answer["error"])) < 300  # one line, not the whole name back
    assert records(served.server.api.table.output) == []  # nothing recorded


def test_an_added_label_is_kept_and_given_like_the_run_labels(
    served: Running, output: Path
) -> None:
    status, answer = post(served, "/api/label", {"label": " cafe\u0301 =cmd() "})
    assert status == 200
    name = "caf\u00e9 =cmd()"  # NFC, stripped
    assert answer["label"] == name and answer["labels"][-1] == name
    assert post(served, "/api/label", {"label": "CAF\u00c9 =CMD()"})[0] == 400  # a duplicate
    index = served.index_of("chelsea.png")
    decided = post(served, "/api/decide", {"index": index, "action": "set", "label": name})
    assert decided[0] == 200 and decided[1]["decision"]["label"] == name
    assert served.json("GET", "/api/state")["added"] == [name]
    assert [r.get("add") for r in records(output)] == [name, None]
    served.log.close()
    again = ReviewLog.open(load_review(output))  # a restarted review knows it
    try:
        assert again.labels()[-1] == name and again.current()[index].label == name
    finally:
        again.close()


def test_an_edited_add_record_is_refused_as_not_a_review_record(output: Path) -> None:
    table = load_review(output)
    ReviewLog.open(table).close()
    with review_path(output).open("a") as stream:
        stream.write(json.dumps({"seq": 1, "add": "../../etc"}) + "\n")
    with pytest.raises(UsageError, match="line 2 of .* is not a review record"):
        ReviewLog.read(table)


def test_a_new_label_reaches_export_support_and_apply(served: Running, output: Path) -> None:
    assert post(served, "/api/label", {"label": "zebra"})[0] == 200
    index = served.index_of("coffee.png")
    decided = post(served, "/api/decide", {"index": index, "action": "set", "label": "zebra"})
    assert decided[0] == 200
    served.log.close()  # the CLI's exports, as after Ctrl-C
    run = output.parent
    done = CliRunner().invoke(app, ["review", str(output), "--export", str(run / "c.csv")])
    assert done.exit_code == 0, done.output
    rows = {os.path.basename(r["path"]): r for r in csv.DictReader((run / "c.csv").open())}
    assert rows["coffee.png"]["label"] == "zebra"
    done = CliRunner().invoke(app, ["review", str(output), "--export-support", str(run / "s")])
    assert done.exit_code == 0, done.output
    assert [p.name for p in (run / "s" / "zebra").iterdir()] == ["coffee.png"]
    done = CliRunner().invoke(app, ["review", str(output), "--apply"])
    assert done.exit_code == 0, done.output
    assert os.path.islink(run / "sorted" / "zebra" / "coffee.png")  # a symlink run: moved as is
    assert not list((run / "sorted").glob("[!z]*/coffee.png"))


def test_apply_never_follows_a_link_planted_as_the_new_label_folder(
    served: Running, output: Path, tmp_path: Path
) -> None:
    post(served, "/api/label", {"label": "zebra"})
    index = served.index_of("coffee.png")
    post(served, "/api/decide", {"index": index, "action": "set", "label": "zebra"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (output.parent / "sorted" / "zebra").symlink_to(elsewhere)
    status, answer = post(served, "/api/finish", {"action": "apply"})
    assert status == 200 and answer["failed"] is True
    assert "no file moved" in str(answer["line"]) and answer["problems"]
    assert list(elsewhere.iterdir()) == []


def test_status_filters_follow_the_live_decisions(served: Running) -> None:
    rows = served.json("GET", "/api/rows?limit=500")["rows"]
    readable = [row for row in rows if not row["error"]]
    first, second = readable[0], readable[1]
    other = next(label for label in served.server.api.table.labels if label != first["label"])
    served.json("POST", "/api/decide", {"index": first["index"], "action": "set", "label": other})
    served.json("POST", "/api/decide", {"index": second["index"], "action": "accept"})
    changed = served.json("GET", "/api/rows?status=changed")["rows"]
    assert [row["index"] for row in changed] == [first["index"]]
    reviewed = served.json("GET", "/api/rows?status=reviewed")["rows"]
    assert [row["index"] for row in reviewed] == [first["index"], second["index"]]
    unreviewed = served.json("GET", "/api/rows?status=unreviewed&limit=500")
    assert unreviewed["total"] == len(readable) - 2
    assert {first["index"], second["index"]}.isdisjoint(r["index"] for r in unreviewed["rows"])
    # After a page's last rank, not an offset: a row decided under the filter shifts nothing.
    later = served.json("GET", f"/api/rows?status=unreviewed&after={rows[3]['rank']}")["rows"]
    assert [row["index"] for row in later] == [row["index"] for row in rows[4:] if not row["error"]]
    assert served.request("GET", "/api/rows?status=evil")[0] == 400


def test_finish_actions_write_beside_the_output_and_say_where(
    served: Running, output: Path
) -> None:
    index = served.index_of("coffee.png")
    served.json("POST", "/api/decide", {"index": index, "action": "set", "label": "rocket"})
    targets = served.json("GET", "/api/state")["finish"]
    run = output.parent.resolve()
    assert targets == {
        "export": str(run / "out.corrected.csv"),
        "support": str(run / "out.support"),
        "apply": str(run / "sorted"),
    }
    exported = served.json("POST", "/api/finish", {"action": "export"})
    assert exported["path"] == targets["export"] and targets["export"] in exported["line"]
    assert "coffee.png,rocket," in (run / "out.corrected.csv").read_text()
    again = served.json("POST", "/api/finish", {"action": "export"})  # its own file: replaced
    assert again["line"] == exported["line"]
    linked = served.json("POST", "/api/finish", {"action": "support"})
    assert linked["line"] == f"linked 1 reviewed image into {run / 'out.support'}"
    assert [p.name for p in (run / "out.support" / "rocket").iterdir()] == ["coffee.png"]
    applied = served.json("POST", "/api/finish", {"action": "apply"})
    assert applied["failed"] is False and applied["line"].startswith("moved 1 file in ")
    assert os.path.lexists(run / "sorted" / "rocket" / "coffee.png")
    assert post(served, "/api/finish", {"action": "delete"})[0] == 400


def test_finish_never_replaces_a_foreign_file_nor_follows_a_planted_link(
    served: Running, output: Path, tmp_path: Path
) -> None:
    run = output.parent
    (run / "out.corrected.csv").write_text("name,notes\nmine,keep me\n")
    status, answer = post(served, "/api/finish", {"action": "export"})
    assert status == 400 and "not a review export" in str(answer["error"])
    assert (run / "out.corrected.csv").read_text() == "name,notes\nmine,keep me\n"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "out.support").symlink_to(elsewhere)
    index = served.index_of("coffee.png")
    served.json("POST", "/api/decide", {"index": index, "action": "accept"})
    status, answer = post(served, "/api/finish", {"action": "support"})
    assert status == 400 and "symbolic link" in str(answer["error"])
    assert list(elsewhere.iterdir()) == []


def test_a_stopping_review_takes_no_finish_action(served: Running, output: Path) -> None:
    served.server.api.close()
    status, answer = post(served, "/api/finish", {"action": "export"})
    assert status == 400 and "stopping" in str(answer["error"])
    assert not (output.parent / "out.corrected.csv").exists()


@pytest.mark.parametrize(
    "name,export",
    [
        ("labels.csv", "labels.corrected.csv"),
        ("run.v2.jsonl", "run.v2.corrected.jsonl"),
        ("labels.parquet", "labels.corrected.csv"),
    ],
)
def test_the_page_exports_beside_the_output_in_a_format_export_writes(
    tmp_path: Path, name: str, export: str
) -> None:
    table = ReviewTable(tmp_path / name, (), (), "unknown", None, None, "top-2")
    targets = page_targets(table)
    assert targets["export"] == str(tmp_path / export)
    assert targets["support"] == str(tmp_path / (name.rsplit(".", 1)[0] + ".support"))
    assert targets["apply"] is None  # nothing sorted: the page shows no apply button


def test_applies_at_once_move_each_file_once_and_wait_for_a_held_sort_folder(
    served: Running, output: Path
) -> None:
    index = served.index_of("coffee.png")
    served.json("POST", "/api/decide", {"index": index, "action": "set", "label": "rocket"})
    with SortFolder(output.parent / "sorted") as held:  # a CLI --apply or label run in it
        held.claim()
        status, answer = post(served, "/api/finish", {"action": "apply"})
        assert status == 400 and "in use" in str(answer["error"])
    with ThreadPoolExecutor(4) as pool:  # two tabs, double clicks
        lines = list(pool.map(lambda _: post(served, "/api/finish", {"action": "apply"}), "1234"))
    said = sorted(str(answer["line"]).split(" in ")[0] for _, answer in lines)
    assert said == ["moved 1 file"] + ["nothing to move"] * 3
    sorted_folder = output.parent / "sorted"
    assert list(sorted_folder.rglob("coffee.png")) == [sorted_folder / "rocket" / "coffee.png"]
