"""Zero-shot scoring: text classifier from labels x templates, then a stream of predictions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from PIL import Image

from clipcls.cache import EmbeddingCache
from clipcls.labels import Label, check_labels
from clipcls.pipeline import EmbeddedBatch, Encoder, PreparedImage, embed_batch, embed_paths
from clipcls.prediction import LabelScore as LabelScore  # re-exported: clipcls.classify's API
from clipcls.prediction import Prediction as Prediction
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates
from clipcls.scoring.spec import ScoreSpec, build_scorer, label_weights
from clipcls.settings import ModelSettings

DEFAULT_BATCH_SIZE = 32  # on the CPU larger batches gain nothing and hold more decoded images
GPU_BATCH_SIZE = 128  # a GPU needs large batches to stay busy


def default_batch_size(device: str) -> int:
    """Images per batch when none is asked for: 32 on the CPU, 128 on a GPU."""
    return DEFAULT_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE


# Prompts per text-tower call when many are missing: each chunk is cached as soon as it is done
# (a run stopped halfway keeps them) and moves the progress; the engine batches within it.
TEXT_CHUNK = 512

Advance = Callable[[int], None]  # told how many more items are done
# Given how many items a slow step will do, a context around the step that yields an Advance.
ShowProgress = Callable[[int], AbstractContextManager[Advance]]


@contextlib.contextmanager
def no_progress(total: int) -> Iterator[Advance]:
    """Progress shown nowhere."""
    yield lambda done: None


def prompt_chunks(texts: Sequence[str], size: int) -> list[list[str]]:
    """The texts in chunks of size, as one chunk when they fit in one. Sorted by length first:
    each chunk then holds prompts of about one token length, so the tower's batches (cut to
    their longest prompt) carry about as little padding as one call over all of them."""
    if len(texts) <= size:
        return [list(texts)]
    ordered = sorted(texts, key=len)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def encode_prompts(
    encoder: Encoder,
    prompts: Sequence[str],
    cache: EmbeddingCache | None = None,
    progress: ShowProgress = no_progress,
) -> np.ndarray:
    """Embed each distinct prompt once (and not at all if cached): (n_prompts, dim).

    The missing ones are embedded in chunks (prompt_chunks), each put in the cache when it is
    done; progress is given their count, and advanced chunk by chunk.
    """
    unique = list(dict.fromkeys(prompts))
    model = encoder.plan.text_cache_key if cache is not None else None
    known = cache.get_texts(model, unique) if cache is not None and model is not None else {}
    missing = [text for text in unique if text not in known]
    if missing:
        with progress(len(missing)) as advance:
            for chunk in prompt_chunks(missing, TEXT_CHUNK):
                fresh = encoder.encode_texts(chunk)  # (len(chunk), dim)
                known.update(zip(chunk, fresh, strict=True))
                if cache is not None and model is not None:
                    cache.put_texts(model, zip(chunk, fresh, strict=True))
                advance(len(chunk))
    return np.stack([known[text] for text in prompts])


class PromptTower:
    """An encoder's text side as scoring asks for it: prompts embedded through the cache (each
    distinct one once), and the model's logit scale and bias."""

    def __init__(
        self,
        encoder: Encoder,
        cache: EmbeddingCache | None = None,
        progress: ShowProgress = no_progress,
    ) -> None:
        self.encoder, self.cache, self.progress = encoder, cache, progress

    @property
    def logit_scale(self) -> float:
        return self.encoder.logit_scale

    @property
    def logit_bias(self) -> float | None:
        return self.encoder.logit_bias

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_prompts(self.encoder, texts, self.cache, self.progress)


def build_text_classifier(
    encoder: Encoder,
    labels: Sequence[Label],
    templates: TemplateSet,
    cache: EmbeddingCache | None = None,
    progress: ShowProgress = no_progress,
) -> np.ndarray:
    """Embed every (text, template) prompt, average per label, re-normalize: (n_labels, dim)."""
    return label_weights(PromptTower(encoder, cache, progress).embed_texts, labels, templates)


def _as_labels(labels: Sequence[Label | str]) -> tuple[Label, ...]:
    return check_labels([x if isinstance(x, Label) else Label.plain(x) for x in labels])


def _as_templates(templates: TemplateSet | Sequence[str] | str) -> TemplateSet:
    if isinstance(templates, TemplateSet):
        return templates
    if isinstance(templates, str):
        return load_templates(templates)
    from clipcls.prompts import single_templates

    return single_templates(templates)


class Classifier:
    """Scores images against a fixed set of labels with one model."""

    def __init__(
        self,
        encoder: Encoder,
        labels: Sequence[Label | str],
        templates: TemplateSet | Sequence[str] | str = DEFAULT_TEMPLATES,
        batch_size: int | None = None,
        cache: EmbeddingCache | None = None,
        progress: ShowProgress = no_progress,
    ) -> None:
        self.encoder = encoder
        self.labels = _as_labels(labels)
        self.templates = _as_templates(templates)
        device = encoder.plan.device
        self.batch_size = batch_size or default_batch_size(device)
        self.cache = cache
        tower = PromptTower(encoder, cache, progress)
        self.scorer = build_scorer(ScoreSpec(self.labels, self.templates), tower)

    @property
    def label_weights(self) -> np.ndarray:
        """The labels' text embeddings, (n_labels, dim)."""
        return self.scorer.label_weights

    @classmethod
    def load(
        cls,
        labels: Sequence[Label | str],
        templates: TemplateSet | Sequence[str] | str = DEFAULT_TEMPLATES,
        settings: ModelSettings | None = None,
        batch_size: int | None = None,
        cache: EmbeddingCache | None = None,
    ) -> Classifier:
        """Load the model described by settings (default: ViT-B-32) and build the classifier."""
        from clipcls.engine.factory import open_model

        return cls(open_model(settings or ModelSettings()), labels, templates, batch_size, cache)

    def score(
        self, image_embeddings: np.ndarray, paths: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (probabilities, similarities), each (n_images, n_labels); paths (the images',
        where known) matter to a scorer with a support set, whose own examples are inputs."""
        return self.scorer.score(image_embeddings)

    def classify_images(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Classify in-memory RGB images; their paths read `image[0]`, `image[1]`, ..."""
        predictions: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            names = [f"image[{start + i}]" for i in range(len(chunk))]
            prepared = [
                PreparedImage(name, self.encoder.prepare(image.convert("RGB")))
                for name, image in zip(names, chunk, strict=True)
            ]
            predictions.extend(self.predict_embedded(embed_batch(self.encoder, prepared)))
        return predictions

    def predict_embedded(self, batch: EmbeddedBatch) -> list[Prediction]:
        """Predictions for an embedded batch: scores where readable, errors in place."""
        return self.scorer.predict_embedded(batch)

    def classify_paths(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """Yield one Prediction per path, in input order; unreadable files carry an error."""
        dim = self.label_weights.shape[1]
        for batch in embed_paths(self.encoder, paths, self.batch_size, self.cache, dim):
            yield from self.predict_embedded(batch)
