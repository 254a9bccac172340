"""Runs that never load the model: what a run that loaded it recorded (cache keys, logit scale,
resolved device and precision), so that when every prompt and image embedding a later run needs
is cached, it answers from the cache alone, without importing torch, with the same results."""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipcls.cache import EmbeddingCache, guarded
from clipcls.classify import build_text_classifier
from clipcls.engine.names import clean_tag
from clipcls.engine.runtimes import choose_runtime
from clipcls.engine.sources import (
    LOCAL_DIR,
    model_identity,
    random_weights_notices,
    schema_source,
)
from clipcls.errors import ClipclsError
from clipcls.filekey import FileKey
from clipcls.labels import Label
from clipcls.pipeline import EmbedPlan, ModelInfo, look_up, prepare_path
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url
from clipcls.settings import ModelSettings, model_id
from clipcls.version import __version__

LOOKUP = 500  # paths checked per cache query


class ModelNeeded(ClipclsError):
    """A recorded model was asked to compute: something was not in the cache after all."""

    def __init__(self) -> None:
        super().__init__("a file changed while this run read it from the cache: run it again")


@dataclass(frozen=True)
class ModelRecord:
    """What a run that loaded the model learned, as it describes the model and keys its cache."""

    model: str
    pretrained: str | None
    device: str
    precision: str
    logit_scale: float
    logit_bias: float | None
    image_cache_key: str
    text_cache_key: str
    draft_size: int | None


class RecordedModel:
    """An Encoder that answers only from the cache: scale, bias and keys as recorded; asked to
    compute anything, it raises ModelNeeded."""

    def __init__(self, record: ModelRecord, settings: ModelSettings) -> None:
        self.info = ModelInfo(
            record.model,
            record.pretrained,
            record.device,
            record.precision,
            random_weights_notices(settings.model),
        )
        self.logit_scale = record.logit_scale
        self.logit_bias = record.logit_bias
        self.plan = EmbedPlan(
            draft_size=record.draft_size,
            max_megapixels=settings.max_megapixels,
            image_cache_key=record.image_cache_key,
            text_cache_key=record.text_cache_key,
            device=record.device,
        )

    def prepare(self, image: Image.Image) -> Any:
        raise ModelNeeded

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        raise ModelNeeded

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelNeeded


