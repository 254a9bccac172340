"""One wire contract and one embedding step: Prediction.to_record/from_record as the writers,
the server, its client and the Ray pair use them, and embed_batch under the pipeline, the
server worker and the Ray actors."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DIM, CountingEncoder, FakeEncoder, colour_images, unit
from PIL import Image

from clipcls import Prediction as FacadePrediction
from clipcls.backends.ray_data import _prediction as ray_prediction
from clipcls.backends.ray_workers import Embedder
from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier, LabelScore, Prediction
from clipcls.client.protocol import (
    ImageRef,
    Limits,
    ServeRequest,
    TextsRequest,
    parse_request,
    request_from_record,
)
from clipcls.errors import ClipclsError, RecordError
from clipcls.filekey import FileKey
from clipcls.output.rows import Columns, to_row
from clipcls.pathtext import path_to_text
from clipcls.pipeline import EmbeddedBatch, PreparedImage, embed_batch, embed_paths
from clipcls.server.uploads import checked_request

SCORES = (LabelScore("cat", 0.75, 0.31), LabelScore("dog", 0.25, 0.12))
ODD_PATH = "photos/caf\udce9 \\ back.jpg"  # an undecodable byte and a backslash in the name


def test_the_facade_and_classify_keep_exporting_the_moved_names() -> None:
    assert FacadePrediction is Prediction
    assert LabelScore.__module__ == Prediction.__module__ == "clipcls.prediction"


def test_a_prediction_survives_its_record_as_json() -> None:
    vector = unit(np.arange(1, DIM + 1, dtype=np.float32)).astype(np.float32)
    prediction = Prediction(ODD_PATH, SCORES, embedding=vector)
    record = json.loads(json.dumps(prediction.to_record(embedding=True)))
    back = Prediction.from_record(record, labels=["dog", "cat"])
    assert back == prediction and back.path == ODD_PATH
    assert back.embedding is not None and np.array_equal(back.embedding, vector)
    failed = Prediction.from_record(Prediction(ODD_PATH, error="cannot read").to_record())
    assert failed == Prediction(ODD_PATH, error="cannot read")


def test_the_record_is_the_object_predict_writes() -> None:
    vector = np.full(DIM, 0.5, np.float32)
    for prediction in (Prediction("a.jpg", SCORES, embedding=vector), Prediction("b", error="x")):
        for top_k, embedding in ((1, False), (2, True)):
            columns = Columns(top_k, embedding=embedding)
            written = json.dumps(columns.record(to_row(prediction, top_k)))
            assert json.dumps(prediction.to_record(top_k, embedding)) == written
    assert Prediction("b", error="x").to_record(embedding=True) == {
        "path": "b",
        "error": "x",
        "embedding": None,
    }


def test_the_writers_keep_their_columns_around_the_record() -> None:
    row = to_row(Prediction("a.jpg", SCORES), 1, threshold=0.9, model="m")
    record = Columns(1, best_label=True, model=True, destination="destination").record(row)
    assert list(record) == ["path", "label", "predictions", "model", "destination"]
    assert record["label"] == "unknown" and record["predictions"][0]["label"] == "cat"


GOOD = {"path": "a.jpg", "predictions": [s.to_record() for s in SCORES]}


def scored(first: dict[str, Any]) -> dict[str, Any]:
    """GOOD with its first score replaced."""
    return {**GOOD, "predictions": [first, *GOOD["predictions"][1:]]}


BAD_RECORDS: dict[str, Any] = {
    "a label never asked": scored({**SCORES[0].to_record(), "label": "zebra"}),
    "a NaN probability": scored({**SCORES[0].to_record(), "probability": "nan"}),
    "an infinite similarity": scored({**SCORES[0].to_record(), "similarity": float("inf")}),
    "no probability": scored({"label": "cat", "similarity": 0.1}),
    "one label missing": {**GOOD, "predictions": GOOD["predictions"][:1]},
    "no predictions": {"path": "a.jpg"},
    "not an object": "cat",
    "an embedding that is no vector": {**GOOD, "embedding": [[0.1, 0.2]]},
    "an embedding of words": {**GOOD, "embedding": ["a"]},
}


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=list(BAD_RECORDS))
def test_a_record_that_is_no_prediction_for_the_labels_is_one_error(bad: str) -> None:
    assert Prediction.from_record(GOOD, labels={"cat", "dog"}).top == SCORES[0]
    with pytest.raises(RecordError) as refused:
        Prediction.from_record(BAD_RECORDS[bad], labels={"cat", "dog"}, path="a.jpg")
    assert isinstance(refused.value, ClipclsError) and isinstance(refused.value, ValueError)
    assert "\n" not in str(refused.value)


class Cached(FakeEncoder):
    """A fake whose embeddings are cached, counting each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = CountingEncoder().plan
        self.passes: list[int] = []

    def encode_prepared(self, prepared: Any) -> np.ndarray:
        self.passes.append(len(prepared))
        return super().encode_prepared(prepared)


