"""The README's promises about itself: a quick start of two commands per machine, the install
choice (CPU-only or GPU) before the command, the same test command as CI, and 12 KB at most."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text("utf-8")
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def commands(section: str) -> list[str]:
    """The one-line commands of the section's fenced blocks that are not `$ ` sessions."""
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    return [block.strip() for block in blocks if not block.startswith("$ ")]


def test_readme_stays_within_12_kb() -> None:
    assert len(README.encode()) <= 12 * 1024


def test_quick_start_is_one_install_and_run_line_per_machine_and_one_test_line() -> None:
    cpu, gpu, tests = commands(quick_start())
    assert CPU_INDEX in cpu and CPU_INDEX not in gpu
    assert cpu.replace(f" {CPU_INDEX}", "") == gpu  # the same command but for the wheels
    assert "pip install . " in gpu and "clipcls predict sample_images" in gpu
    assert tests.endswith("pytest -q") and "'.[test]'" in tests


def test_the_choice_is_made_before_the_first_command() -> None:
    before = quick_start().split("```", 1)[0]
    assert "No NVIDIA GPU" in before and "CPU-only" in before and "NVIDIA GPU" in before


def test_ci_runs_the_readme_test_command() -> None:
    tests = commands(quick_start())[-1]
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
