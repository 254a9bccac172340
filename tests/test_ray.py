"""`label --engine ray` on a 2-node Ray cluster simulated on this machine: the same rows as the
local engine, a killed driver resumed without doubles, and a clear line without Ray."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import class_folders
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app

pytestmark = pytest.mark.slow  # starts Ray clusters: run by .ci/run with -m slow

ray = pytest.importorskip("ray")
runner = CliRunner()
LABELS = "cat,coffee,rocket"


def images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.effect_noise((320, 240), 20 + 3 * i).convert("RGB").save(folder / f"{i:03d}.jpg")
    return folder


def label(model: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["label", *args, "--model", model, "-t", "photo", "--labels", LABELS, "-q"]
    )


def rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as stream:
        found = list(csv.DictReader(stream))
    by_path = {r["path"]: r for r in found}
    assert len(by_path) == len(found)  # every file once
    return by_path


def test_ray_gives_the_local_engines_rows(
    tiny_model: str, photos: Path, tmp_path: Path, cluster: str
) -> None:
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / os.fsdecode(b"caf\xe9.png")).write_bytes((photos / "chelsea.png").read_bytes())
    (photos / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image either")
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert label(tiny_model, str(photos), "-o", str(local), "-k", "2").exit_code == 0
    result = label(
        tiny_model,
        str(photos),
        "-o",
        str(on_ray),
        "-k",
        "2",
        "--engine",
        "ray",
        "--ray-address",
        cluster,
    )
    assert result.exit_code == 0, result.output
    want, got = rows(local), rows(on_ray)
    assert set(got) == set(want)
    for path, row in got.items():
        assert row["label"] == want[path]["label"] and row["error"] == want[path]["error"]
        if row["probability"]:
            assert float(row["probability"]) == pytest.approx(
                float(want[path]["probability"]), abs=1e-5
            )


def test_a_driver_whose_cache_holds_the_prompts_loads_no_model(
    tiny_model: str, photos: Path, tmp_path: Path, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actors embed and the driver scores: a driver that has run these labels before
    finds their prompts in its cache and loads no model of its own."""
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert label(tiny_model, str(photos), "-o", str(local)).exit_code == 0

    def refuse(settings: object) -> None:
        raise AssertionError("the driver loaded the model")

    monkeypatch.setattr("clipcls.engine.factory.open_model", refuse)
    ask = ["-o", str(on_ray), "--engine", "ray", "--ray-address", cluster]
    result = label(tiny_model, str(photos), *ask)
    assert result.exit_code == 0, result.output
    assert rows(on_ray).keys() == rows(local).keys()


def test_evaluate_on_ray_reports_what_the_local_engine_does(
    tiny_model: str, tmp_path: Path, cluster: str
) -> None:
    dataset = class_folders(tmp_path / "data")
    (dataset / "cat" / "broken.png").write_bytes(b"not an image")
    args = ["evaluate", str(dataset), "--model", tiny_model, "-t", "photo", "-f", "json", "-q"]
    local = runner.invoke(app, args)
    on_ray = runner.invoke(app, [*args, "--engine", "ray", "--ray-address", cluster])
    assert on_ray.exit_code == 0, on_ray.output
    want, got = json.loads(local.stdout), json.loads(on_ray.stdout)
    for key in (
        "top1",
        "balanced_accuracy",
        "macro_f1",
        "n_images",
        "n_failed",
        "confusion_matrix",
    ):
        assert got[key] == want[key], key


def test_a_killed_ray_driver_resumes_without_doubles(
    tiny_model: str, tmp_path: Path, cluster: str
) -> None:
    folder = images(tmp_path / "many", 40)
    out = tmp_path / "ray.csv"
    command = [sys.executable, "-m", "clipcls", "label", str(folder), "-o", str(out)]
    command += ["--model", tiny_model, "-t", "photo", "--labels", LABELS, "-q"]
    command += ["--engine", "ray", "--batch-size", "2"]
    env = {**os.environ, "RAY_ADDRESS": cluster}
    driver = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") > 2):
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = subprocess.run(
        [*command, "--resume"], env=env, timeout=300, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    assert "streaming_executor" not in finished.stderr  # Ray Data's log lines stay off stderr
    assert sorted(Path(p).name for p in rows(out)) == [f"{i:03d}.jpg" for i in range(40)]


def test_without_ray_the_engine_says_how_to_install_it(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    result = label(tiny_model, str(photos), "-o", str(tmp_path / "x.csv"), "--engine", "ray")
    assert result.exit_code == 2 and "pip install 'clipcls[ray]'" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_decoding_tasks_feed_the_actors_the_local_engines_inputs(
    tiny_model: str, photos: Path, tmp_path: Path, cluster: str
) -> None:
    """The GPU layout (CPU tasks decode, actors embed), run here on CPUs: the local engine's
    predictions; a second run takes embeddings from the cache the first run's actors filled,
    looked up by the tasks under the key the actors use."""
    from clipcls.backends.ray_data import connect, embed_on_ray
    from clipcls.cache import EmbeddingCache
    from clipcls.classify import Classifier
    from clipcls.engine.model import ClipModel
    from clipcls.filekey import FileKey
    from clipcls.labels import Label
    from clipcls.prompts import single_templates
    from clipcls.settings import ModelSettings

    (photos / "broken.png").write_bytes(b"not an image")
    (photos / os.fsdecode(b"caf\xe9.png")).write_bytes((photos / "chelsea.png").read_bytes())
    files = sorted(str(p) for p in photos.iterdir())
    settings = ModelSettings(tiny_model, cache_dir=tmp_path / "cache")
    labels = tuple(Label.plain(name) for name in LABELS.split(","))
    templates = single_templates(["a photo of a {}."])
    local = Classifier(ClipModel(settings), labels, templates)
    want = {p.path: p for p in local.classify_paths(files)}
    connect(cluster)

    def on_ray() -> dict[str, object]:
        found = embed_on_ray(files, settings, 2, decode_tasks=True)  # the actors embed
        return {p.path: p for p in local.scorer.rescore(list(found))}  # the driver scores

    got = on_ray()
    assert set(got) == set(want)
    for path, prediction in got.items():
        assert prediction.error == want[path].error  # type: ignore[attr-defined]
        if want[path].top is not None:
            assert prediction.top.label == want[path].top.label  # type: ignore[attr-defined]
            top = prediction.top.probability  # type: ignore[attr-defined]
            assert top == pytest.approx(want[path].top.probability, abs=1e-5)
    # Plant a vector that only a cache hit can give: the rocket label's own text embedding.
    cache = EmbeddingCache(settings.resolved_cache_dir())
    key = FileKey.of(photos / "coffee.png")
    assert key is not None and local.encoder.plan.image_cache_key is not None
    assert cache.get_images(local.encoder.plan.image_cache_key, [key])  # the actors wrote it
    rocket = local.label_weights[[label.name for label in labels].index("rocket")]
    cache.put_images(local.encoder.plan.image_cache_key, [(key, rocket)])
    cache.close()
    again = on_ray()
    assert again[str(photos / "coffee.png")].top.label == "rocket"  # type: ignore[attr-defined]
