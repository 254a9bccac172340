"""How compare_trees.py runs one scenario in one checkout: a whole clipcls process, or a
`clipcls serve` with its answers, in an emptied work folder with a cold cache; what it wrote,
its wall and CPU seconds (CPU: the processes it waited for, so not Ray's daemons)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SERVER_START_S = 180  # a loaded 2-core machine takes ~10 s; a hung start must not hang the run
COMMAND_S = 600


@dataclass
class Outcome:
    """One run: its outputs by name, seconds, and why it failed (None: it did not)."""

    files: dict[str, bytes] = field(default_factory=dict)
    wall: float = 0.0
    cpu: float = 0.0
    error: str | None = None


class Scenario(Protocol):
    name: str

    def run(self, tree: Path, work: Path) -> Outcome: ...


def environment(tree: Path, work: Path) -> dict[str, str]:
    """The run's environment: its tree first on the path, every cache inside work, no network,
    and no Ray to join (`--engine ray` starts its own)."""
    return {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CLIPCLS_CACHE_DIR": str(work / "cache"),
        "HF_HOME": str(work / "hf"),
        "HF_HUB_OFFLINE": "1",
        "RAY_ADDRESS": "",
    }


@contextlib.contextmanager
def measured(outcome: Outcome) -> Iterator[None]:
    """Fill outcome's wall and CPU seconds with what the block and its children took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        yield
    finally:
        outcome.wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcome.cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def clipcls(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "clipcls", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=COMMAND_S)


@dataclass(frozen=True)
class Command:
    """One whole `clipcls ARGS` process; outputs: the files it writes into the work folder."""

    name: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]

    def run(self, tree: Path, work: Path) -> Outcome:
        outcome = Outcome()
        with measured(outcome):
            done = clipcls(*self.args, env=environment(tree, work), cwd=work)
        if done.returncode != 0:
            outcome.error = f"exit {done.returncode}: {tail(done.stderr.decode())}"
        for name in self.outputs:
            if (work / name).exists():
                outcome.files[name] = (work / name).read_bytes()
        return outcome


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def images_body(paths: list[Path], **fields: Any) -> dict[str, Any]:
    """A JSON predict request carrying the images' bytes (named by their file names)."""
    images = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    return {"images": images, **fields}


def post(url: str, body: dict[str, Any]) -> bytes:
    """The answer's bytes, as the server sent them; an HTTP error raises with its body."""
    request = urllib.request.Request(url + "/v1/predict", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"HTTP {error.code}: {error.read()[:300]!r}") from None


def wait_ready(server: subprocess.Popen[bytes], url: str) -> None:
    """Return once /healthz answers 200; RuntimeError if the server exits or takes too long."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused while starting, or 503 while the model loads
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {SERVER_START_S} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C the server's process group (its workers too), then kill it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@dataclass(frozen=True)
class Serve:
    """`clipcls serve` on a free loopback port: raw answers to JSON requests (name -> body),
    then the same tree's CLI as a client (name -> args, `--server URL` added; stdout kept)."""

    name: str
    options: tuple[str, ...]
    requests: dict[str, dict[str, Any]]
    clients: dict[str, tuple[str, ...]]

    def run(self, tree: Path, work: Path) -> Outcome:
        outcome, env = Outcome(), environment(tree, work)
        url = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "clipcls", "serve", *self.options]
        command += ["--port", url.rsplit(":", 1)[1]]
        with measured(outcome):
            log = (work / "server.log").open("wb")
            server = subprocess.Popen(
                command, env=env, cwd=work, stdout=log, stderr=log, start_new_session=True
            )
            try:
                wait_ready(server, url)
                self.ask(url, env, work, outcome)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                outcome.error = f"{error}\n{tail((work / 'server.log').read_text())}"
            finally:
                stop(server)
                log.close()
        return outcome

    def ask(self, url: str, env: dict[str, str], work: Path, outcome: Outcome) -> None:
        for name, body in self.requests.items():
            outcome.files[name] = post(url, body)
        for name, args in self.clients.items():
            done = clipcls(*args, "--server", url, env=env, cwd=work)
            if done.returncode != 0:
                raise RuntimeError(f"{name}: exit {done.returncode}: {tail(done.stderr.decode())}")
            outcome.files[name] = done.stdout
