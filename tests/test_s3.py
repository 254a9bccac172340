"""s3:// inputs through fsspec/s3fs, against moto's S3 server on 127.0.0.1 started inside the
test: prefixes are listed like folders, predictions equal the local files', a missing object
is an error row, and the cache keys objects by their ETag."""

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from conftest import SAMPLE_IMAGES, jsonl, scores
from typer.testing import CliRunner

from clipcls.cli import app

pytestmark = pytest.mark.slow  # starts a local S3 server: run by .ci/run with -m slow

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
runner = CliRunner()
NAMES = ["chelsea.png", "coffee.png", "rocket.jpg"]


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3 with s3://photos/: three images under in/, one under in/sub/, a hidden one, a
    text file."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    name = f"photos-{uuid.uuid4().hex[:8]}"  # moto's state is shared by the servers of a process
    fs.mkdir(name)
    for image in NAMES[:2]:
        fs.pipe(f"{name}/in/{image}", (SAMPLE_IMAGES / image).read_bytes())
    fs.pipe(f"{name}/in/sub/{NAMES[2]}", (SAMPLE_IMAGES / NAMES[2]).read_bytes())
    fs.pipe(f"{name}/in/.hidden.png", (SAMPLE_IMAGES / NAMES[0]).read_bytes())
    fs.pipe(f"{name}/in/notes.txt", b"not an image")
    try:
        yield f"s3://{name}/in/"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)


def predict(model: str, *inputs: str):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app,
        ["predict", *inputs, "--model", model, "-t", "photo", "--labels", "cat,dog,rocket"]
        + ["-f", "jsonl", "-q"],
    )


def test_an_s3_prefix_is_listed_like_a_folder(tiny_model: str, bucket: str) -> None:
    result = predict(tiny_model, bucket)
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["path"] for r in rows] == [
        f"{bucket}chelsea.png",
        f"{bucket}coffee.png",
        f"{bucket}sub/rocket.jpg",
    ]
    local = jsonl(predict(tiny_model, *(str(SAMPLE_IMAGES / n) for n in NAMES)).stdout)
    assert scores(rows) == scores(local)
    again = predict(tiny_model, bucket)  # from the cache, keyed by ETag
    assert again.stdout == result.stdout


def test_a_missing_object_is_an_error_row(tiny_model: str, bucket: str) -> None:
    result = predict(tiny_model, f"{bucket}chelsea.png", f"{bucket}gone.png")
    rows = jsonl(result.stdout)
    assert "predictions" in rows[0] and "no such object" in rows[1]["error"]
