"""Attacks on issue 36's new surfaces: the search order hint for a file, a config value holding a
C1 control character (U+009B is CSI to a terminal), and the review page's Transfer-Encoding."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from review_helpers import TOKEN, label_output, running
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.review.export import export_support
from clipcls.review.log import ReviewLog
from clipcls.review.newlabel import check_new_label
from clipcls.review.table import load_review
from clipcls.search.arguments import split_query
from clipcls.userconfig import change_setting, parse_config

runner = CliRunner()


def test_a_query_before_a_file_gets_the_order_as_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("photo.png").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    Path("more").mkdir()
    with pytest.raises(UsageError) as caught:
        split_query(["a cat", "photo.png"], [], False)
    assert str(caught.value) == (
        "input path does not exist: a cat; the query comes last: search photo.png 'a cat'"
    )
    with pytest.raises(UsageError) as caught:  # the other inputs stay in the hint
        split_query(["a cat", "more", "photo.png"], [], False)
    assert str(caught.value).endswith("the query comes last: search more photo.png 'a cat'")
    assert split_query(["photo.png", "a cat"], [], False) == ("a cat", ["photo.png"])


@pytest.mark.parametrize("control", ["\x9b", "\x85", "\x80"])
def test_a_model_value_with_a_c1_control_is_refused(
    control: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `clipcls config` echoes the value to the terminal as it is: U+009B would start an
    # escape sequence there, as ESC does (refused already).
    escaped = f"\\u{ord(control):04x}"
    with pytest.raises(UsageError, match="must be one line of text"):
        parse_config(f'model = "ViT-B-32{escaped}31m"\n', "f")
    monkeypatch.setenv("CLIPCLS_CONFIG", str(tmp_path / "config.toml"))
    with pytest.raises(UsageError, match="must be one line of text"):
        change_setting("model", f"ViT-B-32{control}31m")
    monkeypatch.setenv("CLIPCLS_MODEL", f"ViT-B-32{control}31m")
    done = runner.invoke(app, ["config"])
    assert done.exit_code == 2 and control not in done.output


def test_no_folder_given_at_the_root_is_refused_not_walked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The current folder stands in for a folder not given; at / that walked every file system
    # (/proc, /sys, network mounts), silently, for as long as it took.
    monkeypatch.chdir("/")
    with pytest.raises(UsageError) as caught:
        split_query(["a cat"], [], False)
    assert str(caught.value) == (
        "the current folder is /, the whole file system: give the folder to search: "
        "search DIR 'a cat' (or search / 'a cat' to mean it)"
    )
    assert split_query(["/", "a cat"], [], False) == ("a cat", ["/"])  # named: searched
    done = runner.invoke(app, ["search", "a cat", "-m", "local-dir:/nowhere"])
    assert done.exit_code == 2 and "the whole file system" in done.stderr


def test_a_support_export_never_links_into_a_label_folder_planted_as_a_link(
    tmp_path: Path, tiny_model: str
) -> None:
    # The page refuses NAME.support as a link; one level down, a planted NAME.support/<label>
    # link to someone else's folder was followed, and the reviewed images linked into it.
    output = label_output(tmp_path / "run", tiny_model)
    table = load_review(output)
    index = next(row.index for row in table.rows if row.path.endswith("coffee.png"))
    support = output.with_name("out.support")
    support.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (support / "rocket").symlink_to(elsewhere)
    problems: list[str] = []
    with ReviewLog.open(table) as log:
        log.decide(index, "rocket", "set")
        log.decide(
            next(i for i in range(len(table.rows)) if i != index and table.rows[i].error is None),
            "cat",
            "set",
        )
        linked = export_support(table, log.current(), support, problems)
    assert list(elsewhere.iterdir()) == []
    assert linked == 1 and [p.name for p in (support / "cat").iterdir()]
    assert any("rocket" in problem and "link" in problem for problem in problems), problems


def test_a_post_framed_two_ways_is_refused_and_its_connection_closed(
    tmp_path: Path, tiny_model: str
) -> None:
    # Content-Length and Transfer-Encoding both: HTTP says the chunks frame the body, this
    # server read by the length and took the rest (a second, smuggled request) as the next one.
    output = label_output(tmp_path / "run", tiny_model)
    with running(output, tmp_path / "thumbs") as served:
        body = b'{"label": "zebra"}'
        smuggled = f"POST /api/label?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n"
        smuggled += 'Content-Length: 17\r\n\r\n{"label": "lynx"}'
        head = f"POST /api/label?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n"
        head += f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
        with socket.create_connection(("127.0.0.1", served.server.port)) as raw:
            raw.settimeout(10)
            raw.sendall(head.encode() + body + smuggled.encode())
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 411") and answer.count(b"HTTP/1.1 ") == 1
        assert served.server.api.log.added == []


@pytest.mark.parametrize(("existing", "new"), [("a/b", "a_b"), ("Dog?", "dog_"), ("x:y", "X_Y")])
def test_a_new_label_never_shares_a_run_labels_folder(existing: str, new: str) -> None:
    # `label` refuses two labels sharing a --sort-into folder; a label added on the page named
    # like another's folder had --apply put both labels' files in one folder.
    with pytest.raises(UsageError, match="folder"):
        check_new_label(new, [existing, "cat"])
    assert check_new_label("a-b", [existing, "cat"]) == "a-b"
