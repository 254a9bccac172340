"""The HTML evaluation report as a reader opens it: the RANDOM-weights warning the terminal
shows is on the page too, and at a phone's 420 px width no table pushes the page sideways
(headless Chromium, as the review page's browser tests use it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.random_model import write_random_model

pytest.importorskip("matplotlib")
runner = CliRunner()
CHROMIUM = os.environ.get("CLIPCLS_CHROMIUM", "/usr/bin/chromium")
# A long class name, as folder names are: a table must wrap it, not widen the page.
CLASSES = {"cat": "chelsea.png", "a-rather-long-class-name-from-a-folder": "coffee.png"}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    for folder, name in CLASSES.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        shutil.copy(SAMPLE_IMAGES / name, tmp_path / "data" / folder / name)
        shutil.copy(SAMPLE_IMAGES / "rocket.jpg", tmp_path / "data" / folder / f"r-{name}")
    return tmp_path / "data"


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    for name in ("chelsea.png", "astronaut.png", "coffee.png"):
        shutil.copy(SAMPLE_IMAGES / name, tmp_path / name)
    source = tmp_path / "truth.csv"
    source.write_text("path,labels\nchelsea.png,animal\nastronaut.png,person;flag\ncoffee.png,\n")
    return source


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("random")
    write_random_model(folder, "ViT-B-32", seed=0, tiny=True)  # with the RANDOM mark
    return f"local-dir:{folder}"


def report(model: str, page: Path, *args: str) -> str:
    done = runner.invoke(app, ["evaluate", *args, "--model", model, "--report", str(page), "-q"])
    assert done.exit_code == 0, done.output
    return page.read_text(encoding="utf-8")


def test_the_page_warns_of_random_weights_as_the_terminal_does(
    random_model: str, tiny_model: str, dataset: Path, truth: Path, tmp_path: Path
) -> None:
    for args in ([str(dataset)], ["--multi-label", str(truth)]):
        page = report(random_model, tmp_path / "random.html", *args, "--overwrite")
        warned = page.split("<h1>", 1)[1].split("</h1>", 1)[1].lstrip()
        assert warned.startswith('<p class="warning">warning: local-dir:')
        assert "has RANDOM weights" in warned.split("</p>", 1)[0]
        mine = report(tiny_model, tmp_path / "mine.html", *args, "--overwrite")
        assert "RANDOM" not in mine and 'class="warning"' not in mine  # a user's own weights


def wider_than_the_window(play: Any, page: Path) -> tuple[int, list[str]]:
    """The page's scroll width at 420 px, and the elements reaching past the window."""
    browser = play.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else []
    )
    try:
        tab = browser.new_page(viewport={"width": 420, "height": 900})
        tab.goto(page.as_uri())
        width = tab.evaluate("document.documentElement.scrollWidth")
        past = tab.evaluate(
            """Array.from(document.querySelectorAll('body *'))
               .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
               .map(e => e.tagName + ' ' + e.textContent.slice(0, 40))"""
        )
        return int(width), list(past)
    finally:
        browser.close()


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"needs Chromium at {CHROMIUM}")
def test_report_tables_fit_a_420_px_window(
    random_model: str, dataset: Path, truth: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    several = report(
        random_model, tmp_path / "folders.html", str(dataset), *("-t", "photo", "-t", "simple")
    )
    assert several.count("<tr") > 6  # the setups compared, per class, the run's facts
    report(random_model, tmp_path / "labels.html", "--multi-label", str(truth))
    with sync_api.sync_playwright() as play:
        for name in ("folders.html", "labels.html"):
            width, past = wider_than_the_window(play, tmp_path / name)
            assert width <= 420 and past == [], (name, width, past)
