"""How label and predict turn files into predictions with any backend: the backend embeds (from
its cache where it can), the run's ScoreSpec (labels, templates, mode, support set,
calibration) becomes one Scorer, and the embeddings are scored here, a local run's batch at a
time, so rows are the same whether the images were embedded here, on Ray or on a server."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from clipcls.backends.base import Backend, Expected
from clipcls.fewshot.calibration import model_identity
from clipcls.fewshot.runs import FewShot
from clipcls.fewshot.support import SupportFiles, embed_support
from clipcls.labels import Label
from clipcls.pathtext import path_key
from clipcls.prediction import Prediction
from clipcls.prompts import TemplateSet
from clipcls.scoring.adapter import SupportSet
from clipcls.scoring.heads import BACKGROUND_TEXT
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import ScoreSpec, build_scorer


def _silent(text: str) -> None:
    return None


def known_identity(backend: Backend) -> str | None:
    """The model identity a calibration names, where the backend knows it before starting."""
    if backend.weights is not None:
        return model_identity("", backend.weights)
    return backend.known_model


class Predictor:
    """A run's backend with how the run scores: starting it embeds the support examples (from
    the cache where it holds them) and checks the calibration's model; predict scores."""

    def __init__(
        self,
        backend: Backend,
        fewshot: FewShot | None = None,
        notice: Callable[[str], None] = _silent,
        warn: Callable[[str], None] = _silent,
    ) -> None:
        self.backend, self.fewshot, self.notice, self.warn = backend, fewshot, notice, warn
        self.support: SupportSet | None = None
        self.started = False
        self._scorers: dict[tuple[tuple[Label, ...], TemplateSet], Scorer] = {}
        if fewshot is not None:
            fewshot.check(known_identity(backend))

    @property
    def weights(self) -> str | None:
        return self.backend.weights

    @property
    def known_model(self) -> str | None:
        return self.backend.known_model

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def start(self, expected: Expected | None = None) -> None:
        """Start the backend for what the run will ask (the support examples and a multi-label
        run's background prompt too: a cache holding them all loads no model)."""
        if self.started:
            return
        fewshot = self.fewshot
        files = fewshot.support if fewshot is not None else None
        if expected is not None and files is not None and expected.paths is not None:
            listed = expected.paths
            self._say_overlap(listed(), files)
            expected = replace(expected, paths=lambda: itertools.chain(listed(), files.paths))
        if expected is not None and fewshot is not None and fewshot.multi_label:
            background = Label.plain(BACKGROUND_TEXT)  # a softmax-trained model's head needs it
            expected = replace(expected, labels=(*expected.labels, background))
        self.backend.start(expected)
        if fewshot is not None:
            fewshot.check(model_identity(self.backend.model_id, self.backend.weights))
        if files is not None:
            self.support = embed_support(files, self.backend.embed_images, self.warn)
        self.started = True

    def _spec(self, labels: Sequence[Label], templates: TemplateSet) -> ScoreSpec:
        fewshot = self.fewshot
        if fewshot is None:
            return ScoreSpec(tuple(labels), templates)
        multi, calibrated = fewshot.multi_label, fewshot.calibrated()
        return ScoreSpec(tuple(labels), templates, multi, self.support, calibrated)

    def _say_overlap(self, inputs: Iterable[Path | str], files: SupportFiles) -> None:
        examples = {path_key(str(path)) for path in files.paths}
        both = sum(1 for path in inputs if path_key(str(path)) in examples)
        if both:
            are = (
                "input image is a support example"
                if both == 1
                else "input images are support examples"
            )
            self.notice(f"{both} {are}: each left out of its own neighbours")

    def scorer(self, labels: Sequence[Label], templates: TemplateSet) -> Scorer:
        """The labels' scorer, built once per labels and templates."""
        self.start()
        key = (tuple(labels), templates)
        if key not in self._scorers:
            self._scorers[key] = build_scorer(self._spec(labels, templates), self.backend)
        return self._scorers[key]

    def predict(
        self,
        paths: Iterable[Path | str],
        labels: Sequence[Label],
        templates: TemplateSet,
        embeddings: bool = False,
    ) -> Iterator[Prediction]:
        """One Prediction per path (an unreadable file's carries its error; with embeddings,
        each its image embedding), lazy in the paths; the prompts are embedded now."""
        scorer = self.scorer(labels, templates)
        found = self.backend.embed_images(paths)
        return scorer.predictions(found, self.backend.batch_size, embeddings)
