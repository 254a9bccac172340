"""The review page's finishing in headless Chromium: a run of 12 labels where the picker gives
the 11th, a label added on the page then exported and applied, the status filters, marked tiles
decided by one key, and the finish buttons behind their confirmation dialog."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from review_helpers import Running, label_output
from test_review_browser import expect_reviewed, opened, pytestmark, sync_api, wait_until

__all__ = ["pytestmark"]  # the browser tests' skip: no Chromium here

TWELVE = "cat,coffee,rocket,person,flower,coins,car,dog,tree,house,boat,bird"


@pytest.fixture
def output(tmp_path: Path, tiny_model: str) -> Path:
    return label_output(tmp_path / "run", tiny_model, TWELVE)


@pytest.fixture
def page(output: Path, tmp_path: Path) -> Iterator[tuple[Any, Running, list[str]]]:
    """The page open in Chromium, and the console's errors (a 403 would be one)."""
    errors: list[str] = []

    def watch(tab: Any) -> object:
        return tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    with opened(output, tmp_path / "thumbs", watch) as (tab, served):
        yield tab, served, errors


def selected(tab: Any) -> int:
    return int(tab.locator(".tile.selected").get_attribute("data-index"))


def live(served: Running) -> dict[int, str]:
    return {index: d.label for index, d in served.log.current().items()}


def test_the_picker_gives_the_eleventh_label_and_a_new_one(page: Any, output: Path) -> None:
    tab, served, errors = page
    labels = served.server.api.table.labels
    assert len(labels) == 12 and labels[10] == "boat"
    sync_api.expect(tab.locator("#legend")).to_contain_text("any of the 12 labels")
    first = selected(tab)
    tab.keyboard.press("/")
    sync_api.expect(tab.locator("#picker")).to_be_visible()
    tab.keyboard.type("oa")  # inside "boat" only
    sync_api.expect(tab.locator("#picker-list li").first).to_have_text("boat")
    tab.keyboard.press("Enter")
    expect_reviewed(tab, 1)
    sync_api.expect(tab.locator("#picker")).to_be_hidden()
    assert live(served) == {first: "boat"}
    second = selected(tab)  # the selection moved on, as after a key
    tab.keyboard.press("l")
    tab.keyboard.type("a/b")  # not a folder name: refused on the page, nothing recorded
    sync_api.expect(tab.locator("#picker-list li").last).to_have_text("+ new label: a/b")
    tab.keyboard.press("ArrowDown")
    tab.keyboard.press("Enter")
    sync_api.expect(tab.locator("#picker-note")).to_contain_text("not added")
    tab.keyboard.press("Escape")
    sync_api.expect(tab.locator("#picker")).to_be_hidden()
    tab.keyboard.press("/")
    tab.keyboard.type("zebra")
    sync_api.expect(tab.locator("#picker-list li")).to_have_text(["+ new label: zebra"])
    tab.keyboard.press("Enter")
    expect_reviewed(tab, 2)
    assert live(served) == {first: "boat", second: "zebra"}
    sync_api.expect(tab.locator("#legend")).to_contain_text("any of the 13 labels")
    lines = [json.loads(line) for line in output.with_name("out.csv.review.jsonl").open()]
    assert [line["add"] for line in lines if "add" in line] == ["zebra"]
    assert [e for e in errors if "403" in e] == []  # the browser's own /favicon.ico among them


