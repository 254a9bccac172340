"""`serve --multi-label` with a SigLIP model: each request's labels get the model's own sigmoid
(a request may say multi_label=false for a softmax), equal to a local `predict --multi-label`."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fewshot_serve import call, free_port, wait_for_info
from typer.testing import CliRunner

from clipcls.cli import app

pytest.importorskip("litserve")
pytestmark = pytest.mark.slow  # starts a clipcls server: run by .ci/run with -m slow
LABELS = ["cat", "rocket", "coffee"]


def test_a_multi_label_server_answers_siglip_sigmoids_like_a_local_run(
    tiny_siglip: str, tmp_path: Path
) -> None:
    from conftest import SAMPLE_IMAGES

    images = [SAMPLE_IMAGES / name for name in ("chelsea.png", "rocket.jpg", "coffee.png")]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_siglip]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--multi-label", "--precision", "fp32"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_info(server, url)
        sent = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in images]
        body = {"images": sent, "labels": LABELS, "templates": ["a photo of a {}."]}
        served = call(f"{url}/v1/predict", body)["predictions"]
        softmax = call(f"{url}/v1/predict", {**body, "multi_label": False})["predictions"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    template = tmp_path / "one.txt"
    template.write_text("a photo of a {}.\n")
    args = ["predict", *map(str, images), "--labels", ",".join(LABELS), "--model", tiny_siglip]
    args += ["--templates", str(template), "--precision", "fp32", "--multi-label", "-f", "jsonl"]
    local = CliRunner().invoke(app, args)
    assert local.exit_code == 0, local.output
    rows = [json.loads(line) for line in local.stdout.splitlines()]
    for answer, row in zip(served, rows, strict=True):
        mine = {p["label"]: p["probability"] for p in answer["predictions"]}
        assert mine.keys() == row["probabilities"].keys()
        for label, probability in row["probabilities"].items():
            assert mine[label] == pytest.approx(probability, abs=1e-6)
        assert sum(mine.values()) < 0.99  # SigLIP's bias of -10: independent, not a softmax
    for answer in softmax:
        assert sum(p["probability"] for p in answer["predictions"]) == pytest.approx(1.0)
    assert not np.isclose(
        served[0]["predictions"][0]["probability"], softmax[0]["predictions"][0]["probability"]
    )
