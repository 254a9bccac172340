"""`clipcls search` and `clipcls similar` as a user runs them: rows, bad input, odd names, a
cached run without torch, and a run through a real `clipcls serve`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, clipcls_process, jsonl
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_search_writes_ranked_rows_best_first(tiny_model: str, photos: Path) -> None:
    done = run(
        "search",
        str(photos),
        "a cat + a rocket - coffee",
        "-k",
        "3",
        "--model",
        tiny_model,
        "-f",
        "jsonl",
        "-q",
    )
    assert done.exit_code == 0, done.output
    rows = jsonl(done.stdout)
    assert [row["rank"] for row in rows] == [1, 2, 3]
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    assert {Path(row["path"]).parent for row in rows} == {photos}


def test_similar_leaves_the_image_out_and_finds_its_resized_copy_first(
    tiny_model: str, photos: Path
) -> None:
    with Image.open(photos / "chelsea.png") as image:
        image.convert("RGB").resize((image.width // 2, image.height // 2)).save(
            photos / "z-small.jpg", quality=85
        )
    done = run(
        "similar",
        str(photos / "chelsea.png"),
        str(photos),
        "--model",
        tiny_model,
        "-f",
        "csv",
        "-q",
    )
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "rank,path,score" and len(lines) == 1 + 4
    assert lines[1].startswith(f"1,{photos / 'z-small.jpg'},")
    assert "chelsea.png" not in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "{photos}", "--image", "{bad}"], "cannot read query image"),
        (["search", "{empty}", "a cat"], "no images found"),
        (["search", "{photos}", "a cat", "-k", "0"], "greater than or equal to 1"),
        (["search", "{photos}"], "is a folder: give the query after it: search"),
        (["search", "a cat", "{photos}"], "the query comes last: search"),
        (["search", "a cat", "{photos}", "{photos}"], "input path does not exist: a cat"),
        (["search"], 'give the query: search "QUERY" (the current folder)'),
        (["search", "{photos}", " - a dog"], "only - terms"),
        (["similar", "{bad}", "{photos}"], "cannot read query image"),
        (["similar", "{photos}/coffee.png"], "give the folders to search"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tiny_model: str, photos: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    where = {
        "photos": str(photos),
        "empty": str(tmp_path / "empty"),
        "bad": str(tmp_path / "bad.png"),
    }
    out = tmp_path / "out.csv"
    done = run(*(a.format(**where) for a in args), "--model", tiny_model, "-o", str(out))
    assert done.exit_code == 2, done.output
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_search_without_a_folder_searches_the_current_one(
    tiny_model: str, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photos)
    here = run("search", "a cat", "--model", tiny_model, "-f", "jsonl", "-q")
    assert here.exit_code == 0, here.output
    dot = run("search", ".", "a cat", "--model", tiny_model, "-f", "jsonl", "-q")
    assert here.stdout == dot.stdout and len(jsonl(here.stdout)) == len(list(photos.iterdir()))


def test_a_swapped_query_gets_the_order_as_a_hint(tiny_model: str, photos: Path) -> None:
    swapped = run("search", "a [/b] cat", str(photos), "--model", tiny_model)
    assert swapped.exit_code == 2
    assert swapped.stderr.strip() == (
        f"error: input path does not exist: a [/b] cat; the query comes last: search "
        f"{photos} 'a [/b] cat'"
    )


def test_embeddings_of_another_model_are_refused(
    tiny_model: str, tiny_biased_model: str, photos: Path, tmp_path: Path
) -> None:
    saved = tmp_path / "run.jsonl"
    labeled = run(
        "label",
        str(photos),
        "--labels",
        "cat,dog",
        "--model",
        tiny_model,
        "-o",
        str(saved),
        "--save-embeddings",
        "-q",
    )
    assert labeled.exit_code == 0, labeled.output
    same = run(
        "search",
        "--from-embeddings",
        str(saved),
        "a cat",
        "--model",
        tiny_model,
        "-f",
        "jsonl",
        "-q",
    )
    assert same.exit_code == 0, same.output
    assert len(jsonl(same.stdout)) == 4
    other = run("search", "--from-embeddings", str(saved), "a cat", "--model", tiny_biased_model)
    assert other.exit_code == 2 and "holds embeddings of" in other.stderr


def test_odd_file_names_stay_literal_and_safe_in_every_format(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "odd"
    (folder / "[").mkdir(parents=True)  # "[/b]x.png" is x.png in the folder "["
    png = (SAMPLE_IMAGES / "coins.png").read_bytes()
    names = ["[/b]x.png", "a\r\nb.png", "=cmd().png"]
    for name in names:
        (folder / name).write_bytes(png)
    (folder / "caf\udce9.png").write_bytes(png)  # the byte 0xE9: not UTF-8
    monkeypatch.chdir(folder)
    common = ["search", ".", "coins", "--model", tiny_model, "-q"]
    rows = jsonl(run(*common, "-f", "jsonl").stdout)
    assert {row["path"] for row in rows} == {*names, "caf\\xe9.png"}
    assert run(*common, "-o", str(tmp_path / "hits.csv")).exit_code == 0
    with (tmp_path / "hits.csv").open(newline="", encoding="utf-8") as stream:
        cells = [row[1] for row in csv.reader(stream)][1:]
    assert set(cells) == {"[/b]x.png", "a\r\nb.png", "'=cmd().png", "caf\\xe9.png"}
    table = run(*common).stdout
    assert "[/b]x.png" in table and "a\\x0d\\x0ab.png" in table and "\r" not in table
    assert json.loads(run(*common, "-f", "json").stdout)[0]["rank"] == 1


def test_a_cached_search_runs_without_torch(tiny_model: str, photos: Path) -> None:
    args = ("search", str(photos), "a cat - a dog", "--image", str(photos / "coffee.png"))
    first, torch_first, _ = clipcls_process(*args, "--model", tiny_model, "-f", "jsonl")
    again, torch_again, stderr = clipcls_process(*args, "--model", tiny_model, "-f", "jsonl")
    assert torch_first and not torch_again, stderr
    assert "the model was not loaded" in stderr
    assert [r["path"] for r in jsonl(again)] == [r["path"] for r in jsonl(first)]
    similar, torch_similar, _ = clipcls_process(
        "similar", str(photos / "rocket.jpg"), str(photos), "--model", tiny_model
    )
    assert not torch_similar and "rocket.jpg" not in similar


@pytest.mark.slow
def test_search_through_a_server_matches_a_local_search(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    from test_server_cache import start_server

    server = start_server(tiny_model, tmp_path / "server-cache", "--precision", "fp32")
    try:
        args = ["search", str(photos), "a cat + a rocket", "-f", "jsonl", "-q"]
        remote = run(*args, "--server", server.url)
        assert remote.exit_code == 0, remote.output
        again = run(*args, "--server", server.url)  # from this side's cache and stored matrix
        assert again.stdout == remote.stdout
    finally:
        server.stop()
    local = run(*args, "--model", tiny_model, "--precision", "fp32")
    want = {row["path"]: row["score"] for row in jsonl(local.stdout)}
    got = {row["path"]: row["score"] for row in jsonl(remote.stdout)}
    assert got.keys() == want.keys()
    assert all(abs(got[path] - want[path]) < 1e-3 for path in want)
