"""An evaluation run: for each model's backend, the dataset's images embedded once, then scored
with every template set by build_scorer's scorer and judged as its head calls for; the same
loop for class folders and a labels CSV, whether the model runs here, on Ray or on a server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from clipcls.backends.base import Backend, Expected, Hooks

# Re-exported: the CLI shows the images' progress through them.
from clipcls.classify import Advance as Advance
from clipcls.classify import ShowProgress as ShowProgress
from clipcls.classify import no_progress
from clipcls.errors import ClipclsError
from clipcls.evaluation.dataset import Dataset, class_labels, embedded_dataset, load_dataset
from clipcls.evaluation.fewshot import FewShotPlan
from clipcls.evaluation.judge import Model, judge_labels, judge_ranking
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation, Setup
from clipcls.fewshot.calibration import model_identity
from clipcls.fewshot.support import embed_support
from clipcls.gathered import Embedded
from clipcls.labels import Label, check_labels
from clipcls.multilabel.truth import MultiLabelTruth, read_truth
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates
from clipcls.scoring.heads import BACKGROUND_TEXT
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import ScoreSpec, build_scorer

DEFAULT_THRESHOLD = 0.5

S = TypeVar("S", bound=Setup, covariant=True)
Judge = Callable[[Scorer, TemplateSet], S]  # one template set's scorer -> its setup's results


class Run(Protocol[S]):
    """What an evaluation scores (its images, labels and template sets) and how it judges them
    on one backend, once that backend has embedded them."""

    @property
    def paths(self) -> Sequence[Path]: ...

    @property
    def labels(self) -> tuple[Label, ...]: ...

    @property
    def template_sets(self) -> tuple[TemplateSet, ...]: ...

    @property
    def multi_label(self) -> bool: ...

    def expected(self) -> Expected: ...

    def judge(self, backend: Backend, found: Embedded, voice: Hooks) -> Judge[S]: ...


def _model(backend: Backend) -> Model:
    info = backend.info
    identity = model_identity(backend.model_id, backend.weights)
    return Model(info.model, info.pretrained, identity, info.notices)


@dataclass(frozen=True)
class EvaluationRun:
    """Class folders scored by a softmax head: the dataset, one label per class, the template
    sets to compare, the top-k accuracies to report besides top-1, and what to compare
    zero-shot with (support examples), if anything."""

    dataset: Dataset
    labels: tuple[Label, ...]
    template_sets: tuple[TemplateSet, ...]
    ks: tuple[int, ...] = (5,)
    few_shot: FewShotPlan | None = None
    multi_label: ClassVar[bool] = False

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

    @property
    def paths(self) -> Sequence[Path]:
        return self.dataset.paths

    def expected(self) -> Expected:
        """What the run will ask of each backend (a local one may answer from its cache)."""
        dataset, plan = self.dataset, self.few_shot
        examples = plan.support.paths if plan is not None and plan.support is not None else ()
        paths = lambda: (*dataset.paths, *examples)  # noqa: E731
        return Expected(self.labels, self.template_sets, paths, unreadable_ok=True)

    def judge(self, backend: Backend, found: Embedded, voice: Hooks) -> Judge[Evaluation]:
        """Each setup ranked on the readable images, with the support folder embedded once."""
        data, plan, support = embedded_dataset(self.dataset, found), self.few_shot, None
        if plan is not None and plan.support is not None:
            with voice.status("embedding the support images"):
                support = embed_support(plan.support, backend.embed_images, voice.warn)
        model = _model(backend)
        return lambda scorer, templates: judge_ranking(
            scorer, templates, data, model, self.ks, plan, support
        )


@dataclass(frozen=True)
class MultiLabelRun:
    """A labels CSV scored by an independent head: the CSV's images and truth, one label per
    name (with its texts), one template set, and the threshold of the counts."""

    truth: MultiLabelTruth
    labels: tuple[Label, ...]
    templates: TemplateSet
    threshold: float = DEFAULT_THRESHOLD
    multi_label: ClassVar[bool] = True

    @classmethod
    def from_csv(
        cls,
        source: Path,
        templates: TemplateSet,
        labels: Sequence[Label] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> MultiLabelRun:
        """A run on the CSV; the label set is `labels` where given (each CSV label must be
        one of them), else the CSV's labels, each embedded as its words (`dog_toy`: dog toy)."""
        given = check_labels(labels) if labels is not None else None
        truth = read_truth(source, [label.name for label in given] if given else None)
        chosen = given if given is not None else check_labels(class_labels(truth.labels))
        return cls(truth, tuple(chosen), templates, threshold)

    @property
    def paths(self) -> Sequence[Path]:
        return self.truth.paths

    @property
    def template_sets(self) -> tuple[TemplateSet, ...]:
        return (self.templates,)

    def expected(self) -> Expected:
        """What the run asks of the backend: its labels' and the background's prompts (a
        softmax-trained model needs the background; a local backend then answers from its
        cache alone the next time), and the CSV's images."""
        background = Label.plain(BACKGROUND_TEXT)
        paths = self.truth.paths
        return Expected((*self.labels, background), (self.templates,), lambda: paths, True)

    def judge(self, backend: Backend, found: Embedded, voice: Hooks) -> Judge[MultiLabelEvaluation]:
        """Each label judged on its own on the readable images (one at least)."""
        if not found.rows:
            raise ClipclsError("no image of the labels CSV could be read")
        backend.embed_texts(self.templates.fill(BACKGROUND_TEXT))  # as expected() says
        model = _model(backend)
        return lambda scorer, templates: judge_labels(
            scorer, templates, found, self.truth, model, self.threshold
        )


def run_evaluation(
    backends: Iterable[Backend],
    run: Run[S],
    hooks: Hooks | None = None,
    progress: ShowProgress = no_progress,
) -> list[S]:
    """Evaluate each backend's model in turn: its backend started (a local one from the cache
    alone, without loading the model, where the cache holds everything the run needs), the
    images embedded once, then one result per template set, in that order. A lazy iterable (a
    generator opening one backend per model name) opens each only when its turn comes.

    Args:
        hooks: the caller's voice for slow steps (hooks.status around each scoring).
        progress: shows the images being embedded, once per model.
    """
    voice = hooks or Hooks()
    found: list[S] = []
    for backend in backends:
        backend.start(run.expected())
        with progress(len(run.paths)) as advance:
            embedded = backend.embed_matrix(run.paths, advance)
        judge = run.judge(backend, embedded, voice)
        for templates in run.template_sets:
            with voice.status(f"scoring with templates {templates.name}"):
                spec = ScoreSpec(run.labels, templates, multi_label=run.multi_label)
                found.append(judge(build_scorer(spec, backend), templates))
    return found