def record_key(settings: ModelSettings) -> str:
    """The settings as they decide a model's results on this machine, with the versions of
    clipcls and open_clip that resolved them (a default tag or a cache key may change with
    either); nothing here imports torch."""
    identity = model_identity(settings).key or f"default:{settings.model}"
    try:
        open_clip_version = importlib.metadata.version("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        open_clip_version = ""
    parts = [
        "model-record/1",
        identity,
        str(settings.pretrained),
        settings.device.value,
        settings.precision.value,
        choose_runtime(settings),  # torch's and an export's embeddings are keyed apart
        str(settings.exact_decode),
        platform.node(),  # a cache folder shared between machines: auto means each its own
        __version__,
        open_clip_version,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def remember_model(cache: EmbeddingCache | None, settings: ModelSettings, encoder: Any) -> None:
    """Record a loaded ClipModel, so fully cached runs with these settings need not load it."""
    plan = encoder.plan
    if cache is None or plan.image_cache_key is None or plan.text_cache_key is None:
        return
    info = encoder.info
    record = ModelRecord(
        info.model,
        info.pretrained,
        info.device,
        info.precision,
        float(encoder.logit_scale),
        None if encoder.logit_bias is None else float(encoder.logit_bias),
        plan.image_cache_key,
        plan.text_cache_key,
        plan.draft_size,
    )
    key, value = record_key(settings), json.dumps(asdict(record))
    if cache.get_record(key) != value:
        cache.put_record(key, value)


def recorded_model(cache: EmbeddingCache | None, settings: ModelSettings) -> RecordedModel | None:
    """The model as an earlier run on this machine recorded it, or None."""
    if cache is None:
        return None
    value = cache.get_record(record_key(settings))
    if value is None:
        return None
    try:
        record = ModelRecord(**json.loads(value))
    except (ValueError, TypeError):  # a damaged record: load the model as usual
        return None
    numbers = (record.logit_scale, *([] if record.logit_bias is None else [record.logit_bias]))
    texts = (record.model, record.device, record.precision, record.image_cache_key)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
        return None
    if not all(isinstance(v, str) for v in (*texts, record.text_cache_key)):
        return None
    return RecordedModel(record, settings)


def cached_encoder(
    cache: EmbeddingCache | None,
    settings: ModelSettings,
    labels: Sequence[Label],
    template_sets: Sequence[TemplateSet],
    paths: Iterable[Path | str],
    unreadable_ok: bool = False,
) -> RecordedModel | None:
    """The recorded model, if the cache holds every prompt of the labels with each template set
    and every path's image embedding, else None: then a run needs no model. With unreadable_ok,
    a file the cache lacks but that cannot be read needs none either (it fails alike)."""
    encoder = recorded_model(cache, settings)
    if cache is None or encoder is None:
        return None
    try:  # a run without labels (a search's image side) asks for no prompt
        dims = {
            build_text_classifier(encoder, labels, templates, cache).shape[1]
            for templates in (template_sets if labels else ())
        }
    except ModelNeeded:
        return None
    if cache.failure is not None or len(dims) > 1:
        return None
    dim, plan, iterator = (dims.pop() if dims else None), encoder.plan, iter(paths)
    while batch := [str(p) for p in itertools.islice(iterator, LOOKUP)]:
        chunk = look_up(batch, cache, plan.image_cache_key, plan.max_megapixels, dim)
        needed = chunk.misses and not (unreadable_ok and _unreadable(encoder, chunk.misses))
        if needed or cache.failure is not None:
            return None
    return encoder


def _unreadable(encoder: RecordedModel, paths: Sequence[str]) -> bool:
    """Whether every path fails before the model would see it (decoding stops at the first
    that loads: then the model is needed)."""
    try:
        return all(prepare_path(encoder, path).error is not None for path in paths)
    except ModelNeeded:  # it loaded, and preparing it takes the model
        return False


HINT_FILES = 500  # the first files a run names are enough to tell which model cached them


@guarded(list)
def _recorded_values(cache: EmbeddingCache) -> list[str]:
    """Every model record's text (a handful: one per model and settings used here)."""
    assert cache.db is not None
    return [str(value) for (value,) in cache.db.execute("SELECT value FROM records")]


def _folder_named(name: str) -> str:
    """A local-dir: name with its folder made absolute (as typed in another folder, too)."""
    if not name.startswith(LOCAL_DIR):
        return name
    return LOCAL_DIR + os.path.abspath(os.path.expanduser(name.removeprefix(LOCAL_DIR)))


def _names_model(record: ModelRecord, settings: ModelSettings) -> bool:
    """Whether the record is of the model the settings name (any precision or device)."""
    if schema_source(settings.model) is not None or schema_source(record.model) is not None:
        return _folder_named(settings.model) == _folder_named(record.model)
    arch, _, tag = settings.model.partition(":")
    tag = tag or settings.pretrained or ""
    same_tag = not tag or clean_tag(tag) == clean_tag(record.pretrained or "")
    return arch.replace("/", "-") == record.model and same_tag


def other_cached_model(
    cache: EmbeddingCache | None, settings: ModelSettings, paths: Iterable[Path | str]
) -> str | None:
    """The one other model the cache holds these files' embeddings for, when the settings'
    model holds none of them (None otherwise): index look-ups by model key, no table scan."""
    if cache is None:
        return None
    files = (p for p in paths if not is_url(p))  # a URL's key would cost a request
    keys = [key for p in itertools.islice(files, HINT_FILES) if (key := FileKey.of(p))]
    own = recorded_model(cache, settings)
    if not keys or (own and cache.get_images(own.plan.image_cache_key, keys)):
        return None
    names: dict[str, str] = {}  # image cache key -> model id
    for value in _recorded_values(cache):
        try:
            record = ModelRecord(**json.loads(value))
        except (ValueError, TypeError, RecursionError):  # a damaged or foreign record
            continue
        texts = (record.model, record.image_cache_key, record.pretrained or "")
        if all(isinstance(t, str) for t in texts) and not _names_model(record, settings):
            names.setdefault(record.image_cache_key, model_id(record.model, record.pretrained))
    found = {names[key] for key in names if cache.get_images(key, keys)}
    return found.pop() if len(found) == 1 else None
