"""The local backend: the model in this process, through the embedding cache; a run whose
every prompt and image the cache holds answers from it alone, without loading the model."""

from __future__ import annotations

import gc
import shlex
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from clipcls.backends.base import (
    BackendConfig,
    BaseBackend,
    Expected,
    Hooks,
    ImageStore,
    Scaled,
    image_store,
)
from clipcls.classify import (
    Prediction,
    ShowProgress,
    default_batch_size,
    encode_prompts,
    no_progress,
)
from clipcls.engine.local_dirs import note_local_dir
from clipcls.pipeline import Encoder, ModelInfo, embed_paths
from clipcls.recorded import cached_encoder, other_cached_model, recorded_model, remember_model
from clipcls.settings import ModelSettings, model_id

NOT_LOADED = "(every embedding cached: the model was not loaded)"
ONNX_SPEEDUP = "about 5x"  # one new image, prompts cached: benchmarks/startup.py


def describe(info: ModelInfo) -> str:
    """The one line that says which model runs where."""
    weights = f" ({info.pretrained})" if info.pretrained else ""
    runtime = ", ONNX Runtime" if info.runtime == "onnx" else ""
    return f"model {info.model}{weights} on {info.device}, {info.precision}{runtime}"


def load_model(settings: ModelSettings, hooks: Hooks, quiet: bool = False) -> Encoder:
    """Load the model, saying through hooks what runs where (and any random-weights notice)."""
    from clipcls.engine.factory import open_model
    from clipcls.engine.hardware import check_device_early
    from clipcls.engine.runtimes import choose_runtime
    from clipcls.engine.sources import check_model_name

    check_model_name(settings)
    if choose_runtime(settings) == "torch":  # an export's providers are checked as it opens
        check_device_early(settings.device, settings.precision)
    with hooks.status(f"loading {settings.model}"):
        encoder = open_model(settings)
    # torch, open_clip and the model leave ~10^6 long-lived objects; each full collection then
    # takes ~0.2 s. Frozen, collections scan only what the run allocates.
    gc.freeze()
    for line in encoder.info.notices:
        hooks.warn(line)
    if not quiet:
        hooks.notice(describe(encoder.info))
    return encoder


class LocalBackend(BaseBackend):
    """The model in this process (loaded on start, or the cache standing in for it)."""

    name = "local"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings = config.settings
        self._encoder: Encoder | None = None
        self.loaded = False  # the model itself, not its recorded stand-in

    @property
    def weights(self) -> str | None:
        from clipcls.engine.sources import model_identity

        return model_identity(self.settings).key

    @property
    def encoder(self) -> Encoder:
        """The model, or the recorded stand-in that answers from the cache; started if need be."""
        if self._encoder is None:
            self.start()
        assert self._encoder is not None
        return self._encoder

    @property
    def info(self) -> ModelInfo:
        return self.encoder.info

    @property
    def text_model(self) -> Scaled:
        return self.encoder

    @property
    def model_id(self) -> str:
        return model_id(self.info.model, self.info.pretrained)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or default_batch_size(self.encoder.plan.device)

    def start(self, expected: Expected | None = None) -> None:
        """Load the model, unless expected's prompts and files are all cached under a model an
        earlier run on this machine recorded."""
        if self._encoder is not None:
            return
        hooks, quiet = self.config.hooks, self.config.quiet
        if expected is not None and expected.paths is not None:
            from clipcls.engine.sources import check_model_name

            check_model_name(self.settings)
            sets, paths = expected.template_sets, expected.paths()
            recorded = cached_encoder(
                self.cache, self.settings, expected.labels, sets, paths, expected.unreadable_ok
            )
            if recorded is not None:
                for line in recorded.info.notices:
                    hooks.warn(line)
                if not quiet:
                    hooks.notice(f"{describe(recorded.info)} {NOT_LOADED}")
                self._encoder = recorded
                note_local_dir(self.settings)  # used, if not loaded: `models --cached` lists it
                return
            self._hint_other_model(expected.paths())  # a fresh walk: the first one may be spent
        self._encoder = load_model(self.settings, hooks, quiet)
        self.loaded = True
        remember_model(self.cache, self.settings, self._encoder)
        self._hint_onnx(self._encoder)

    def _hint_onnx(self, encoder: Encoder) -> None:
        """Once per model, after torch ran it on the CPU: an export would start it faster."""
        from clipcls.engine.runtimes import onnx_installed

        info = encoder.info
        if self.cache is None or info.runtime != "torch" or encoder.plan.device != "cpu":
            return
        if info.precision != "fp32":  # bf16 on this CPU: torch outruns an fp32 export
            return
        key = f"onnx-hint/{model_id(info.model, info.pretrained)}"
        if self.cache.get_record(key) is not None:
            return
        self.cache.put_record(key, "shown")
        command = f"clipcls models prepare {shlex.quote(model_id(info.model, info.pretrained))}"
        extra = "" if onnx_installed() else " (after `pip install 'clipcls[onnx]'`)"
        self.config.hooks.tip(
            f"tip: `{command}`{extra} lets later runs start without torch, {ONNX_SPEEDUP} faster"
        )

    def _hint_other_model(self, paths: Iterable[Path | str]) -> None:
        """Before a load the cache could have spared: when the model is a default (no -m) and
        the cache holds these files for exactly one other model, name it."""
        if self.config.asked_model is not None:
            return
        other = other_cached_model(self.cache, self.settings, paths)
        if other is not None:
            option = shlex.quote(other)
            self.config.hooks.warn(f"these files are cached for {other}; did you mean -m {option}?")

    def _progress(self) -> ShowProgress:
        """The hooks' progress around embedding the prompts the cache lacks (none: not shown)."""
        if self.config.quiet:
            return no_progress
        progress = self.config.hooks.progress
        return lambda total: progress("embedding prompts", total)

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        for batch in embed_paths(self.encoder, paths, self.batch_size, self.cache):
            vectors = iter(batch.embeddings)
            for path, error in zip(batch.paths, batch.errors, strict=True):
                if error is not None:
                    yield Prediction(path, error=error)
                else:
                    yield Prediction(path, embedding=next(vectors))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_prompts(self.encoder, texts, self.cache, self._progress())

    @property
    def image_store(self) -> ImageStore | None:
        if self._encoder is not None:
            plan = self._encoder.plan
        else:  # not started: the model an earlier run recorded, if any, keys the cache alike
            recorded = recorded_model(self.cache, self.settings)
            if recorded is None:
                return None
            plan = recorded.plan
        return image_store(self.cache, plan.image_cache_key, self.settings.max_megapixels)
