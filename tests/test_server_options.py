"""--server honours or refuses every model option: --max-megapixels is checked before a file is
sent (the same error row as a local run), --device, --precision, --exact-decode and
--pretrained that the server does not run are refused; /v1/info names the weights by the digest
of their bytes, and `label --resume` refuses a server whose weights are not the output's."""

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import class_folders, jsonl, write_tiny_model
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.sources import model_identity
from clipcls.settings import ModelSettings

pytest.importorskip("litserve")
from test_serve import Server  # noqa: E402  (after the skip: it needs litserve)

pytestmark = pytest.mark.slow  # starts clipcls servers: run by .ci/run with -m slow

runner = CliRunner()
LABELS = "cat,coffee,rocket"
WEIGHTS = "open_clip_model.safetensors"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("served") / "model", seed=3)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    running = Server(f"local-dir:{model_dir}", "--precision", "fp32", "--device", "cpu")
    try:
        yield running
    finally:
        running.stop()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_info_names_the_weights_by_their_whole_bytes(server: Server, model_dir: Path) -> None:
    status, facts = server.call("GET", "/v1/info")
    assert status == 200
    assert facts["weights"] == model_identity(ModelSettings(model=f"local-dir:{model_dir}")).key
    assert facts["weights"].startswith("local-dir:sha256:")
    assert facts["exact_decode"] is False and facts["precision"] == "fp32"


def test_max_megapixels_is_the_same_error_row_as_here(
    server: Server, model_dir: Path, photos: Path
) -> None:
    common = ("--labels", LABELS, "-f", "jsonl", "--max-megapixels", "0.01")
    code, remote, _ = invoke("predict", str(photos), *common, "--server", server.url)
    assert code == 0
    code, local, _ = invoke("predict", str(photos), *common, "--model", f"local-dir:{model_dir}")
    errors = [row.get("error") for row in jsonl(remote)]
    assert all(e and "over --max-megapixels 0.01" in e for e in errors), errors
    assert errors == [row.get("error") for row in jsonl(local)]
    # label and evaluate send files the same way
    out = photos.parent / "out.jsonl"
    label = ("label", str(photos), "-o", str(out), "--labels", LABELS, "--max-megapixels", "0.01")
    assert invoke(*label, "--server", server.url, "-q")[0] == 0
    assert all("over --max-megapixels" in json.loads(line)["error"] for line in out.open())


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (("--precision", "bf16"), "--precision bf16: the server at"),
        (("--device", "cuda"), "--device cuda: the server at"),
        (("--exact-decode",), "--exact-decode: the server at"),
        (("--pretrained", "openai"), "--pretrained openai: the server at"),
    ],
)
def test_options_the_server_does_not_run_are_refused(
    server: Server, photos: Path, option: tuple[str, ...], said: str
) -> None:
    image = str(photos / "chelsea.png")
    data = class_folders(photos.parent / "data", per_class=1)
    for command in (
        ("predict", image, "--labels", LABELS),
        ("label", image, "--labels", LABELS, "-o", str(photos.parent / "x.csv")),
        ("evaluate", str(data)),
    ):
        code, out, err = invoke(*command, "--server", server.url, *option)
        assert code == 2 and said in err and out == "", (command, err)
    assert not (photos.parent / "x.csv").exists()


def test_options_the_server_runs_are_accepted(server: Server, photos: Path) -> None:
    image = str(photos / "chelsea.png")
    code, out, err = invoke(
        "predict", image, "--labels", LABELS, "--server", server.url, "--precision", "fp32",
        "--device", "cpu", "-f", "jsonl",
    )  # fmt: skip
    assert code == 0 and jsonl(out)[0]["predictions"], err


def test_resume_refuses_a_server_with_other_weights(
    model_dir: Path, tmp_path: Path, photos: Path
) -> None:
    """One output, its server restarted at the same URL and model path with other bytes: it is
    refused, whether this side can read the model folder or not. (Through another URL it is
    another server: refused for that first, tests/test_server_trust.py.)"""
    other_dir = shutil.copytree(model_dir, tmp_path / "other" / "model")
    out = tmp_path / "out.csv"
    label = ("label", str(photos), "-o", str(out), "--labels", LABELS, "-q")
    first = Server(f"local-dir:{other_dir}")
    try:
        assert invoke(*label, "--server", first.url)[0] == 0
    finally:
        first.stop()
    written = out.read_bytes()
    donor = write_tiny_model(tmp_path / "donor", seed=11)
    data = bytearray((other_dir / WEIGHTS).read_bytes())
    edge = 2 << 20
    data[edge:-edge] = (donor / WEIGHTS).read_bytes()[edge:-edge]
    before = (other_dir / WEIGHTS).stat()
    (other_dir / WEIGHTS).write_bytes(bytes(data))
    os.utime(other_dir / WEIGHTS, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = Server(f"local-dir:{other_dir}", port=first.port)
    try:
        (photos / "more.png").write_bytes((photos / "coffee.png").read_bytes())
        code, _, err = invoke(*label, "--server", second.url, "--resume")
        assert code == 2 and "local-dir:sha256:" in err and "--overwrite" in err, err
        other_dir.rename(tmp_path / "hidden")  # this side cannot read the server's files
        code, _, err = invoke(*label, "--server", second.url, "--resume")
        assert code == 2 and "are not those of" in err, err
        assert out.read_bytes() == written
    finally:
        second.stop()


def test_a_url_is_not_sent_past_a_lower_max_megapixels() -> None:
    """Only the server sees a URL's size: a lower limit here is an error row, not ignored."""
    from clipcls.client.predict import RemoteClassifier, ServerClient
    from clipcls.labels import parse_labels
    from clipcls.prompts import single_templates

    client = ServerClient.__new__(ServerClient)  # the facts of a server, without one
    client.url, client.facts = "http://127.0.0.1:1", {"max_megapixels": 200.0, "limits": {}}
    labels, templates = parse_labels(LABELS), single_templates(["{}"])
    url = "https://example.com/big.jpg"
    lower = RemoteClassifier(client, labels, templates, max_megapixels=5)
    assert "--max-megapixels 5 cannot be checked for a URL" in str(lower._entry(url))
    same = RemoteClassifier(client, labels, templates, max_megapixels=200)
    assert same._entry(url) == {"url": url, "name": url}
