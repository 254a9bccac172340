"""Predict: each image's top labels from a backend, streamed into a writer as they come (the
label run's small sibling: no output file to resume, nothing sorted)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TextIO

from clipcls.backends.base import Backend, Expected
from clipcls.classify import Prediction
from clipcls.errors import ClipclsError, UsageError
from clipcls.fewshot.runs import prepare_fewshot
from clipcls.images import iter_image_paths
from clipcls.labeling.options import check_multi_label
from clipcls.labeling.predictor import Predictor
from clipcls.labels import Label
from clipcls.output.formats import Format
from clipcls.output.rows import MULTI_THRESHOLD, Columns, Threshold, to_multi_row, to_row
from clipcls.prompts import TemplateSet


def input_files(
    inputs: Sequence[str], include_hidden: bool = False, walk: bool = True
) -> Iterator[Path | str]:
    """The inputs' files: walked, or (walk=False: saved embeddings list them) as listed."""
    return iter_image_paths(inputs, include_hidden) if walk else iter(inputs)


def count_images(inputs: Sequence[str], include_hidden: bool = False, walk: bool = True) -> int:
    """How many files the inputs hold; UsageError if none."""
    total = sum(1 for _ in input_files(inputs, include_hidden, walk))
    if total == 0:
        raise UsageError(f"no images found in {', '.join(inputs)}")
    return total


def _silent(text: str) -> None:
    return None


def predictions(
    backend: Backend,
    inputs: Sequence[str],
    labels: Sequence[Label],
    templates: TemplateSet,
    include_hidden: bool = False,
    walk: bool = True,
    support: Path | None = None,
    calibration: Path | None = None,
    notice: Callable[[str], None] = _silent,
    warn: Callable[[str], None] = _silent,
    multi_label: bool = False,
) -> Iterator[Prediction]:
    """Start the backend for these files (from the cache alone where it holds them all) and ask
    for their predictions: the prompts are embedded now, the files read as predictions are
    taken. walk=False takes inputs as the files themselves (saved embeddings list them).

    support (SUPPORT/<label>/<image>) and calibration (its temperature) change the scores as in
    label_tree; notice and warn hear what they say (labels without examples, and the like).

    multi_label: each prediction's probabilities are independent, one per label (a SigLIP
    model's sigmoid, else label against a background prompt, or the calibration's logistic),
    still ranked; to_multi_row (or write_predictions) turns them into a row's labels."""
    if multi_label:
        check_multi_label(labels)
    fewshot = prepare_fewshot(
        labels, templates, support, calibration, False, include_hidden, warn, multi_label
    )
    predictor = Predictor(backend, fewshot, notice, warn)
    files = partial(input_files, inputs, include_hidden, walk)
    predictor.start(Expected(tuple(labels), (templates,), paths=files))
    return predictor.predict(files(), labels, templates)


def _untracked(predictions: Iterator[Prediction]) -> Iterator[Prediction]:
    return predictions


def write_predictions(
    found: Iterator[Prediction],
    kind: Format,
    stream: TextIO,
    columns: Columns,
    where: str,
    track: Callable[[Iterator[Prediction]], Iterable[Prediction]] = _untracked,
    warn: Callable[[str], None] = _silent,
    threshold: Threshold | None = MULTI_THRESHOLD,
    unknown_label: str = "",
) -> int:
    """Write each prediction's row to stream as it comes (track wraps them, as a progress bar
    does; warn hears of each unreadable file); the number of unreadable files. Multi-label
    columns: each row has every label at or above threshold (one P, or one per label).

    A write error becomes one ClipclsError naming where; a closed pipe (`| head`) goes on up.
    """
    failures = 0
    try:
        writer = kind.writer(stream, columns)
        for prediction in track(found):
            if columns.multi_label:
                cut = MULTI_THRESHOLD if threshold is None else threshold
                writer.write(to_multi_row(prediction, cut, unknown_label))
            else:  # below its threshold (one P, or its label's): the unknown label
                writer.write(to_row(prediction, columns.top_k, threshold, unknown_label))
            if prediction.error is not None:
                failures += 1
                warn(prediction.error)
        writer.close()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise ClipclsError(f"cannot write {where}: {error.strerror or error}") from None
    return failures
