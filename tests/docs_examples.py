"""Run the README's and docs/*.md's examples: find fenced blocks, run them, compare outputs.

A block whose lines start with `$ ` is a shell session: each command runs with bash in a
fresh work folder per document (sample_images/ copied in, caches under a temporary HOME, no
network), and what it prints (stdout and stderr together) must match the lines shown under it.
A ```python block runs with this Python and must succeed. Any other block must say why it is
not run, in an HTML comment on the line before it: `<!-- not-run: reason -->`.
Every command must exit 0: a document shows a failure as `$ cmd || echo "exit code $?"`.
`python tests/test_docs_examples.py --update` rewrites the shown outputs from a run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("docs/*.md"))]
COPIED = ("sample_images",)  # what a reader has beside them: the checkout
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(.+?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+)(\S*)\s*$")
COMMAND_TIMEOUT = 120
READY_TIMEOUT = 60
# Numbers that differ from run to run: timings and throughput.
VOLATILE = [
    (re.compile(r"\d+(\.\d+)? s\b"), "N s"),
    (re.compile(r"\d+(\.\d+)? images/s"), "N images/s"),
]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Command:
    """One `$ ` command of a session, its shown output and where that lies in the file."""

    text: str
    shown: list[str]
    first_output_line: int  # index in the document's lines
    background: bool = False


@dataclass
class Block:
    """One fenced block: its language, body lines and place, and why it is not run (if so)."""

    document: str
    line: int  # 1-based line of the opening fence
    language: str
    body: list[str]
    not_run: str | None
    indent: str = ""
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def is_session(self) -> bool:
        return any(line.startswith("$ ") for line in self.body)


def find_blocks(document: str, lines: list[str]) -> list[Block]:
    """Every fenced block of a document, shell sessions split into commands."""
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match.group(1), match.group(2)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        reason = NOT_RUN.match(before)
        why = reason.group(1) if reason else None
        block = Block(document, i + 1, match.group(3), body, why, indent)
        if block.is_session:
            block.commands = split_session(body, i + 1)
        blocks.append(block)
        i = end + 1
    return blocks


def split_session(body: list[str], offset: int) -> list[Command]:
    """`$ cmd` lines (continued by a trailing backslash) and the output lines under each."""
    commands: list[Command] = []
    i = 0
    while i < len(body):
        if not body[i].startswith("$ "):
            i += 1
            continue
        text = [body[i][2:]]
        while text[-1].endswith("\\") and i + 1 < len(body):
            i += 1
            text.append(body[i])
        shown_start = i + 1
        j = shown_start
        while j < len(body) and not body[j].startswith("$ "):
            j += 1
        shown = body[shown_start:j]
        while shown and not shown[-1].strip():
            shown.pop()
        command = "\n".join(text)
        background = command.rstrip().endswith("&")
        commands.append(Command(command, shown, offset + shown_start, background))
        i = j
    return commands


def normalize(line: str) -> str:
    for pattern, replacement in VOLATILE:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def lines_agree(shown: str, printed: str) -> bool:
    """Equal once timings are masked; other numbers may differ by two units of their last
    shown digit (float rounding across CPUs: a margin, the difference of two rounded scores,
    moves by two where each moved by one)."""
    shown, printed = normalize(shown), normalize(printed)
    if shown == printed:
        return True
    if NUMBER.sub("#", shown) != NUMBER.sub("#", printed):
        return False
    for a, b in zip(NUMBER.findall(shown), NUMBER.findall(printed), strict=True):
        decimals = len(a.partition(".")[2])
        # two units of the last digit shown, or 1e-5 relative for numbers printed in full
        if abs(float(a) - float(b)) > max(2.01 * 10.0**-decimals, 1e-5 * abs(float(a))):
            return False
    return True


def outputs_agree(shown: list[str], printed: list[str]) -> bool:
    """Shown lines against printed ones; a shown `...` line stands for any lines."""
    if not shown:
        return not printed
    if shown[0] == "...":
        return any(outputs_agree(shown[1:], printed[k:]) for k in range(len(printed) + 1))
    return (
        bool(printed)
        and lines_agree(shown[0], printed[0])
        and outputs_agree(shown[1:], printed[1:])
    )


class Workspace:
    """A work folder per document: the checkout's sample files, a temporary HOME, a
    `clipcls` on PATH that runs this checkout, and the background processes it started."""

    def __init__(self, root: Path) -> None:
        # A short HOME, so the cache paths commands print fit an 80-column table as a reader's do.
        short = "/tmp" if os.path.isdir("/tmp") else None
        self.home = Path(tempfile.mkdtemp(prefix="clipcls-docs-", dir=short))
        self.work = root / "work"
        self.work.mkdir(parents=True)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name in COPIED:
            shutil.copytree(REPO / name, self.work / name)
        for name, args in (("clipcls", ' -m clipcls "$@"'), ("python", ' "$@"')):
            shim = bin_dir / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}"{args}\n')
            shim.chmod(0o755)
        self.env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "CLIPCLS_CACHE_DIR": str(self.home / ".cache" / "clipcls"),
            "HF_HOME": str(self.home / ".cache" / "huggingface"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            "COLUMNS": "80",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        }
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []

    def tidy(self, text: str) -> list[str]:
        """Printed text as lines, with this workspace's own paths put back as a reader's."""
        text = text.replace(str(self.work) + "/", "").replace(str(self.home), "~")
        return [line.rstrip() for line in text.rstrip().splitlines()]

    def run(self, command: Command) -> tuple[list[str], int]:
        """What a command printed (stdout and stderr as a terminal interleaves them), and its
        exit status."""
        if command.background:
            return self.start(command), 0
        done = subprocess.run(
            ["bash", "-c", command.text],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return self.tidy(done.stdout.decode("utf-8", "replace")), done.returncode

    def start(self, command: Command) -> list[str]:
        """Start a background command; wait until it printed as many lines as shown."""
        log = self.work.parent / f"background-{len(self.background)}.log"
        process = subprocess.Popen(
            ["bash", "-c", command.text.rstrip().removesuffix("&")],
            cwd=self.work,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append((process, log))
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            printed = self.tidy(log.read_text("utf-8", "replace"))
            if len(printed) >= max(1, len(command.shown)):
                break
            time.sleep(0.2)
        return self.tidy(log.read_text("utf-8", "replace"))

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def stop(self) -> None:
        for process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.background.clear()

    def run_python(self, block: Block) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-"],
            input="\n".join(block.body) + "\n",
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )


def runnable(block: Block) -> bool:
    return block.not_run is None and (block.is_session or block.language == "python")


def run_document(
    document: str, root: Path, path: Path | None = None
) -> tuple[list[str], dict[int, list[str]]]:
    """Run a document's runnable blocks in order in one workspace: (drift reports, printed
    output per command's first output line)."""
    lines = (path or REPO / document).read_text(encoding="utf-8").splitlines()
    workspace = Workspace(root)
    drift: list[str] = []
    printed_at: dict[int, list[str]] = {}
    try:
        for block in filter(runnable, find_blocks(document, lines)):
            if block.language == "python" and not block.is_session:
                done = workspace.run_python(block)
                if done.returncode != 0:
                    drift.append(f"{block.where}: the python block failed:\n{done.stderr}")
                continue
            for command in block.commands:
                printed, status = workspace.run(command)
                printed_at[command.first_output_line] = printed
                if not outputs_agree(command.shown, printed):
                    drift.append(describe_drift(block, command, printed))
                elif status != 0:
                    drift.append(
                        f"{block.where}: `$ {command.text}` exited {status} (a failure "
                        'the document shows ends with `|| echo "exit code $?"`)'
                    )
            workspace.stop()
    finally:
        workspace.close()
    return drift, printed_at


