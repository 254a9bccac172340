"""Issue 20's adversary round: new hostile variants against the hardened edges (server form
fields, resuming a CSV a spreadsheet re-saved). Each test is one attack that broke; servers
run on 127.0.0.1 only and get a bounded number of requests."""

from collections.abc import Iterator

import pytest
from conftest import SAMPLE_IMAGES
from test_serve import Server

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
