"""Issue 20's adversary round: new hostile variants against the hardened edges (server form
fields, resuming a CSV a spreadsheet re-saved). Each test is one attack that broke; servers
run on 127.0.0.1 only and get a bounded number of requests."""

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from test_serve import Server
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import ImageError
from clipcls.server.roots import OpenRoots, resolve_roots

runner = CliRunner()
IMAGE = (SAMPLE_IMAGES / "chelsea.png").read_bytes()
BOUNDARY = "attackB0undary"


@pytest.fixture(scope="module")
def server(tiny_model: str) -> Iterator[Server]:
    pytest.importorskip("litserve")
    running = Server(tiny_model, "--timeout", "8")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def form(fields: dict[str, str]) -> bytes:
    """A multipart body with one image and the given text fields, as curl -F sends it."""
    body = b""
    for key, value in fields.items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        body += head.encode() + value.encode() + b"\r\n"
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="c.png"\r\n'
    body += head.encode() + b"Content-Type: image/png\r\n\r\n" + IMAGE + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("top_k", ["\u00b2", "9" * 5000, "\u0661"])
def test_a_form_top_k_that_is_no_ascii_number_is_a_400_not_a_500(
    server: Server, top_k: str
) -> None:
    # str.isdigit() is true for "²" (int() then raises) and for "١" (int() takes it), and
    # int() refuses 5000 digits: each was a 500 Internal Server Error, or an Arabic digit read.
    status, answer = server.call(
        "POST",
        "/v1/predict",
        form({"labels": "cat,dog", "top_k": top_k}),
        kind=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert status == 400, answer
    assert "top_k" in answer["error"]


def test_resume_reads_a_csv_a_spreadsheet_saved_with_a_byte_order_mark(
    tiny_model: str, tmp_path: Path
) -> None:
    # Excel's "CSV UTF-8" and LibreOffice's default re-save add a BOM (and quote and CRLF);
    # resume refused it saying the columns differ while printing the same names.
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(SAMPLE_IMAGES / "chelsea.png", photos / name)
    args = ["label", str(photos), "--model", tiny_model, "--labels", "=cmd,dog"]
    output = tmp_path / "out.csv"
    assert runner.invoke(app, [*args, "-o", str(output)]).exit_code == 0
    with output.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    with output.open("w", newline="", encoding="utf-8-sig") as stream:
        csv.writer(stream, quoting=csv.QUOTE_ALL).writerows(rows[:-1])  # one row lost
    resumed = runner.invoke(app, [*args, "-o", str(output), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    with output.open(newline="", encoding="utf-8-sig") as stream:
        again = list(csv.reader(stream))
    assert again[0] == rows[0]
    assert sorted(again[1:]) == sorted(rows[1:])  # the lost row back, nothing doubled


@pytest.mark.parametrize("tail", ["/", "/.", "/../c.png", "//./"])
def test_a_file_named_as_a_folder_is_not_opened_as_the_file(tmp_path: Path, tail: str) -> None:
    # The kernel answers ENOTDIR for c.png/ and c.png/../c.png (`predict c.png/` says the
    # input does not exist); the server's realpath dropped the tail and served c.png.
    shutil.copy(SAMPLE_IMAGES / "chelsea.png", tmp_path / "c.png")
    roots = OpenRoots(resolve_roots([str(tmp_path)]))
    with roots.open(str(tmp_path / "c.png")) as stream:
        assert stream.read(8) == IMAGE[:8]
    with pytest.raises(ImageError, match="file not found"):
        roots.open(str(tmp_path / "c.png") + tail)


def test_a_pretrained_the_server_lacks_is_refused_without_printing_none(
    server: Server, tmp_path: Path
) -> None:
    # The refusal named the server's weights as "local-dir:... with None".
    image = tmp_path / "c.png"
    image.write_bytes(IMAGE)
    args = ["predict", str(image), "--server", server.url, "--labels", "cat,dog"]
    refused = runner.invoke(app, [*args, "--pretrained", "openai"])
    assert refused.exit_code == 2, refused.output
    assert "--pretrained openai" in refused.output
    assert "None" not in refused.output
