"""Attacks on the fast path of `clipcls search DIR "QUERY" --server URL`: argv forms, an
environment and server answers where it must print what the full command line prints, or
leave the run to it having printed nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest
import test_search_quick
from test_search_quick import REPO, RUN, FakeServer, run

from clipcls.cli.quick import parse_quick, quick_search
from clipcls.errors import ClipclsError
from clipcls.search.served import served_ranking

SAMPLES = REPO / "sample_images"


fake = test_search_quick.fake  # the stand-in server, as a fixture of these tests too


def test_a_dash_among_the_inputs_is_the_full_command_lines_stdin() -> None:
    # `-` reads the paths to search from stdin, even where a folder named `-` exists
    assert parse_quick(["search", "-", "a cat", "--server", "http://s"], None) is None
    assert parse_quick(["search", "d", "-", "a cat", "--server", "http://s"], None) is None


def test_a_cache_dir_click_refuses_is_left_to_the_full_command_line(
    fake: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(afile))  # --cache-dir's variable: a dir only
    assert quick_search(["search", str(fake.root), "a cat", "--server", fake.url]) is None
    assert capsys.readouterr() == ("", "")
    assert fake.requests == []
    done = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path,
               env={"CLIPCLS_CACHE_DIR": str(afile)})  # fmt: skip
    assert done.returncode == 2 and "is a file" in done.stderr
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(tmp_path / "not-yet"))  # created on first use
    assert quick_search(["search", str(fake.root), "a cat", "--server", fake.url, "-q"]) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b'{"search": [',  # stops halfway
        b"HELLO\r\n\r\n",  # no HTTP status line
        b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 200 + b"\r\n",  # headers without end
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    ],
    ids=["halfway", "no-status", "headers", "chunks"],
)
def test_a_broken_http_answer_is_one_error_line(
    fake: FakeServer, tmp_path: Path, raw: bytes
) -> None:
    fake.raw = raw
    done = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1
    assert f"error: the server at {fake.url} sent a broken answer (" in done.stderr


@pytest.mark.parametrize(
    "facts", [{"logit_scale": None}, {"logit_scale": "x"}, {"logit_bias": [1]}, {"model": 5}]
)
def test_a_server_without_the_facts_the_client_reads_is_refused_by_both(
    fake: FakeServer, tmp_path: Path, facts: dict[str, object]
) -> None:
    given = {**fake.facts(), **facts}
    fake.facts = lambda: {k: v for k, v in given.items() if v is not None}  # type: ignore[method-assign]
    done = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert "Traceback" not in done.stderr
    assert f"error: {fake.url} does not look like a clipcls server" in done.stderr


def hit(rank: object, path: object, score: object) -> dict[str, object]:
    return {"rank": rank, "path": path, "score": score}


@pytest.mark.parametrize(
    "hits",
    [
        [hit(1, "/etc/passwd", 0.5)],  # outside the folders searched
        [hit(1, "{root}/../x.jpg", 0.5)],
        [hit(1, "x.jpg", 0.5)],  # relative: to what?
        [hit(1, "{root}/a.jpg", float("nan"))],  # `-f json` would write NaN, not JSON
        [hit(1, "{root}/a.jpg", float("inf"))],
        [hit(1, "{root}/a.jpg", 10**400)],  # float() overflows
        [hit(1, "{root}/a.jpg", True)],
        [hit(2, "{root}/a.jpg", 0.5)],  # ranks are 1, 2, ... in order
        [hit(True, "{root}/a.jpg", 0.5)],
        [hit(1, "{root}/a.jpg", 0.5), hit(1, "{root}/b.jpg", 0.4)],
        [hit(1, 5, 0.5)],
        [hit(i, f"{{root}}/{i}.jpg", 0.5) for i in range(1, 5)],  # more than k = 3
    ],
)
def test_a_served_answer_out_of_bounds_is_refused(tmp_path: Path, hits: list[dict]) -> None:  # type: ignore[type-arg]
    root = str(tmp_path)
    for item in hits:
        if isinstance(item["path"], str):
            item["path"] = item["path"].format(root=root)

    def ask(folders: list[str], text: str, k: int) -> dict[str, object]:
        return {"search": hits, "failures": []}

    with pytest.raises(ClipclsError, match="sent a search answer clipcls cannot read"):
        served_ranking(ask, [root], "a cat", 3, "m")


def test_a_served_answer_in_bounds_is_read(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    answer = {
        "search": [hit(1, f"{root}/b/x.jpg", 0.5), hit(2, f"{root}/a.jpg", -1)],
        "failures": [[f"{root}/c.jpg", "cannot read"]],
    }
    found = served_ranking(lambda *_: answer, [str(root) + "/"], "a cat", 2, "m")
    assert found is not None
    assert [(h.rank, h.path, h.score) for h in found.hits] == [
        (1, f"{root}/b/x.jpg", 0.5),
        (2, f"{root}/a.jpg", -1.0),
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "table"])
def test_a_reader_gone_ends_both_quietly(fake: FakeServer, tmp_path: Path, fmt: str) -> None:
    # `| head -1` that has exited: a write to stdout fails with EPIPE
    root = fake.root
    fake.hits = [{"rank": i, "path": f"{root}/{i:05}.jpg", "score": 0.5} for i in range(1, 3001)]
    args = ("search", "photos", "a cat", "--server", fake.url, "-k", "3000", "-f", fmt, "-q")
    quick, full = (run(*args, *more, cwd=tmp_path, stdout=False) for more in ((), ("--no-cache",)))
    assert quick.stderr.splitlines()[-1] == "loaded:"
    assert "typer" in full.stderr.splitlines()[-1]
    assert quick.returncode == full.returncode == 1
    assert quick.stderr.splitlines()[:-1] == full.stderr.splitlines()[:-1]
    assert "Traceback" not in quick.stderr + full.stderr


@pytest.mark.parametrize("query", ["", "  ", "+", "a + ", "+ - blurry", "a cat + + b"])
def test_a_query_the_full_command_line_refuses_is_never_sent(
    fake: FakeServer, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # a server that answers anything: the full command line refuses these before asking it
    assert quick_search(["search", str(fake.root), query, "--server", fake.url]) is None
    assert capsys.readouterr() == ("", "")
    assert fake.searches() == []


@pytest.mark.parametrize("status", [500, 503, 401])
def test_a_failed_search_is_said_once_as_the_full_command_line_says_it(
    fake: FakeServer, tmp_path: Path, status: int
) -> None:
    # sent once, not again by the full command line: a server that fails after ten minutes
    # would make the command take twenty
    fake.status = status
    quick = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path)
    assert quick.stderr.splitlines()[-1] == "loaded:"
    assert len(fake.searches()) == 1
    full = run("search", "photos", "a cat", "--server", fake.url, "--no-cache", cwd=tmp_path)
    assert (
        (quick.returncode, quick.stdout)
        == (full.returncode, full.stdout)
        == (1 + (status == 401), "")
    )
    assert quick.stderr.splitlines()[:-1] == full.stderr.splitlines()[:-1]
    assert quick.stderr.startswith("model ViT-B-32:openai on the server at")


def test_ctrl_c_during_the_search_is_said_as_the_full_command_line_says_it(
    fake: FakeServer, tmp_path: Path
) -> None:
    fake.delay = 30.0
    said = []
    for more in ((), ("--no-cache",)):
        environment = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
        command = [sys.executable, "-c", RUN, "search", "photos", "a cat", "--server", fake.url]
        process = subprocess.Popen(
            [*command, *more], cwd=tmp_path, env=environment, stdout=PIPE, stderr=PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while len(fake.searches()) < len(said) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        said.append((process.returncode, out, err.splitlines()[:-1]))
    assert said[0] == said[1]
    assert said[0][0] == 130 and said[0][2][-1] == "interrupted"
    assert said[0][2][0].startswith("model ViT-B-32:openai on the server at")


def test_a_closed_stdout_is_one_error_line(fake: FakeServer, tmp_path: Path) -> None:
    said = []
    for more in ((), ("--no-cache",)):
        environment = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
        command = [sys.executable, "-c", RUN, "search", "photos", "a cat", "--server", fake.url]
        done = subprocess.run(
            [*command, "-f", "csv", *more],
            cwd=tmp_path,
            env=environment,
            stderr=PIPE,
            text=True,
            preexec_fn=lambda: os.close(1),  # `clipcls ... >&-`: Python's sys.stdout is None
        )
        said.append((done.returncode, done.stderr.splitlines()[:-1]))
    assert said[0] == said[1]
    assert said[0][0] == 1 and said[0][1][-1] == "error: stdout is closed: write to a file with -o"


@pytest.mark.slow  # starts a clipcls server
def test_every_spelling_of_a_folder_prints_what_the_full_command_line_prints(
    tiny_model: str, tmp_path: Path
) -> None:
    pytest.importorskip("litserve")
    from test_fewshot_serve import free_port, wait_for_info

    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for index, image in enumerate(sorted(SAMPLES.glob("*.*g"))[:6]):
        shutil.copy(image, (folder / "more" if index % 2 else folder) / image.name)
    (tmp_path / "link").symlink_to(folder)
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model, "--precision"]
    port = url.rsplit(":", 1)[1]
    server = subprocess.Popen(
        [*command, "fp32", "--port", port, "--allow-dir", str(tmp_path)], stderr=subprocess.DEVNULL
    )
    try:
        wait_for_info(server, url)
        for given in ("photos", "photos/", "./photos/.", "link", str(folder), "photos/more"):
            args = ("search", given, "a cat + coffee", "--server", url, "-k", "4")
            quick = run(*args, cwd=tmp_path)
            full = run(*args, "--no-cache", cwd=tmp_path)
            assert quick.stderr.splitlines()[-1] == "loaded:", (given, quick.stderr)
            assert (quick.returncode, quick.stdout) == (full.returncode, full.stdout), given
            assert quick.stderr.splitlines()[:-1] == full.stderr.splitlines()[:-1]
            assert str(Path(given)) + "/" in quick.stdout  # as the local walk spells it
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_ctrl_c_while_writing_is_said_as_the_full_command_line_says_it(
    fake: FakeServer, tmp_path: Path
) -> None:
    # stdout is a pipe nobody reads yet (`| less` on its first page): the writing blocks
    root = fake.root
    fake.hits = [{"rank": i, "path": f"{root}/{i:05}.jpg", "score": 0.5} for i in range(1, 3001)]
    said = []
    for more in ((), ("--no-cache",)):
        environment = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
        command = [sys.executable, "-c", RUN, "search", "photos", "a cat", "--server", fake.url]
        process = subprocess.Popen(
            [*command, "-k", "3000", "-f", "csv", *more],
            cwd=tmp_path,
            env=environment,
            stdout=PIPE,
            stderr=PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while len(fake.searches()) < len(said) + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the answer read, the pipe full
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        said.append((process.returncode, err.splitlines()[:-1]))
    assert said[0] == said[1]
    assert said[0][0] == 130 and said[0][1][-1] == "interrupted"


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "http://127.0.0.1:abc", "http://127.0.0.1:99999", "http://a b", "http://"],
)
def test_a_server_url_that_is_no_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    (tmp_path / "photos").mkdir()
    done = run("search", "photos", "a cat", "--server", url, cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"error: --server must be an http(s):// URL, not {url!r}"


@pytest.mark.parametrize(
    "body", [b"<html>hello</html>", b'{"search": ["\xff"]}'], ids=["html", "latin-1"]
)
def test_an_answer_that_is_not_json_is_unreadable_not_unreachable(
    fake: FakeServer, tmp_path: Path, body: bytes
) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n"
    fake.raw = head.encode() + body
    quick = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path)
    full = run("search", "photos", "a cat", "--server", fake.url, "--no-cache", cwd=tmp_path)
    assert (quick.returncode, quick.stderr.splitlines()[:-1]) == (1, full.stderr.splitlines()[:-1])
    assert f"error: the server at {fake.url} sent an answer clipcls cannot read" in quick.stderr