def test_embed_batch_takes_cached_vectors_keeps_errors_and_remembers_fresh_ones(
    tmp_path: Path,
) -> None:
    encoder, cache = Cached(), EmbeddingCache(tmp_path / "cache")
    files = colour_images(tmp_path / "in", 4)
    known = np.full(DIM, 0.25, np.float32)
    items = [
        PreparedImage(str(files[0]), embedding=known),
        PreparedImage(str(files[1]), error="broken"),
        *(
            PreparedImage(str(f), encoder.prepare(Image.open(f).convert("RGB")), key=FileKey.of(f))
            for f in files[2:]
        ),
    ]
    done = embed_batch(encoder, items, cache, pass_size=1)
    assert encoder.passes == [1, 1]  # the cached and the broken image cost nothing
    assert done.errors == (None, "broken", None, None) and done.embeddings.shape == (3, DIM)
    assert np.array_equal(done.embeddings[0], known)
    remembered = cache.get_images("fake-images", [FileKey.of(f) for f in files[2:]])  # type: ignore[misc]
    assert len(remembered) == 2
    part = done.part(1, 3)
    assert part.paths == (str(files[1]), str(files[2])) and len(part.embeddings) == 1
    assert np.array_equal(part.embeddings[0], done.embeddings[1])


def test_embed_paths_computes_each_image_once_through_the_shared_step(tmp_path: Path) -> None:
    encoder, cache = Cached(), EmbeddingCache(tmp_path / "cache")
    files = [*colour_images(tmp_path / "in", 3), tmp_path / "missing.png"]
    first = list(embed_paths(encoder, files, 2, cache))
    again = list(embed_paths(encoder, files, 2, cache))
    assert encoder.passes == [2, 1]  # nothing computed the second time
    for one, two in zip(first, again, strict=True):
        assert one.errors == two.errors and np.array_equal(one.embeddings, two.embeddings)
    assert first[1].errors[1] is not None


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def worker_api(encoder: FakeEncoder, batch_size: int) -> Any:
    """The server's model worker with a fake model, as setup() leaves it."""
    from clipcls.server.worker import ClipclsAPI

    api = ClipclsAPI.__new__(ClipclsAPI)
    api.limits, api.encoder, api.texts, api.cache = Limits(), encoder, encoder, None
    api.classifiers, api.batch_size = OrderedDict(), batch_size
    api.pool = ThreadPoolExecutor(1)
    return api


def test_the_server_worker_batches_all_requests_and_answers_with_predict_records() -> None:
    encoder = Cached()
    api = worker_api(encoder, batch_size=2)
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    bodies = [
        {"images": [{"data": base64.b64encode(png(c)).decode(), "name": f"{i}.png"}]}
        for i, c in enumerate(colours)
    ]
    labels = {"labels": ["red", "green", "blue"], "top_k": 2, "embedding": True}
    records = [parse_request({**body, **labels}, Limits(), []).to_record() for body in bodies]
    requests = [api.decode_request(json.loads(json.dumps(record))) for record in records]
    answers = api.predict(requests)
    assert encoder.passes == [2, 1]  # the three requests' images, in passes of batch_size
    local = Classifier(FakeEncoder(), ["red", "green", "blue"], requests[0].templates)
    for i, colour in enumerate(colours):  # one image per request: scored alone, as here
        prediction = local.classify_images([Image.open(io.BytesIO(png(colour)))])[0]
        expected = Prediction(f"{i}.png", prediction.scores, embedding=prediction.embedding)
        assert answers[i] == {"predictions": [expected.to_record(2, True)]}


