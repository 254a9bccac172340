"""`clipcls search DIR "QUERY" --server URL` is answered without loading Typer or numpy, prints
exactly what the full command line prints, and leaves every other case to it untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clipcls.cli.quick import QuickSearch, parse_quick, quick_search
from clipcls.client.wire import machine_id
from clipcls.output.formats import Format

REPO = Path(__file__).resolve().parent.parent
# the command line as the `clipcls` script runs it, then which heavy modules it loaded
RUN = (
    "import atexit, sys\n"
    "heavy = ('typer', 'numpy', 'clipcls.cache', 'PIL')\n"
    "atexit.register(lambda: print('loaded:', *[m for m in heavy if m in sys.modules],"
    " file=sys.stderr))\n"
    "from clipcls.cli import main\n"
    "sys.argv = ['clipcls', *sys.argv[1:]]\n"
    "main()\n"
)


class FakeServer:
    """A stand-in for `clipcls serve` on 127.0.0.1: its facts, and a search answer (or a
    status) for every search request; it records the requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.status = 200  # what a search request gets
        self.info_status = 200
        self.trickle = 0.0  # seconds between the bytes of a search answer (0: sent at once)
        self.raw: bytes | None = None  # sent as it is for a search request, if set
        self.delay = 0.0  # seconds before a search request is answered
        self.requests: list[tuple[str, str, Any]] = []
        self.hits = [
            {"rank": 1, "path": str(root / "b" / "cat [/b].jpg"), "score": 0.3125},
            {"rank": 2, "path": str(root / "a.jpg"), "score": 0.25},
            {"rank": 3, "path": str(root / "=cmd().jpg"), "score": -0.125},
        ]
        self.failures = [[str(root / "broken.jpg"), f"cannot identify image {root}/broken.jpg"]]
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, None))
                self.reply(fake.info_status, fake.facts())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", self.path, body))
                time.sleep(fake.delay)
                if fake.raw is not None:
                    self.wfile.write(fake.raw)
                    return
                answer = {"search": fake.hits, "failures": fake.failures, "embedded": 0}
                self.reply(fake.status, answer if fake.status == 200 else {"error": "no"})

            def reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fake.trickle and body.get("search") is not None:
                    for byte in data[:50]:  # a byte at a time, each within the read timeout
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(fake.trickle)
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def facts(self) -> dict[str, Any]:
        return {
            "clipcls": "0.1.0",
            "machine": machine_id(),
            "allow_dirs": [str(self.root)],
            "limits": {"max_images": 256, "max_top_k": 1000},
            "model": "ViT-B-32",
            "pretrained": "openai",
            "device": "cpu",
            "precision": "fp32",
            "logit_scale": 100.0,
            "logit_bias": None,
            "image_cache_key": "i",
            "text_cache_key": "t",
        }

    def searches(self) -> list[Any]:
        return [body for method, _, body in self.requests if method == "POST"]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeServer]:
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    server = FakeServer(root)
    yield server
    server.server.shutdown()
    server.server.server_close()


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdout: bool = True
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """The `clipcls` script run with args; stdout=False: into a pipe nobody reads (EPIPE)."""
    environment = {k: v for k, v in os.environ.items() if k != "CLIPCLS_SERVER"}
    environment.update({"COLUMNS": "100", "PYTHONPATH": str(REPO), **(env or {})})
    command = [sys.executable, "-c", RUN, *args]
    if stdout:
        return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            command, cwd=cwd, env=environment, stdout=write, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["search", "d", "q", "--server", "http://s"], QuickSearch(("d",), "q", "http://s")),
        (
            ["search", "d", "e", "a + b", "-k", "5", "-q", "--server=http://s", "-f", "csv"],
            QuickSearch(("d", "e"), "a + b", "http://s", 5, Format.CSV, True),
        ),
        (
            ["search", "-k3", "d", "q", "--top-k=7", "--server", "http://s"],  # the last, as Click
            QuickSearch(("d",), "q", "http://s", 7),
        ),
        (
            ["search", "d", "q", "--format=jsonl", "--server", "u"],
            QuickSearch(("d",), "q", "u", fmt=Format.JSONL),
        ),
        (["search", "d", "q"], None),  # no server: the local search
        (["search", "d", "q", "--server", ""], None),
        (["search", "q", "--server", "http://s"], None),  # no folder
        (["search", "d", "q", "--server", "http://s", "-k", "0"], None),
        (["search", "d", "q", "--server", "http://s", "-k", "-5"], None),
        (["search", "d", "q", "--server", "http://s", "-k", "٣"], None),  # Click: not an int
        (["search", "d", "q", "--server", "http://s", "-k"], None),
        (["search", "d", "q", "--server", "http://s", "-f", "parquet"], None),
        (["search", "d", "q", "--server", "http://s", "-f", "CSV"], None),
        (["search", "d", "q", "--server", "http://s", "--image", "x.jpg"], None),
        (["search", "d", "q", "--server", "http://s", "--model", "ViT-B-32"], None),
        (["search", "d", "q", "--server", "http://s", "--include-hidden"], None),
        (["search", "d", "q", "--server", "http://s", "-qk", "5"], None),  # combined flags
        (["search", "d", "--", "-q", "--server", "http://s"], None),
        (["search", "d", "-blurry", "--server", "http://s"], None),
        (["search", "d", "q", "--server", "http://s", "--help"], None),
        (["similar", "x.jpg", "d", "--server", "http://s"], None),
        (["label", "d", "--labels", "a,b", "--server", "http://s"], None),
        ([], None),
    ],
)
def test_only_a_plain_served_search_takes_the_fast_path(argv: list[str], expected: Any) -> None:
    assert parse_quick(argv, None) == expected


