"""The backend seam: one registry, and the local backend answering as the Classifier does,
from the cache alone when it holds everything a run expects."""

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES

from clipcls.backends.base import BACKENDS, BackendConfig, Expected, Hooks, open_backend
from clipcls.backends.local import LocalBackend
from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.errors import UsageError
from clipcls.labeling.predictor import Predictor
from clipcls.labels import Label
from clipcls.prompts import load_templates
from clipcls.scoring.spec import ScoreSpec, build_scorer
from clipcls.settings import ModelSettings

LABELS = (Label.plain("cat"), Label.plain("rocket"), Label.plain("coffee"))


def _config(model: str, tmp_path: Path, notes: list[str] | None = None) -> BackendConfig:
    settings = ModelSettings(model=model)
    cache = EmbeddingCache(tmp_path / "cache")
    hooks = Hooks(notice=notes.append) if notes is not None else Hooks()
    return BackendConfig(settings, cache, batch_size=2, hooks=hooks)


def test_an_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no backend 'gpu': choose one of local, ray, server"):
        open_backend("gpu", BackendConfig())


def test_every_registered_backend_is_one_class_named_as_its_entry() -> None:
    import importlib

    for name, where in BACKENDS.items():
        module, _, attribute = where.partition(":")
        assert getattr(importlib.import_module(module), attribute).name == name


def test_the_server_and_ray_backends_import_without_torch() -> None:
    code = (
        "import sys, clipcls.backends.server, clipcls.backends.ray;"
        "print([m for m in ('torch', 'open_clip', 'ray') if m in sys.modules])"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.stdout.strip() == "[]", found.stderr


def test_the_local_backend_answers_as_the_classifier(tiny_model: str, tmp_path: Path) -> None:
    paths = sorted(SAMPLE_IMAGES.glob("*.png"))[:3] + [tmp_path / "missing.png"]
    templates = load_templates("photo")
    backend = open_backend("local", _config(tiny_model, tmp_path))
    assert isinstance(backend, LocalBackend)
    found = list(Predictor(backend).predict(paths, LABELS, templates, embeddings=True))
    classifier = Classifier(backend.encoder, LABELS, templates, batch_size=2)
    assert found == list(classifier.classify_paths(paths))
    embedded = list(backend.embed_images(paths))
    assert [p.error is None for p in embedded] == [True, True, True, False]
    vectors = np.stack([p.embedding for p in embedded if p.embedding is not None])
    probabilities, _ = build_scorer(ScoreSpec(LABELS, templates), backend).score(vectors)
    np.testing.assert_array_equal(probabilities, classifier.score(vectors)[0])
    assert [p.scores[0].label for p in found[:3]] == [
        LABELS[i].name for i in probabilities.argmax(axis=1)
    ]
    texts = backend.embed_texts(["a cat", "a rocket", "a cat"])
    np.testing.assert_array_equal(texts[0], texts[2])
    assert backend.model_id.startswith("local-dir:")


def test_a_fully_cached_run_needs_no_model(tiny_model: str, tmp_path: Path) -> None:
    paths = sorted(SAMPLE_IMAGES.glob("*.png"))[:2]
    templates = load_templates("photo")
    first = LocalBackend(_config(tiny_model, tmp_path))
    first.start(Expected(LABELS, (templates,), lambda: paths))
    assert first.loaded
    before = list(Predictor(first).predict(paths, LABELS, templates))
    notes: list[str] = []
    again = LocalBackend(_config(tiny_model, tmp_path, notes))
    again.start(Expected(LABELS, (templates,), lambda: paths))
    assert not again.loaded
    assert "the model was not loaded" in notes[-1]
    assert list(Predictor(again).predict(paths, LABELS, templates)) == before
    other = (*LABELS, Label.plain("a label never embedded"))
    fresh = LocalBackend(_config(tiny_model, tmp_path))
    fresh.start(Expected(other, (templates,), lambda: paths))
    assert fresh.loaded  # one prompt the cache lacks: the model loads


def test_prompts_the_cache_lacks_are_counted_through_the_hooks(
    tiny_model: str, tmp_path: Path
) -> None:
    told: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
        told.append((what, total))
        yield lambda done: told.append(("done", done))

    config = BackendConfig(
        ModelSettings(model=tiny_model),
        cache=EmbeddingCache(tmp_path / "cache"),
        hooks=Hooks(progress=progress),
    )
    backend = LocalBackend(config)
    backend.embed_texts(["a cat", "a rocket", "a cat"])
    assert told == [("embedding prompts", 2), ("done", 2)]
    build_scorer(ScoreSpec(LABELS, load_templates("photo")), backend)  # none cached yet
    backend.embed_texts(["a rocket"])  # cached: nothing to count
    assert len(told) == 4 and told[2][1] == told[3][1] > 0
