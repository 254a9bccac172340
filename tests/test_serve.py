"""`clipcls serve` on a free loopback port, started and stopped here: --server answers equal
local ones, concurrent clients, every limit, the API key, --allow-dir, bad requests that leave
the server up, and a clean stop on SIGTERM. Each test sends a bounded number of requests."""

import base64
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, class_folders, clipcls_process
from typer.testing import CliRunner

from clipcls.cli import app

pytestmark = pytest.mark.slow  # starts clipcls servers: run by .ci/run with -m slow

pytest.importorskip("litserve")
runner = CliRunner()
LABELS = "cat,coffee,rocket"
KEY = "s3cret-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A `clipcls serve` process on 127.0.0.1, ready once its model answers /v1/info."""

    def __init__(
        self, model: str, *args: str, key: str | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        command = [sys.executable, "-m", "clipcls", "serve", "--model", model]
        command += ["--port", str(self.port), *args]
        env = {**os.environ, **({"CLIPCLS_API_KEY": key} if key else {})}
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
            try:
                if self.call("GET", "/v1/info")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not come up")

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        kind: str = "application/json",
        key: str | None = None,
    ) -> tuple[int, dict]:  # type: ignore[type-arg]
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Content-Type", kind)
        if key or self.key:
            request.add_header("X-API-Key", key or self.key or "")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, parsed(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, parsed(error.read())

    def predict(self, images: list[dict], **fields: object) -> tuple[int, dict]:  # type: ignore[type-arg]
        body = {"images": images, "labels": LABELS.split(","), **fields}
        return self.call("POST", "/v1/predict", json.dumps(body).encode())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.stderr = self.process.stderr.read()  # type: ignore[union-attr]
        return code


def parsed(body: bytes) -> dict:  # type: ignore[type-arg]
    try:
        return dict(json.loads(body))
    except ValueError:
        return {"text": body.decode()}  # /healthz answers plain "ok"


def data(name: str) -> dict[str, str]:
    return {"name": name, "data": base64.b64encode((SAMPLE_IMAGES / name).read_bytes()).decode()}


@pytest.fixture(scope="module")
def server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "chelsea.png").write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
    running = Server(
        tiny_model,
        "--allow-dir",
        str(allowed),
        "--max-images",
        "8",
        "--max-labels",
        "20",
        "--max-body-mb",
        "4",
    )
    running.allowed = allowed  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        assert running.stop() == 0  # SIGTERM: a clean stop
        assert "ready: local-dir:" in running.stderr and "Traceback" not in running.stderr


