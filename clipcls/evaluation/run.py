"""An evaluation run: for each model's backend, the dataset's images embedded once, then scored
with every template set; the same loop whether the model runs here, on Ray or on a server."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from clipcls.backends.base import Backend, Expected, Hooks

# Re-exported: the CLI shows the images' progress through them.
from clipcls.classify import Advance as Advance
from clipcls.classify import ShowProgress as ShowProgress
from clipcls.classify import no_progress
from clipcls.evaluation.dataset import (
    Dataset,
    EmbeddedDataset,
    class_labels,
    embedded_dataset,
    load_dataset,
)
from clipcls.evaluation.fewshot import FewShotPlan, evaluate_setup
from clipcls.evaluation.scoring import Evaluation
from clipcls.fewshot.calibration import model_identity
from clipcls.fewshot.support import embed_support
from clipcls.labels import Label
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates
from clipcls.scoring.spec import ScoreSpec, build_scorer


@dataclass(frozen=True)
class EvaluationRun:
    """What every model of an evaluation is scored on: the dataset, one label per class, the
    template sets to compare, the top-k accuracies to report besides top-1, and what to compare
    zero-shot with (support examples), if anything."""

    dataset: Dataset
    labels: tuple[Label, ...]
    template_sets: tuple[TemplateSet, ...]
    ks: tuple[int, ...] = (5,)
    few_shot: FewShotPlan | None = None

    @classmethod
    def from_folder(
        cls,
        root: Path,
        template_sets: Sequence[TemplateSet] | None = None,
        classnames: Path | None = None,
        max_per_class: int | None = None,
        seed: int = 0,
        ks: tuple[int, ...] = (5,),
    ) -> EvaluationRun:
        """A run on root's class folders (texts from classnames, if given), with the default
        template set unless others are given."""
        dataset = load_dataset(root, max_per_class, seed)
        labels = class_labels(dataset.classes, classnames)
        sets = tuple(template_sets or (load_templates(DEFAULT_TEMPLATES),))
        return cls(dataset, labels, sets, ks)

    def expected(self) -> Expected:
        """What the run will ask of each backend (a local one may answer from its cache)."""
        dataset, plan = self.dataset, self.few_shot
        examples = plan.support.paths if plan is not None and plan.support is not None else ()
        paths = lambda: (*dataset.paths, *examples)  # noqa: E731
        return Expected(self.labels, self.template_sets, paths, unreadable_ok=True)


def embed_dataset(
    backend: Backend, dataset: Dataset, advance: Advance = lambda done: None
) -> EmbeddedDataset:
    """Embed every image once through the backend; template changes then cost no image work."""
    return embedded_dataset(dataset, backend.embed_matrix(dataset.paths, advance))


def evaluate_backend(
    backend: Backend,
    run: EvaluationRun,
    hooks: Hooks | None = None,
    progress: ShowProgress = no_progress,
) -> list[Evaluation]:
    """One model's evaluations, one per template set: its backend started (a local one from
    the cache alone, without loading the model, where the cache holds everything the run
    needs), the images embedded once, then scored with each template set."""
    voice = hooks or Hooks()
    backend.start(run.expected())
    with progress(len(run.dataset.paths)) as advance:
        data = embed_dataset(backend, run.dataset, advance)
    plan = run.few_shot
    support = None
    if plan is not None and plan.support is not None:
        with voice.status("embedding the support images"):
            support = embed_support(plan.support, backend.embed_images, voice.warn)
    info = backend.info
    model = (info.model, info.pretrained)
    identity = model_identity(backend.model_id, backend.weights)
    evaluations = []
    for templates in run.template_sets:
        with voice.status(f"scoring with templates {templates.name}"):
            scorer = build_scorer(ScoreSpec(run.labels, templates), backend)
            found = evaluate_setup(scorer, templates, data, model, run.ks, plan, support)
            evaluations.append(replace(found, identity=identity))
    return evaluations


def run_evaluation(
    backends: Iterable[Backend],
    run: EvaluationRun,
    hooks: Hooks | None = None,
    progress: ShowProgress = no_progress,
) -> list[Evaluation]:
    """Evaluate each backend's model in turn: one Evaluation per model and template set, in
    that order. A lazy iterable (a generator opening one backend per model name) opens each
    only when its turn comes, after the models before it are done.

    Args:
        hooks: the caller's voice for slow steps (hooks.status around each scoring).
        progress: shows the images being embedded, once per model.
    """
    evaluations: list[Evaluation] = []
    for backend in backends:
        evaluations += evaluate_backend(backend, run, hooks, progress)
    return evaluations