def test_the_guard_checks_a_request_once_and_hands_on_its_record(tmp_path: Path) -> None:
    body = {
        "images": [{"data": base64.b64encode(png((1, 2, 3))).decode(), "name": "c.png"}],
        "labels": "cat,dog",
        "templates": "simple",
        "top_k": 1,
    }
    raw = json.dumps(body).encode()
    checked = asyncio.run(checked_request(None, "application/json", raw, Limits(), [], tmp_path))
    handed = request_from_record(json.loads(checked.body))
    parsed = parse_request(body, Limits(), [])
    assert isinstance(handed, ServeRequest) and isinstance(parsed, ServeRequest)
    assert handed.images == (ImageRef("c.png", path=str(checked.files[0])),)
    assert Path(checked.files[0]).read_bytes() == parsed.images[0].data
    assert (handed.labels, handed.templates, handed.top_k) == (
        parsed.labels,
        parsed.templates,
        parsed.top_k,
    )
    texts = TextsRequest(("a photo of a cat",))
    assert request_from_record(json.loads(json.dumps(texts.to_record()))) == texts
    assert parsed == ServeRequest.from_record(json.loads(json.dumps(parsed.to_record())))


class PixelEncoder(Cached):
    """A fake whose prepared images are uint8 pixels, as the Ray decoding tasks send them."""

    def prepare(self, image: Image.Image) -> np.ndarray:
        return (super().prepare(image) * 255).astype(np.uint8)

    def encode_prepared(self, prepared: Any) -> np.ndarray:
        return super().encode_prepared([np.asarray(p, np.float32) for p in prepared])


def test_the_ray_pair_sends_records_the_driver_reads_back_as_the_local_predictions(
    tmp_path: Path,
) -> None:
    files = colour_images(tmp_path / "in", 3)
    encoder = PixelEncoder()
    labels = ["red", "green"]
    actor = Embedder.__new__(Embedder)
    actor.encoder, actor.cache = encoder, None
    classifier = Classifier(encoder, labels, ["a {}"])
    cached = encoder.encode_prepared([encoder.prepare(Image.open(files[0]).convert("RGB"))])[0]
    pixels = encoder.prepare(Image.open(files[1]).convert("RGB"))
    given = [path_to_text(str(f.relative_to(tmp_path))) for f in files] + ["gone.png"]
    batch = {
        "path": given,
        "load": [path_to_text(str(f)) for f in files] + [str(tmp_path / "gone.png")],
        "error": ["", "", "", f"cannot read {tmp_path / 'gone.png'}"],
        "key": [encoder.plan.image_cache_key, "", "", ""],
        "cached": [cached.tobytes(), b"", b"", b""],
        "pixels": [b"", pixels.tobytes(), b"", b""],  # the third: decoded by the actor itself
        "shape": [[], list(pixels.shape), [], []],
    }
    encoder.passes.clear()
    rows = [{"record": r} for r in actor(batch)["record"]]
    assert encoder.passes == [2]  # the cached row and the failed one cost nothing
    embedded = [ray_prediction(row, str(tmp_path)) for row in rows]
    found = classifier.scorer.rescore(embedded)  # the driver scores
    local = list(Classifier(PixelEncoder(), labels, ["a {}"]).classify_paths(files))
    for got, want, path in zip(found, local, given, strict=False):
        assert got == Prediction(path, want.scores)
        assert np.array_equal(got.embedding, want.embedding)  # type: ignore[arg-type]
    assert found[3] == Prediction("gone.png", error="cannot read gone.png")
    with pytest.raises(ClipclsError, match="the Ray cluster sent a row clipcls cannot read"):
        ray_prediction({"record": rows[0]["record"][:-2]}, str(tmp_path))


def test_no_module_builds_an_embedded_batch_by_hand() -> None:
    """The pipeline's step (embed_batch, and EmbeddedBatch.part) is the only builder."""
    root = Path(__file__).resolve().parent.parent / "clipcls"
    builders = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "EmbeddedBatch(" in path.read_text(encoding="utf-8")
    }
    assert builders == {"pipeline.py"}
    assert EmbeddedBatch.__module__ == "clipcls.pipeline"