def test_predict_on_the_server_equals_the_local_run(
    server: Server, tiny_model: str, photos: Path
) -> None:
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / os.fsdecode(b"caf\xe9 [bold]x.png")).write_bytes(
        (photos / "chelsea.png").read_bytes()
    )
    os.mkfifo(photos / "pipe.png")
    args = ["predict", str(photos), "--labels", LABELS, "-f", "jsonl", "-q"]
    local = runner.invoke(app, [*args, "--model", tiny_model])
    remote = runner.invoke(app, [*args, "--server", server.url])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output
    want = [json.loads(line) for line in local.stdout.splitlines()]
    got = [json.loads(line) for line in remote.stdout.splitlines()]
    assert [g["path"] for g in got] == [w["path"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert ("error" in g) == ("error" in w)
        for a, b in zip(g.get("predictions", []), w.get("predictions", []), strict=True):
            assert a["label"] == b["label"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def test_label_on_the_server_writes_the_local_rows(
    server: Server, tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    common = ["label", str(photos), "--labels", LABELS, "-q"]
    assert (
        runner.invoke(
            app, [*common, "-o", str(tmp_path / "a.csv"), "--model", tiny_model]
        ).exit_code
        == 0
    )
    remote = runner.invoke(app, [*common, "-o", str(tmp_path / "b.csv"), "--server", server.url])
    assert remote.exit_code == 0, remote.output
    local_rows = (tmp_path / "a.csv").read_text().splitlines()
    remote_rows = (tmp_path / "b.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in remote_rows] == [r.split(",")[:2] for r in local_rows]
    again = runner.invoke(
        app, [*common, "-o", str(tmp_path / "b.csv"), "--server", server.url, "--resume"]
    )
    assert again.exit_code == 0 and "nothing left" in again.stderr


def test_concurrent_clients_get_their_own_answers(server: Server) -> None:
    """Eight requests from four threads, each with its own labels: batched together on the
    server, each answered with its own label set."""
    label_sets = [["cat", "rocket"], ["coffee", "cat", "rocket"], ["dog", "car"], ["x", "y", "z"]]

    def ask(i: int) -> tuple[int, list[str]]:
        labels = label_sets[i % 4]
        status, answer = server.call(
            "POST",
            "/v1/predict",
            json.dumps(
                {"images": [data("chelsea.png"), data("rocket.jpg")], "labels": labels}
            ).encode(),
        )
        first = answer["predictions"][0]["predictions"]
        return status, sorted(p["label"] for p in first)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(8)))
    for i, (status, labels) in enumerate(answers):
        assert status == 200 and labels == sorted(label_sets[i % 4])


def test_bad_requests_get_4xx_json_and_the_server_stays_up(server: Server) -> None:
    cases = [
        (b"{not json", 400),
        (b"[" * 100_000, 400),
        (json.dumps({"images": []}).encode(), 400),
        (json.dumps({"images": [data("chelsea.png")], "labels": []}).encode(), 400),
        (json.dumps({"images": [{"data": "%%%"}], "labels": ["a", "b"]}).encode(), 400),
        (json.dumps({"images": [data("chelsea.png")] * 9, "labels": ["a", "b"]}).encode(), 413),
        (
            json.dumps(
                {"images": [data("chelsea.png")], "labels": [f"l{i}" for i in range(21)]}
            ).encode(),
            413,
        ),
        (json.dumps({"images": [data("chelsea.png")], "labels": ["a"], "what": 1}).encode(), 400),
        (
            json.dumps(
                {"images": [data("chelsea.png")], "labels": ["a"], "templates": "/etc/passwd"}
            ).encode(),
            400,
        ),
        (json.dumps({"images": [{"path": "/etc/passwd"}], "labels": ["a", "b"]}).encode(), 403),
        (
            json.dumps(
                {"images": [data("chelsea.png")], "labels": ["a"], "templates": "pyproject.toml"}
            ).encode(),
            400,
        ),
        (b"x" * (5 * 10**6), 413),
    ]
    for body, status in cases:
        got, answer = server.call("POST", "/v1/predict", body)
        assert got == status and isinstance(answer.get("error"), str), (body[:60], got, answer)
    # A file that is not an image is that image's error row, not a failed request.
    got, answer = server.predict(
        [{"name": "junk.jpg", "data": base64.b64encode(b"junk").decode()}, data("coffee.png")]
    )
    assert got == 200
    assert "error" in answer["predictions"][0] and "predictions" in answer["predictions"][1]
    # Paths under --allow-dir are read on the server; links out of it are not.
    allowed: Path = server.allowed  # type: ignore[attr-defined]
    got, answer = server.predict([{"path": str(allowed / "chelsea.png")}])
    assert got == 200 and "predictions" in answer["predictions"][0]
    (allowed / "escape.png").symlink_to("/etc/passwd")
    got, _ = server.predict([{"path": str(allowed / "escape.png")}])
    assert got == 403
    assert server.call("GET", "/healthz")[0] == 200
    # Uploaded bytes wait in files while their request runs, and not a moment longer.
    import glob
    import tempfile

    roots = ["/dev/shm", tempfile.gettempdir()]
    assert [f for root in roots for f in glob.glob(f"{root}/clipcls-serve-*/uploads/*")] == []
    status, info = server.call("GET", "/v1/info")
    assert status == 200 and info["device"] == "cpu" and info["limits"]["max_images"] == 8
    assert info["weights"].startswith("local-dir:") and info["clipcls"]


def test_multipart_uploads_work_like_curl_sends_them(server: Server) -> None:
    boundary = "clipclsboundary"
    field = f"--{boundary}\r\nContent-Disposition: form-data; "
    parts = [
        f'{field}name="labels"\r\n\r\ncat,rocket\r\n'.encode(),
        f'{field}name="images"; filename="c.png"\r\n'.encode()
        + b"Content-Type: image/png\r\n\r\n"
        + (SAMPLE_IMAGES / "chelsea.png").read_bytes()
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    status, answer = server.call(
        "POST", "/v1/predict", b"".join(parts), f"multipart/form-data; boundary={boundary}"
    )
    assert status == 200 and answer["predictions"][0]["path"] == "c.png"


def test_an_api_key_is_checked_on_every_request(tiny_model: str, photos: Path) -> None:
    keyed = Server(tiny_model, "--timeout", "2", "--allow-url-hosts", "127.0.0.1", key=KEY)
    try:
        assert keyed.call("GET", "/v1/info")[0] == 200
        assert keyed.call("GET", "/v1/info", key="wrong")[0] == 401
        keyed.key = None
        assert keyed.call("GET", "/v1/info")[0] == 401
        assert keyed.call("GET", "/healthz")[0] == 401
        assert keyed.predict([data("chelsea.png")])[0] == 401
        args = ["predict", str(photos / "chelsea.png"), "--labels", LABELS, "--server", keyed.url]
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "CLIPCLS_API_KEY" in refused.stderr
        allowed = runner.invoke(app, args, env={"CLIPCLS_API_KEY": KEY})
        assert allowed.exit_code == 0, allowed.output
        # --timeout bounds a request's whole time: an image URL that answers after 60 s.
        keyed.key = KEY
        with slow_site(60.0) as url:
            started = time.monotonic()
            status, answer = keyed.predict([{"url": url}])
        assert status == 504 and "--timeout" in answer["error"]
        assert (
            time.monotonic() - started < 30
        )  # a hang guard: --timeout 2 (answers in ~2 s), the site 60 s
    finally:
        assert keyed.stop() == 0


@contextlib.contextmanager
def slow_site(delay: float) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with a 404 after delay s."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(delay)
            with contextlib.suppress(OSError):  # the server's fetch may be gone by now
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}/slow.jpg"
    finally:
        site.shutdown()
        site.server_close()


def test_off_loopback_needs_a_key_and_serve_needs_its_extra(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_host = runner.invoke(app, ["serve", "--model", tiny_model, "--host", "0.0.0.0"])
    assert open_host.exit_code == 2 and "--api-key" in open_host.stderr
    monkeypatch.setitem(sys.modules, "litserve", None)
    missing = runner.invoke(app, ["serve", "--model", tiny_model])
    assert missing.exit_code == 2 and "pip install 'clipcls[serve]'" in missing.stderr


def test_evaluate_on_the_server_reports_the_local_metrics(
    server: Server, tiny_model: str, tmp_path: Path
) -> None:
    dataset = class_folders(tmp_path / "data")
    args = ["evaluate", str(dataset), "-t", "photo", "-f", "json", "-q"]
    local = runner.invoke(app, [*args, "--model", tiny_model])
    remote = runner.invoke(app, [*args, "--server", server.url])
    assert remote.exit_code == 0, remote.output
    want, got = json.loads(local.stdout), json.loads(remote.stdout)
    for key in ("top1", "balanced_accuracy", "macro_f1", "n_images", "confusion_matrix"):
        assert got[key] == want[key], key


def test_the_client_never_imports_torch(server: Server, photos: Path) -> None:
    args = ["predict", str(photos / "chelsea.png"), "--labels", LABELS, "--server", server.url]
    out, torch, _ = clipcls_process(*args, "-f", "jsonl")
    assert not torch
    assert json.loads(out)["predictions"][0]["label"] in LABELS.split(",")


def test_a_model_the_server_does_not_run_is_refused(server: Server, photos: Path) -> None:
    args = ["predict", str(photos), "--labels", LABELS, "--server", server.url, "--model", "RN50"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "the server at" in result.stderr


def test_a_killed_label_run_on_the_server_resumes_without_doubles(
    server: Server, tmp_path: Path
) -> None:
    from PIL import Image

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(80):
        Image.effect_noise((64, 48), 20 + i).convert("RGB").save(folder / f"{i:03d}.jpg")
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "clipcls", "label", str(folder), "-o", str(out), "-q"]
    command += ["--labels", LABELS, "--server", server.url]
    running = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") > 2):
        time.sleep(0.01)
    running.send_signal(signal.SIGKILL)
    running.wait()
    subprocess.run([*command, "--resume"], check=True, timeout=120)
    names = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert sorted(Path(n).name for n in names) == [f"{i:03d}.jpg" for i in range(80)]


def test_a_port_in_use_is_one_line_before_any_model_loads(server: Server, tiny_model: str) -> None:
    taken = runner.invoke(app, ["serve", "--model", tiny_model, "--port", str(server.port)])
    assert taken.exit_code == 2 and "cannot listen on 127.0.0.1 port" in taken.stderr


def test_killing_the_server_takes_its_workers_along(tiny_model: str) -> None:
    """kill -9 of `clipcls serve` leaves no LitServe process holding the port."""
    doomed = Server(tiny_model)
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait()
    deadline = time.monotonic() + 60  # a hang guard: an orphan would answer for ever
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", doomed.port)) != 0:
                break  # nobody answers on the port any more
        time.sleep(0.1)
    else:
        raise AssertionError("an orphaned server process still answers")
    # Its state folder (uploads, model facts) is left for the next server to sweep away.
    from clipcls.server.app import STATE_PREFIX, sweep_dead_servers

    bases = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    left = [f for base in bases for f in base.glob(f"{STATE_PREFIX}{doomed.process.pid}-*")]
    assert left
    for base in bases:
        sweep_dead_servers(base)
    assert not any(folder.exists() for folder in left)


def test_state_left_by_a_killed_server_is_swept(tmp_path: Path) -> None:
    from clipcls.server.app import STATE_PREFIX, sweep_dead_servers

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    gone = tmp_path / f"{STATE_PREFIX}{dead}-abc"
    alive = tmp_path / f"{STATE_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{STATE_PREFIX}notapid-x"
    for folder in (gone, alive, other):
        (folder / "uploads").mkdir(parents=True)
        (folder / "uploads" / "image").write_bytes(b"a client's photo")
    sweep_dead_servers(tmp_path)
    assert not gone.exists() and alive.exists() and other.exists()
