"""Label text holding bytes that are not UTF-8 (a Latin-1 terminal's `café`, read by Python as
the escaped byte U+DCE9; a folder named so): embedded as CLIP's tokenizer reads it (U+FFFD) and
named as rows print a path's odd bytes (`caf\\xe9`), so local and --server runs answer alike."""

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import jsonl
from typer.testing import CliRunner

from clipcls.cli import app

runner = CliRunner()
ODD = "caf\udce9"  # what Python makes of the argument b"caf\xe9"
NAME = "caf\\xe9"  # how a row names it, as a path's odd byte is written
READ_AS = "caf\ufffd"  # how CLIP's tokenizer reads it (ftfy's fix_surrogates)
LABELS = f"{ODD},dog: a \udcffdog | hound"
TEMPLATE = "a photo of a {} \udce9"


def run(*args: str) -> Any:
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    return result


def test_a_label_not_utf8_is_read_as_the_tokenizer_reads_it() -> None:
    from clipcls.client.checks import check_prompts
    from clipcls.labels import Label, parse_labels
    from clipcls.prompts import single_templates
    from clipcls.scoring.spec import label_prompts

    cafe, dog = parse_labels(LABELS)
    assert (cafe.name, cafe.texts) == (NAME, (READ_AS,))
    assert (dog.name, dog.texts) == ("dog", ("a \ufffddog", "hound"))
    assert Label(cafe.name, cafe.texts) == cafe  # read once: what a server reads back is equal
    assert Label.plain(ODD) == cafe  # a folder's name, or the Python API's
    templates = single_templates([TEMPLATE])
    assert templates.templates == ("a photo of a {} \ufffd",)
    check_prompts(label_prompts((cafe, dog), templates))  # what a server's guard asks of it


def test_a_server_still_refuses_text_that_is_not_utf8() -> None:
    from clipcls.client.checks import RequestError
    from clipcls.client.protocol import Limits, parse_request

    image = {"path": "/x.png"}
    for body in (
        {"images": [image], "labels": [ODD, "dog"]},
        {"images": [image], "labels": [{"name": "a", "texts": [ODD]}, "dog"]},
        {"images": [image], "labels": ["a", "dog"], "templates": [TEMPLATE]},
    ):
        with pytest.raises(RequestError, match="lone surrogate"):
            parse_request(body, Limits(), ["/"])


def test_a_label_not_utf8_is_written_by_every_format_and_sorts_and_resumes(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    """It ended in a UnicodeEncodeError traceback once the first row was written."""
    base = ["--labels", LABELS, "--template", TEMPLATE, "--model", tiny_model]
    plain = ["--labels", f"{READ_AS},dog: a \ufffddog | hound", "--model", tiny_model]
    plain += ["--template", "a photo of a {} \ufffd"]
    want = jsonl(run("predict", str(photos), *plain, "-f", "jsonl").stdout)
    for row in want:
        for cell in row["predictions"]:
            cell["label"] = NAME if cell["label"] == READ_AS else cell["label"]
    assert jsonl(run("predict", str(photos), *base, "-f", "jsonl").stdout) == want
    assert f",{NAME}," in run("predict", str(photos), *base, "-f", "csv").stdout
    out, into = tmp_path / "out.jsonl", tmp_path / "sorted"
    label = ["label", str(photos), "--labels", f"{ODD},dog", "--model", tiny_model]
    label += ["-o", str(out), "--sort-into", str(into)]
    run(*label)
    rows = jsonl(out.read_text(encoding="utf-8"))
    folders = {NAME: "caf_xe9", "dog": "dog"}  # as any label's: the backslash made safe
    assert {Path(row["destination"]).parent.name for row in rows} == {"caf_xe9"}
    assert all(Path(row["destination"]).parent.name == folders[row["label"]] for row in rows)
    (photos / "more.png").write_bytes((photos / "coffee.png").read_bytes())
    run(*label, "--resume")
    assert len(jsonl(out.read_text(encoding="utf-8"))) == len(rows) + 1


def test_an_unknown_label_not_utf8_is_named_as_a_label_is(tiny_model: str, photos: Path) -> None:
    args = ["predict", str(photos), "--labels", f"{ODD},dog", "--model", tiny_model]
    args += ["--threshold", "0.999", "-f", "jsonl"]
    rows = jsonl(run(*args, "--unknown-label", "x\udcff").stdout)
    assert {row["label"] for row in rows} == {"x\\xff"}
    same = runner.invoke(app, [*args, "--unknown-label", ODD])
    assert same.exit_code == 2 and "is one of the labels" in same.stderr


def test_a_support_folder_not_utf8_is_its_labels(tiny_model: str, photos: Path) -> None:
    support = photos.parent / "support"
    for folder, photo in ((os.fsdecode(b"caf\xe9"), "coffee.png"), ("dog", "chelsea.png")):
        (support / folder).mkdir(parents=True)
        (support / folder / photo).write_bytes((photos / photo).read_bytes())
    args = ["predict", str(photos), "--labels", f"{ODD},dog", "--model", tiny_model]
    with_support = jsonl(run(*args, "--support", str(support), "-f", "jsonl").stdout)
    assert with_support != jsonl(run(*args, "-f", "jsonl").stdout)  # the examples were used
    assert {cell["label"] for row in with_support for cell in row["predictions"]} == {NAME, "dog"}


@pytest.mark.slow
def test_a_label_not_utf8_answers_through_a_server_as_it_does_here(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    """Through --server every run below answered 400 `a string holds a lone surrogate`."""
    from test_server_cache import start_server

    support, classes = tmp_path / "support", tmp_path / "classes"
    for folder, photo in ((os.fsdecode(b"caf\xe9"), "coffee.png"), ("dog", "chelsea.png")):
        for root in (support, classes):
            (root / folder).mkdir(parents=True)
            (root / folder / photo).write_bytes((photos / photo).read_bytes())
        (classes / folder / "more.png").write_bytes((photos / "rocket.jpg").read_bytes())
    predict = ["predict", str(photos), "--labels", LABELS, "--template", TEMPLATE, "-f", "jsonl"]
    runs = {
        "zero-shot": predict,
        "support": [*predict, "--support", str(support)],
        "multi-label": [*predict, "--multi-label"],
    }
    server = start_server(tiny_model, tmp_path / "server-cache")
    try:
        for what, args in runs.items():
            here = jsonl(run(*args, "--model", tiny_model).stdout)
            there = jsonl(run(*args, "--server", server.url).stdout)
            assert same_rows(there, here), what
        evaluate = ["evaluate", str(classes), "-f", "json", "-t", "photo"]
        here = run(*evaluate, "--model", tiny_model).stdout
        there = run(*evaluate, "--server", server.url).stdout
        assert f'"{NAME}"'.replace("\\", "\\\\") in here
        assert here.replace(tiny_model, "M") == there.replace(tiny_model, "M")
    finally:
        assert server.stop() == 0


def cells(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Every row's (label, probability) pairs, a single-label row's or a multi-label one's."""
    found = []
    for row in rows:
        pairs = [(c["label"], c["probability"]) for c in row.get("predictions", [])]
        found += pairs or list(row["probabilities"].items())
    return found


def same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """The same labels in the same order, probabilities to 1e-4 (embedded apart)."""
    pairs = list(zip(cells(got), cells(want), strict=True))
    return all(a[0] == b[0] and a[1] == pytest.approx(b[1], abs=1e-4) for a, b in pairs)