def test_the_server_may_come_from_the_environment() -> None:
    assert parse_quick(["search", "d", "q"], "http://env") == QuickSearch(("d",), "q", "http://env")
    assert parse_quick(["search", "d", "q", "--server", "http://s"], "http://env") == (
        QuickSearch(("d",), "q", "http://s")
    )


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl", "json"])
def test_the_fast_path_prints_what_the_full_command_line_prints(
    fake: FakeServer, tmp_path: Path, fmt: str
) -> None:
    args = ("search", "photos", "a red car + sunset", "-k", "3", "--server", fake.url, "-f", fmt)
    quick = run(*args, cwd=tmp_path)
    full = run(*args, "--no-cache", cwd=tmp_path)  # an option the fast path leaves alone
    assert quick.returncode == full.returncode == 0, quick.stderr + full.stderr
    assert quick.stderr.splitlines()[-1] == "loaded:"  # no typer, no numpy
    assert "typer" in full.stderr.splitlines()[-1]
    assert quick.stdout == full.stdout
    assert quick.stderr.splitlines()[:-1] == full.stderr.splitlines()[:-1]
    assert "model ViT-B-32:openai on the server at" in quick.stderr
    assert "warning: cannot identify image photos/broken.jpg" in quick.stderr  # as given
    assert "photos/b/cat [/b].jpg" in quick.stdout  # spelled under the folder as given
    expected = {"folders": [str(tmp_path / "photos")], "text": "a red car + sunset", "k": 3}
    assert fake.searches() == [{"search": expected}] * 2


def test_quiet_and_the_environment_server(fake: FakeServer, tmp_path: Path) -> None:
    done = run("search", "photos", "a cat", "-q", cwd=tmp_path, env={"CLIPCLS_SERVER": fake.url})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "loaded:"
    assert "model" not in done.stderr and "warning:" in done.stderr
    assert "0.3125" in done.stdout


