"""Scoring with a fake encoder whose embeddings are known, so the arithmetic can be checked."""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import DIM, CountingEncoder, FakeEncoder, unit
from PIL import Image

from clipcls import classify
from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier, build_text_classifier
from clipcls.labels import Label
from clipcls.prompts import TemplateSet
from clipcls.scoring.heads import softmax
from clipcls.scoring.spec import label_prompts

TWO_TEMPLATES = TemplateSet("two", ("a photo of a {}.", "a drawing of a {}."))


def test_text_classifier_averages_normalized_prompts_then_renormalizes() -> None:
    encoder = FakeEncoder()
    labels = [Label("car", ("car", "automobile")), Label.plain("dog")]
    weights = build_text_classifier(encoder, labels, TWO_TEMPLATES)
    prompts = [
        "a photo of a car.",
        "a drawing of a car.",
        "a photo of a automobile.",
        "a drawing of a automobile.",
    ]
    expected_car = unit(np.mean([FakeEncoder.text_vector(p) for p in prompts], axis=0))
    expected_dog = unit(
        np.mean(
            [FakeEncoder.text_vector(p) for p in ["a photo of a dog.", "a drawing of a dog."]],
            axis=0,
        )
    )
    np.testing.assert_allclose(weights, np.stack([expected_car, expected_dog]), atol=1e-6)
    assert encoder.text_calls == [[*prompts, "a photo of a dog.", "a drawing of a dog."]]


def test_scores_are_scaled_cosines_softmaxed_with_bias() -> None:
    encoder = FakeEncoder(logit_bias=-3.0)
    classifier = Classifier(encoder, ["cat", "dog", "car"], TWO_TEMPLATES)
    embeddings = unit(np.random.default_rng(0).normal(size=(4, DIM))).astype(np.float32)
    probabilities, similarities = classifier.score(embeddings)
    np.testing.assert_allclose(similarities, embeddings @ classifier.label_weights.T, atol=1e-6)
    logits = 50.0 * similarities - 3.0
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-9)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_softmax_is_stable_for_large_logits() -> None:
    result = softmax(np.array([[1000.0, 1000.0, 0.0]]))
    np.testing.assert_allclose(result, [[0.5, 0.5, 0.0]], atol=1e-12)


def test_predictions_are_ranked_and_cut_to_top_k() -> None:
    classifier = Classifier(FakeEncoder(), ["cat", "dog", "car", "tree"], TWO_TEMPLATES)
    (prediction,) = classifier.classify_images([Image.new("RGB", (4, 4), (200, 30, 30))])
    probabilities = [s.probability for s in prediction.scores]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(s.label for s in prediction.scores) == ["car", "cat", "dog", "tree"]
    assert prediction.top == prediction.scores[0]
    assert prediction.top_k(2) == prediction.scores[:2]
    assert prediction.path == "image[0]"


def test_a_bad_file_in_a_batch_changes_no_other_result(tmp_path: Path) -> None:
    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (120, 120, 0)]
    good = []
    for i, color in enumerate(colors):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (6, 6), color).save(path)
        good.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    classifier = Classifier(FakeEncoder(), ["red", "green", "blue"], TWO_TEMPLATES, batch_size=3)
    clean = list(classifier.classify_paths(good))
    mixed = list(classifier.classify_paths([good[0], broken, good[1], good[2], good[3]]))
    assert [p.path for p in mixed] == [str(good[0]), str(broken), *map(str, good[1:])]
    assert mixed[1].error is not None and "not a readable image" in mixed[1].error
    assert mixed[1].scores == () and mixed[1].top is None
    # Same labels in the same order; scores equal up to float32 rounding of a different batch shape.
    for got, want in zip([mixed[0], *mixed[2:]], clean, strict=True):
        assert [s.label for s in got.scores] == [s.label for s in want.scores]
        for a, b in zip(got.scores, want.scores, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-6)
            assert a.similarity == pytest.approx(b.similarity, abs=1e-6)


def test_a_batch_of_only_bad_files_yields_only_errors(tmp_path: Path) -> None:
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in paths:
        path.write_bytes(b"")
    classifier = Classifier(FakeEncoder(), ["x", "y"], TWO_TEMPLATES)
    assert [p.error is not None for p in classifier.classify_paths(paths)] == [True, True]


def test_classifier_takes_template_names_and_lists() -> None:
    assert len(Classifier(FakeEncoder(), ["a", "b"], "simple").templates.templates) == 7
    custom = Classifier(FakeEncoder(), ["a", "b"], ["x {} y"])
    assert custom.templates.templates == ("x {} y",)


def test_duplicate_labels_are_refused_by_the_api() -> None:
    from clipcls.errors import UsageError

    with pytest.raises(UsageError, match="duplicate"):
        Classifier(FakeEncoder(), ["a", "A"], TWO_TEMPLATES)


class FailingEncoder(CountingEncoder):
    """Embeds texts until its calls run out, then fails like a kill in the middle of a run."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if len(self.text_calls) == self.calls:
            raise KeyboardInterrupt
        return super().encode_texts(texts)


def test_many_prompts_are_embedded_in_chunks_each_cached_as_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = [Label.plain(f"thing {'x' * (i % 5)} {i}") for i in range(10)]  # 20 prompts
    whole = build_text_classifier(FakeEncoder(), labels, TWO_TEMPLATES)
    monkeypatch.setattr(classify, "TEXT_CHUNK", 6)
    told: list[int] = []

    @contextlib.contextmanager
    def progress(total: int) -> Iterator[Callable[[int], None]]:
        told.append(total)
        yield told.append

    cache = EmbeddingCache(tmp_path)
    stopped = FailingEncoder(calls=2)
    with pytest.raises(KeyboardInterrupt):
        build_text_classifier(stopped, labels, TWO_TEMPLATES, cache, progress)
    assert [len(call) for call in stopped.text_calls] == [6, 6]
    done = [text for call in stopped.text_calls for text in call]
    assert sorted(cache.get_texts("fake-texts", label_prompts(labels, TWO_TEMPLATES))) == sorted(
        done
    )
    assert told == [20, 6, 6]
    encoder = CountingEncoder()
    told.clear()
    chunked = build_text_classifier(encoder, labels, TWO_TEMPLATES, cache, progress)
    np.testing.assert_array_equal(chunked, whole)
    assert [len(call) for call in encoder.text_calls] == [6, 2]  # the 12 cached are not again
    assert told == [8, 6, 2]
