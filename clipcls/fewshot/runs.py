"""A predict or label run with a support set and a calibration: both read and checked before
anything is written, and a Predictor over the run's backend that embeds the examples with it
once it starts, then scores every image with them and the calibration's temperature."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from clipcls.backends.base import Backend, Expected, Predictor
from clipcls.errors import UsageError
from clipcls.fewshot.calibration import (
    Calibration,
    model_identity,
    read_calibration,
    templates_identity,
)
from clipcls.fewshot.scoring import AdaptedPredictor
from clipcls.fewshot.support import (
    SUPPORT_NOT_MULTI_LABEL,
    SupportFiles,
    embed_support,
    find_support,
)
from clipcls.labels import Label
from clipcls.multilabel.head import BACKGROUND_TEXT, MultiLabel
from clipcls.pathtext import clean_text, path_key
from clipcls.prediction import Prediction
from clipcls.prompts import TemplateSet

AUTO = "auto"  # --threshold auto: each label's threshold from the calibration file

Thresholds = Mapping[str, float | None]


def _silent(text: str) -> None:
    return None


@dataclass(frozen=True)
class FewShot:
    """A run's support set (its files, not yet embedded) and calibration, for its labels and
    templates."""

    labels: tuple[Label, ...]
    templates: TemplateSet
    support: SupportFiles | None = None
    calibration: Calibration | None = None
    calibration_digest: str | None = None  # of the file's bytes
    multi_label: bool = False  # each label's own probability (multilabel.head), no softmax

    @property
    def temperature(self) -> float:
        """The calibration's temperature; 1 in multi-label runs (it calibrates a softmax)."""
        if self.calibration is None or self.multi_label:
            return 1.0
        return float(self.calibration.temperature)

    def logistic(self) -> tuple[list[float], list[float]] | None:
        """The calibration's per-label logistic (slopes, intercepts) in the run's label order;
        None where it has none (the model then decides the head)."""
        fitted = self.calibration.multi_label if self.calibration is not None else None
        if fitted is None or self.calibration is None:
            return None
        where = {name: i for i, name in enumerate(self.calibration.labels)}
        order = [where[label.name] for label in self.labels]
        slopes, intercepts = fitted["slopes"], fitted["intercepts"]
        return [float(slopes[i]) for i in order], [float(intercepts[i]) for i in order]

    @property
    def support_identity(self) -> str | None:
        return self.support.identity() if self.support is not None else None

    @property
    def calibration_identity(self) -> str | None:
        """What a resumed run must match: the temperature and the file's digest."""
        if self.calibration is None:
            return None
        return f"temperature {self.temperature:g}, sha256:{self.calibration_digest}"

    def check(self, model: str | None) -> None:
        """UsageError where the calibration was fitted for another setup; model None: not
        known yet (checked again once the backend has started)."""
        if self.calibration is not None:
            self.calibration.check(
                self.calibration.model if model is None else model,
                [label.name for label in self.labels],
                templates_identity(self.templates),
                self.support_identity,
            )

    def thresholds(self) -> Thresholds:
        """Each label's threshold from the calibration (None: that label never reached the
        target precision, so its images are always unknown)."""
        if self.calibration is None:
            raise UsageError("--threshold auto needs --calibration FILE.json: it holds them")
        found = self.calibration.thresholds
        if self.multi_label:
            if self.calibration.multi_label is None:
                raise UsageError(
                    "--threshold auto with --multi-label needs a calibration file with "
                    "multi-label thresholds (evaluate --multi-label --calibrate writes them)"
                )
            found = self.calibration.multi_label.get("thresholds", {})
        return {label.name: found.get(label.name) for label in self.labels}