@pytest.mark.parametrize("status", [403, 400, 404])
def test_a_refused_search_leaves_everything_to_the_full_command_line(
    fake: FakeServer, tmp_path: Path, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # outside the server's --allow-dir (403), a query it cannot read (400), an older server
    fake.status = status
    argv = ["search", str(fake.root), "a cat", "--server", fake.url]
    assert quick_search(argv) is None
    assert capsys.readouterr() == ("", "")  # the full command line says what there is to say


def test_a_loading_or_absent_server_is_left_to_the_full_command_line(
    fake: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.info_status = 503  # loading: the full command line waits for it, this does not
    argv = ["search", str(fake.root), "a cat", "--server", fake.url]
    assert quick_search(argv) is None
    assert [method for method, _, _ in fake.requests] == ["GET"]
    gone = FakeServer(fake.root)
    url = gone.url
    gone.server.shutdown()
    gone.server.server_close()
    assert quick_search(["search", str(fake.root), "a cat", "--server", url]) is None
    assert capsys.readouterr() == ("", "")


def test_inputs_that_are_not_all_folders_never_reach_the_server(
    fake: FakeServer, tmp_path: Path
) -> None:
    (fake.root / "a.jpg").write_bytes(b"not read")
    for inputs in ([str(fake.root / "a.jpg")], [str(fake.root), str(tmp_path / "missing")]):
        assert quick_search(["search", *inputs, "a cat", "--server", fake.url]) is None
    assert fake.searches() == []


def test_a_garbled_answer_is_the_full_command_lines_error(fake: FakeServer, tmp_path: Path) -> None:
    fake.hits = [{"rank": "first", "path": "x"}]  # type: ignore[list-item]
    done = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path)
    full = run("search", "photos", "a cat", "--server", fake.url, "--no-cache", cwd=tmp_path)
    assert done.returncode == full.returncode == 1
    assert "sent a search answer clipcls cannot read" in done.stderr
    assert done.stderr.splitlines()[:-1] == full.stderr.splitlines()[:-1]
    assert done.stderr.splitlines()[-1] == "loaded:"  # said as the full command line says it
    assert len(fake.searches()) == 2  # one each: a search sent is not sent again
    assert "Traceback" not in done.stderr


def test_the_package_facade_loads_each_name_on_first_use() -> None:
    # `import clipcls` (which every command does first) loads no numpy; the names still work
    code = (
        "import sys, clipcls\n"
        "print('numpy' in sys.modules)\n"
        "from clipcls import *\n"
        "print('numpy' in sys.modules, clipcls.Classifier.__module__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True", "clipcls.classify"], done.stderr
    import clipcls

    for name in clipcls.__all__:
        assert getattr(clipcls, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        clipcls.Nope  # noqa: B018


def test_a_full_disk_under_stdout_is_the_full_command_lines_line(
    fake: FakeServer, tmp_path: Path
) -> None:
    args = ("search", "photos", "a cat", "-f", "csv", "--server", fake.url)
    said = []
    for extra in ((), ("--no-cache",)):  # the fast path, then the full command line
        with open("/dev/full", "w") as full:
            env = {k: v for k, v in os.environ.items() if k != "CLIPCLS_SERVER"}
            env["PYTHONPATH"] = str(REPO)
            command = [sys.executable, "-c", RUN, *args, *extra]
            done = subprocess.run(
                command, cwd=tmp_path, env=env, stdout=full, stderr=subprocess.PIPE, text=True
            )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        said.append(done.stderr.splitlines()[:-1])  # less the modules line
    assert said[0] == said[1] and "error: cannot write stdout" in said[0][-1]


def test_an_answer_is_bounded_in_time_and_bytes_not_only_per_read(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clipcls.client import wire

    argv = ["search", str(fake.root), "a cat", "--server", fake.url]
    monkeypatch.setattr(wire, "TIMEOUT", 1.0)
    fake.trickle = 0.6  # each read waits 0.6 s, the whole answer would take 30 s
    assert quick_search(argv) == 1  # read whole, the answer would come after 30 s: exit 0
    assert "took over 1 s to send its answer" in capsys.readouterr().err
    fake.trickle = 0.0
    fake.failures = [[str(fake.root / f"{i}.jpg"), "cannot identify image"] for i in range(100)]
    monkeypatch.setattr(wire, "MAX_ANSWER", 2000)  # the facts fit, the search answer does not
    monkeypatch.setattr(wire, "READ", 10)
    assert quick_search(argv) == 1
    assert "an answer of over 2,000 bytes" in capsys.readouterr().err