def test_marked_tiles_are_decided_by_one_key_and_undone_together(page: Any) -> None:
    tab, served, _ = page
    order = [int(i) for i in tab.eval_on_selector_all(".tile", "t => t.map(n => n.dataset.index)")]
    tab.keyboard.press(" ")  # mark the first
    tab.keyboard.press("ArrowRight")
    tab.keyboard.press(" ")  # and the second
    tab.locator(f".tile[data-index='{order[3]}'] .name").click(modifiers=["Control"])
    sync_api.expect(tab.locator(".tile.marked")).to_have_count(3)
    tab.keyboard.press("3")
    expect_reviewed(tab, 3)
    assert live(served) == dict.fromkeys((order[0], order[1], order[3]), "rocket")
    sync_api.expect(tab.locator(".tile.marked")).to_have_count(0)
    tab.keyboard.press("u")  # one group: all three taken back
    expect_reviewed(tab, 0)
    assert live(served) == {}
    tab.locator(f".tile[data-index='{order[0]}'] .name").click()
    tab.locator(f".tile[data-index='{order[2]}'] .name").click(modifiers=["Shift"])
    sync_api.expect(tab.locator(".tile.marked")).to_have_count(3)
    tab.keyboard.press("Escape")  # unmarks
    sync_api.expect(tab.locator(".tile.marked")).to_have_count(0)


def test_status_filters_and_the_order_explained(page: Any) -> None:
    tab, served, _ = page
    sync_api.expect(tab.locator("#order")).to_contain_text("margin between the model's top two")
    first = selected(tab)
    row = served.server.api.table.rows[first]
    other = next(i for i, label in enumerate(served.server.api.table.labels) if label != row.label)
    tab.keyboard.press(str(other + 1))  # changed
    tab.keyboard.press("Enter")  # at once: the next tile, accepted (keys wait their turn)
    expect_reviewed(tab, 2)
    tab.select_option("#filter-status", "changed")
    wait_until(tab, "() => document.querySelectorAll('.tile').length === 1")
    assert selected(tab) == first
    tab.select_option("#filter-status", "unreviewed")
    readable = sum(row.error is None for row in served.server.api.table.rows)
    wait_until(tab, "n => document.querySelectorAll('.tile').length === n", readable - 2)


def test_finish_actions_confirm_then_say_what_they_wrote(page: Any, output: Path) -> None:
    tab, served, _ = page
    run = output.parent.resolve()
    first = selected(tab)
    tab.keyboard.press("/")
    tab.keyboard.type("zebra")
    tab.keyboard.press("Enter")
    expect_reviewed(tab, 1)
    dialog, result = tab.locator("#confirm"), tab.locator("#finish-result")
    tab.click("#finish-export")
    sync_api.expect(dialog).to_be_visible()
    sync_api.expect(tab.locator("#confirm-path")).to_have_text(str(run / "out.corrected.csv"))
    tab.click("#confirm-cancel")  # cancelled: nothing written
    sync_api.expect(dialog).to_be_hidden()
    assert not (run / "out.corrected.csv").exists()
    tab.click("#finish-export")
    tab.click("#confirm-ok")
    sync_api.expect(result).to_have_text(f"wrote 10 rows to {run / 'out.corrected.csv'}")
    rows = list(csv.DictReader((run / "out.corrected.csv").open()))
    assert rows[first]["label"] == "zebra" and rows[first]["reviewed"] == "true"
    tab.click("#finish-support")
    sync_api.expect(tab.locator("#confirm-path")).to_have_text(str(run / "out.support"))
    tab.click("#confirm-ok")
    sync_api.expect(result).to_have_text(f"linked 1 reviewed image into {run / 'out.support'}")
    assert len(list((run / "out.support" / "zebra").iterdir())) == 1
    tab.click("#finish-apply")
    sync_api.expect(tab.locator("#confirm-path")).to_have_text(str(run / "sorted"))
    tab.keyboard.press("Escape")  # a dialog's Escape cancels too
    sync_api.expect(dialog).to_be_hidden()
    assert not (run / "sorted" / "zebra").exists()
    tab.click("#finish-apply")
    tab.click("#confirm-ok")
    sync_api.expect(result).to_contain_text(f"moved 1 file in {run / 'sorted'}")
    name = os.path.basename(served.server.api.table.rows[first].path)
    assert os.path.lexists(run / "sorted" / "zebra" / name)
    # the tiles are loaded again: the moved file's tile says where it is now
    sync_api.expect(tab.locator(f".tile[data-index='{first}'] .destination")).to_contain_text(
        "zebra"
    )
