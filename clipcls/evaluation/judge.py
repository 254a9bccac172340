"""How one setup's scores are judged, as its scorer's head calls for: a softmax head ranks the
labels (top-k accuracy, per class, confusions, reliability, and the few-shot comparison where
asked); an independent head gives each label its own probability (mAP, per-label AP, counts)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.fewshot import (
    SUPPORT,
    ZERO_SHOT,
    FewShotPlan,
    measures,
    shot_folds,
    support_folder,
)
from clipcls.evaluation.metrics import compute_metrics
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation
from clipcls.gathered import Embedded
from clipcls.labels import check_labels
from clipcls.multilabel.metrics import multilabel_metrics
from clipcls.multilabel.truth import MultiLabelTruth
from clipcls.prompts import TemplateSet
from clipcls.scoring.adapter import SupportSet
from clipcls.scoring.heads import softmax
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import with_support


@dataclass(frozen=True)
class Model:
    """The model a setup ran: as the report names it, and its weights' identity."""

    model: str
    pretrained: str | None = None
    identity: str | None = None
    notices: tuple[str, ...] = ()  # what the terminal warns of the model (RANDOM weights)


def evaluate_embedded(
    scorer: Scorer,
    templates: TemplateSet,
    data: EmbeddedDataset,
    model: Model,
    ks: tuple[int, ...] = (5,),
) -> Evaluation:
    """Score ready embeddings with one template set's softmax scorer and compute the metrics.

    Args:
        scorer: the labels' text side with these templates (build_scorer's), or one with a
            support set (each image left out of its own neighbours, by path).
    """
    labels = check_labels(scorer.labels)  # class folders that differ only in case are refused
    n_classes = len(labels)
    if len(data.embeddings):
        logits, _ = scorer.logits(data.embeddings, data.paths)
    else:
        logits = np.zeros((0, n_classes))
    probabilities = softmax(logits) if len(logits) else logits
    return Evaluation(
        model=model.model,
        pretrained=model.pretrained,
        identity=model.identity,
        notices=model.notices,
        templates=templates,
        labels=labels,
        metrics=compute_metrics(data.targets, probabilities, n_classes, ks),
        probabilities=probabilities,
        data=data,
        logits=logits,
    )


def judge_ranking(
    scorer: Scorer,
    templates: TemplateSet,
    data: EmbeddedDataset,
    model: Model,
    ks: tuple[int, ...],
    plan: FewShotPlan | None = None,
    support: SupportSet | None = None,
) -> Evaluation:
    """One setup's Evaluation: zero-shot on every image, or with the support folder's examples
    (the report then describes that classifier), with the comparison the plan asks for."""
    zero = evaluate_embedded(scorer, templates, data, model, ks)
    if plan is None or not len(data.paths):
        return zero
    if support is None:
        return replace(zero, few_shot=shot_folds(scorer, data, plan, ks))
    adapted = with_support(scorer, support)
    evaluation = evaluate_embedded(adapted, templates, data, model, ks)
    measured = {
        name: measures(scored.metrics, scored.probabilities, data.targets)
        for name, scored in ((ZERO_SHOT, zero), (SUPPORT, evaluation))
    }
    result = support_folder(data.paths, measured, plan, support)
    if adapted.adapter is not None:
        result = replace(result, alphas=(adapted.adapter.alpha,), betas=(adapted.adapter.beta,))
    return replace(evaluation, few_shot=result)


def judge_labels(
    scorer: Scorer,
    templates: TemplateSet,
    found: Embedded,
    truth: MultiLabelTruth,
    model: Model,
    threshold: float,
) -> MultiLabelEvaluation:
    """One setup's MultiLabelEvaluation: each label's probability by the scorer's independent
    head, and the mAP, per-label AP and counts at the threshold that judge them."""
    probabilities, similarities = scorer.score(found.matrix)
    rows = truth.truth[list(found.rows)]
    return MultiLabelEvaluation(
        model=model.model,
        pretrained=model.pretrained,
        identity=model.identity,
        notices=model.notices,
        templates=templates,
        labels=scorer.labels,
        method=scorer.head.method,
        source=truth.source,
        paths=found.readable,
        truth=rows,
        probabilities=probabilities,
        similarities=similarities,
        metrics=multilabel_metrics(rows, probabilities, threshold),
        failures=found.failures,
    )