def describe_drift(block: Block, command: Command, printed: list[str]) -> str:
    shown = "\n".join(command.shown)
    return (
        f"{block.where}: `$ {command.text}` printed something else than the document shows\n"
        f"--- shown\n{shown}\n--- printed\n" + "\n".join(printed)
    )


def update_document(document: str, root: Path) -> list[str]:
    """Rewrite a document's shown outputs with what its commands print now."""
    path = REPO / document
    lines = path.read_text(encoding="utf-8").splitlines()
    _, printed_at = run_document(document, root)
    blocks = [b for b in find_blocks(document, lines) if runnable(b)]
    commands = sorted(
        ((c, b.indent) for b in blocks for c in b.commands),
        key=lambda pair: pair[0].first_output_line,
        reverse=True,
    )
    for command, indent in commands:  # from the end, so earlier line numbers stay valid
        printed = printed_at[command.first_output_line]
        if command.shown and command.shown[-1] == "...":  # keep showing just the head
            printed = printed[: len(command.shown) - 1] + ["..."]
        start = command.first_output_line
        lines[start : start + len(command.shown)] = [indent + p if p else p for p in printed]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [c.text for c, _ in commands]


def main(argv: list[str]) -> int:
    """`--update [DOCUMENT...]`: rewrite the shown outputs (of every document by default)."""
    if argv[1:2] != ["--update"]:
        print("usage: python tests/test_docs_examples.py --update [DOCUMENT...]", file=sys.stderr)
        return 2
    for document in argv[2:] or DOCUMENTS:
        with tempfile.TemporaryDirectory() as root:
            commands = update_document(document, Path(root))
        print(f"{document}: the output of {len(commands)} commands written", file=sys.stderr)
    return 0
