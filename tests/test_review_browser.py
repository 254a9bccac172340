"""The review page in headless Chromium (Playwright): keys decide, the review file and the export
carry the decisions, file names render as text."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from review_helpers import XSS, Running, label_output, running
from typer.testing import CliRunner

from clipcls.cli import app

CHROMIUM = os.environ.get("CLIPCLS_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need playwright: pip install 'clipcls[test]'"
)
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
)


def launch(playwright: Any) -> Any:
    """Headless Chromium; without its sandbox as root, where Chromium refuses to start."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args)


@pytest.fixture
def output(tmp_path: Path, tiny_model: str) -> Path:
    return label_output(tmp_path / "run", tiny_model)


@contextlib.contextmanager
def opened(
    output: Path, thumbs: Path, watch: Callable[[Any], object]
) -> Iterator[tuple[Any, Running]]:
    """The review page of output open in Chromium, its first rows shown; watch(tab) hooks the
    tab's events before the page loads."""
    with running(output, thumbs) as served, sync_api.sync_playwright() as play:
        browser = launch(play)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            watch(tab)
            tab.goto(served.server.url)
            tab.wait_for_selector("body[data-ready='1']", timeout=15000)
            yield tab, served
        finally:
            browser.close()


@pytest.fixture
def page(output: Path, tmp_path: Path) -> Iterator[tuple[Any, Running, list[str]]]:
    """The review page open in Chromium, and the dialogs it tried to show."""
    dialogs: list[str] = []

    def watch(tab: Any) -> object:
        return tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    with opened(output, tmp_path / "thumbs", watch) as (tab, served):
        yield tab, served, dialogs


def tile_indices(tab: Any) -> list[int]:
    return [int(i) for i in tab.eval_on_selector_all(".tile", "t => t.map(n => n.dataset.index)")]


def wait_until(tab: Any, expression: str, arg: Any = None, seconds: float = 15) -> None:
    """Poll expression until true: wait_for_function polls with an eval the page's CSP
    forbids, which fails whenever its first look comes too early (a loaded machine)."""
    for _ in range(int(seconds / 0.05)):
        if tab.evaluate(expression, arg):
            return
        tab.wait_for_timeout(50)
    raise AssertionError(f"never true: {expression}")


def expect_reviewed(tab: Any, count: int) -> None:
    sync_api.expect(tab.locator("#progress-text")).to_contain_text(f"{count} reviewed")


def test_keys_decide_and_the_export_carries_them(page: Any, output: Path) -> None:
    tab, served, _ = page
    labels = served.server.api.table.labels
    order = tile_indices(tab)
    assert order == served.server.api.order  # lowest margin first
    sync_api.expect(tab.locator(".tile").first).to_have_class("tile selected")
    tab.keyboard.press("ArrowRight")
    tab.keyboard.press("2")  # the second label, then the selection moves on
    expect_reviewed(tab, 1)
    tab.keyboard.press("x")
    expect_reviewed(tab, 2)
    tab.keyboard.press("Enter")
    expect_reviewed(tab, 3)
    tab.keyboard.press("u")  # takes back the Enter
    expect_reviewed(tab, 2)
    selected = tab.locator(".tile.selected")
    assert int(selected.get_attribute("data-index")) == order[3]
    sync_api.expect(tab.locator(f".tile[data-index='{order[1]}'] .decision")).to_contain_text(
        labels[1]
    )
    live = served.log.current()
    assert {i: (d.label, d.action) for i, d in live.items()} == {
        order[1]: (labels[1], "set"),
        order[2]: (served.server.api.table.unknown_label, "unknown"),
    }
    records = [json.loads(line) for line in output.with_name("out.csv.review.jsonl").open()]
    assert [r.get("action", "undo") for r in records if "index" in r or "undo" in r] == [
        "set",
        "unknown",
        "accept",
        "undo",
    ]
    tab.locator(".tile").first.locator(".chip").nth(1).click()  # the mouse: a label chip
    expect_reviewed(tab, 3)
    served.log.close()  # what the server's Ctrl-C does: the export may open the log now
    corrected = output.with_name("corrected.csv")
    done = CliRunner().invoke(app, ["review", str(output), "--export", str(corrected)])
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(corrected.open()))
    assert "reviewed" in rows[0]
    assert rows[order[1]]["label"] == labels[1]
    assert rows[order[2]]["label"] == served.server.api.table.unknown_label
    assert sum(row["reviewed"] not in ("", "false", "False", "0") for row in rows) == 3


def test_names_render_as_text_and_big_images_open(page: Any) -> None:
    tab, served, dialogs = page
    name = tab.locator(".tile .name", has_text="onerror")
    sync_api.expect(name).to_have_count(1)
    assert name.inner_text().endswith(XSS)
    assert tab.locator("img[src='x']").count() == 0
    tab.wait_for_timeout(300)  # time for an injected onerror to fire, were there one
    assert dialogs == []
    gone = tab.locator(".tile", has_text="gone.jpg")
    sync_api.expect(gone.locator(".problem")).to_have_text("missing")
    tab.keyboard.press("f")
    viewer = tab.locator("#viewer")
    sync_api.expect(viewer).to_be_visible()
    wait_until(tab, "() => document.getElementById('viewer-image').naturalWidth > 0")
    tab.keyboard.press("Escape")
    sync_api.expect(viewer).to_be_hidden()
    tab.locator(".tile img").first.click()  # a click on the picture opens it too
    sync_api.expect(viewer).to_be_visible()


def test_filters_and_a_narrow_window(page: Any) -> None:
    tab, served, _ = page
    label = served.server.api.table.rows[tile_indices(tab)[0]].label
    tab.select_option("#filter-label", label)
    wait_until(
        tab,
        "l => [...document.querySelectorAll('.tile')].length > 0 && "
        "[...document.querySelectorAll('.tile .decision')].every(d => d.textContent.includes(l))",
        arg=label,
    )
    tab.fill("#filter-min", "0.99")
    tab.dispatch_event("#filter-min", "change")
    sync_api.expect(tab.locator(".tile")).to_have_count(0)
    sync_api.expect(tab.locator("#count")).to_have_text("0 rows")
    tab.set_viewport_size({"width": 420, "height": 800})
    width = tab.evaluate("document.documentElement.scrollWidth")
    assert width <= 420  # nothing sticks out sideways


def test_two_pages_on_one_review_each_undo_their_own_decision(output: Path, tmp_path: Path) -> None:
    with running(output, tmp_path / "thumbs") as served, sync_api.sync_playwright() as play:
        browser = launch(play)
        try:
            one, two = (browser.new_page(viewport={"width": 1200, "height": 900}) for _ in "12")
            for tab in (one, two):
                tab.goto(served.server.url)
                tab.wait_for_selector("body[data-ready='1']", timeout=15000)
            order = tile_indices(one)
            one.keyboard.press("1")  # the first page decides the first row
            expect_reviewed(one, 1)
            two.keyboard.press("ArrowRight")
            two.keyboard.press("2")  # the second page, the second row
            expect_reviewed(two, 2)
            one.keyboard.press("u")  # the first takes back its own decision
            for _ in range(300):  # its progress line said 1 before: wait for the undo itself
                if len(served.log.current()) == 1:
                    break
                one.wait_for_timeout(50)
            # Was {order[0]}: undo took back the latest decision, the other reviewer's.
            assert set(served.log.current()) == {order[1]}
        finally:
            browser.close()
