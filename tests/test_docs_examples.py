"""Every example in README.md and docs/*.md runs, and prints what the document shows.

Run `python tests/test_docs_examples.py --update` to rewrite the shown outputs after a change
of behaviour (the test itself never writes a document); docs_examples.py is the runner.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from docs_examples import (
    DOCUMENTS,
    REPO,
    find_blocks,
    main,
    outputs_agree,
    run_document,
    runnable,
)


def all_blocks() -> list:
    return [
        block
        for document in DOCUMENTS
        for block in find_blocks(document, (REPO / document).read_text("utf-8").splitlines())
    ]


def test_every_block_runs_or_says_why_not() -> None:
    blocks = all_blocks()
    unmarked = [b.where for b in blocks if b.not_run is None and not runnable(b)]
    assert not unmarked, f"blocks neither runnable nor marked <!-- not-run: reason -->: {unmarked}"
    skipped = [f"{b.where} ({b.not_run})" for b in blocks if b.not_run is not None]
    ran = [b for b in blocks if runnable(b)]
    print(f"\n{len(ran)} blocks run; {len(skipped)} not run:\n  " + "\n  ".join(skipped))
    assert len(ran) >= 10  # the README's and the pages' examples, not a parser gone blind


@pytest.mark.slow  # every README and docs example as a real process (minutes): .ci/run
@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_examples(document: str, tmp_path: Path) -> None:
    drift, _ = run_document(document, tmp_path)
    assert not drift, "\n\n".join(drift)


def test_drift_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\n$ echo hello; echo took 1.25 s\nhello\ntook 9.5 s\n$ echo 0.5123\n0.513\n```\n\n"
        "```\n$ echo one; echo two\none\n...\n```\n\n"
        "```\n$ printf 'a\\nb\\n'; exit 2\na\nc\n```\n"
    )
    drift, printed = run_document("page.md", tmp_path / "run", page)
    assert len(drift) == 1 and "printf" in drift[0] and "c" in drift[0]
    assert printed[5] == ["0.5123"] and printed[10] == ["one", "two"]
    assert printed[16] == ["a", "b"]  # the line under `$ printf`


def test_a_failing_command_must_say_so(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\n$ echo no; exit 2\nno\n"
        '$ (echo no; exit 2) || echo "exit code $?"\nno\nexit code 2\n```\n'
    )
    drift, _ = run_document("page.md", tmp_path / "run", page)
    assert len(drift) == 1 and "exited 2" in drift[0] and "exit 2`" in drift[0]


def test_comparison_rules() -> None:
    assert outputs_agree(
        ["12 images in 0.7 s (18.4 images/s)"], ["12 images in 3.1 s (4 images/s)"]
    )
    assert outputs_agree(["51.6%"], ["51.7%"])  # the last digit of a rounded float
    assert not outputs_agree(["51.6%"], ["52.6%"])
    assert outputs_agree(["margin 0.061011"], ["margin 0.061013"])  # two rounded scores apart
    assert not outputs_agree(["margin 0.061011"], ["margin 0.061014"])
    assert not outputs_agree(["cat 51.6%"], ["dog 51.6%"])
    assert outputs_agree(["a", "...", "z"], ["a", "b", "c", "z"])
    assert not outputs_agree(["a"], ["a", "extra"])


def test_background_server_is_waited_for_and_stopped(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\n$ (sleep 1; echo $BASHPID > pid; echo ready; exec sleep 300) &\nready\n"
        "$ cat pid | wc -l\n1\n```\n"
    )
    drift, _ = run_document("page.md", tmp_path / "run", page)
    assert not drift, drift
    pid = (tmp_path / "run" / "work" / "pid").read_text().strip()
    assert not running(pid)  # stopped at the end of its block


def test_python_and_clipcls_on_the_path_are_this_checkout(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```\n$ python -c 'import clipcls; print(clipcls.__file__)'\n"
        "$ clipcls templates | grep -c openai\n```\n"
    )
    _, printed = run_document("page.md", tmp_path / "run", page)
    assert printed[2] == [str(REPO / "clipcls" / "__init__.py")]
    assert printed[3] == ["1"]


def running(pid: str) -> bool:
    """Whether a process still lives after 30 s (a hang guard; a zombie waiting for its parent
    to reap it does not count)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv))