def prepare_fewshot(
    labels: Sequence[Label],
    templates: TemplateSet,
    support: Path | None = None,
    calibration: Path | None = None,
    auto_threshold: bool = False,
    include_hidden: bool = False,
    warn: Callable[[str], None] = _silent,
    multi_label: bool = False,
) -> FewShot | None:
    """Read the support folder and the calibration file and check them against the labels and
    templates (UsageError naming what is wrong); None where neither is asked for and the run is
    not multi-label. warn hears each label the support set leaves zero-shot."""
    if auto_threshold and calibration is None:
        raise UsageError("--threshold auto needs --calibration FILE.json: it holds the thresholds")
    if support is None and calibration is None and not multi_label:
        return None
    if support is not None and multi_label:
        raise UsageError(SUPPORT_NOT_MULTI_LABEL)
    files = find_support(support, labels, include_hidden) if support is not None else None
    for line in files.notes() if files is not None else ():
        warn(line)
    fitted, digest = None, None
    if calibration is not None:
        fitted = read_calibration(calibration)
        if fitted.multi_label is not None and not multi_label:  # no softmax part: a no-op
            raise UsageError(
                f"{clean_text(str(calibration))} was fitted by evaluate --multi-label "
                "--calibrate: use it with --multi-label, or fit one with evaluate --calibrate"
            )
        digest = hashlib.sha256(calibration.read_bytes()).hexdigest()[:16]
    found = FewShot(tuple(labels), templates, files, fitted, digest, multi_label)
    found.check(None)
    return found


def calibrated_thresholds(
    labels: Sequence[Label], templates: TemplateSet, calibration: Path, multi_label: bool
) -> Thresholds:
    """--threshold auto: each label's threshold in the calibration file (multi-label: those
    fitted for independent probabilities), by label name."""
    fitted = read_calibration(calibration)
    return FewShot(tuple(labels), templates, None, fitted, None, multi_label).thresholds()


def known_identity(backend: Backend) -> str | None:
    """The model identity a calibration names, where the backend knows it before starting."""
    if backend.weights is not None:
        return model_identity("", backend.weights)
    return backend.known_model


class FewShotPredictor(AdaptedPredictor):
    """The run's backend with its support set and temperature: starting it embeds the
    examples (from the cache where it holds them) and checks the calibration's model."""

    def __init__(
        self,
        backend: Backend,
        fewshot: FewShot,
        notice: Callable[[str], None] = _silent,
        warn: Callable[[str], None] = _silent,
    ) -> None:
        multi = MultiLabel(fewshot.logistic()) if fewshot.multi_label else None
        super().__init__(backend, None, fewshot.temperature, multi)
        self.fewshot, self.notice, self.warn = fewshot, notice, warn
        self.started = False
        fewshot.check(known_identity(backend))
        also_embed = getattr(backend, "also_embed", None)  # saved embeddings lack the examples
        if fewshot.support is not None and also_embed is not None:
            also_embed(fewshot.support.paths)

    def start(self, expected: object = None) -> None:
        if self.started:
            return
        files = self.fewshot.support
        if isinstance(expected, Expected) and files is not None and expected.paths is not None:
            listed = expected.paths
            self._say_overlap(listed(), files)
            # the examples are embedded too: a cache holding them and the inputs loads no model
            expected = replace(expected, paths=lambda: itertools.chain(listed(), files.paths))
        if isinstance(expected, Expected) and self.multi_label is not None:
            # the background prompt is embedded too: a cache lacking it needs the model
            extra = Label.plain(BACKGROUND_TEXT)
            expected = replace(expected, labels=(*expected.labels, extra))
        self.backend.start(expected)  # type: ignore[arg-type]
        self.fewshot.check(model_identity(self.backend.model_id, self.backend.weights))
        if files is not None:
            self.support = embed_support(files, self.backend.embed_images, self.warn)
        self.started = True

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

    def predict(
        self,
        paths: Iterable[Path | str],
        labels: Sequence[Label],
        templates: TemplateSet,
        embeddings: bool = False,
    ) -> Iterator[Prediction]:
        self.start()
        self.scorer(labels, templates)  # now, as a local run embeds its prompts first
        return super().predict(paths, labels, templates, embeddings)


def fewshot_predictor(
    backend: Predictor,
    fewshot: FewShot | None,
    notice: Callable[[str], None] = _silent,
    warn: Callable[[str], None] = _silent,
) -> Predictor:
    """The backend itself where the run has no support set or calibration and is not
    multi-label, else wrapped; a Predictor that cannot embed images and score them is a
    UsageError."""
    if fewshot is None:
        return backend
    if not all(hasattr(backend, name) for name in ("embed_images", "scorer")):
        raise UsageError(
            "a support set, a calibration or --multi-label needs a backend that embeds images "
            "and scores them (embed_images and scorer)"
        )
    return FewShotPredictor(cast("Backend", backend), fewshot, notice, warn)
