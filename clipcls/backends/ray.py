"""The Ray backend: images embedded by an actor pool on a Ray cluster (each actor loads the
model once); the run scores them here, with prompts embedded by the model in this process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from clipcls.backends.base import BackendConfig, BaseBackend, Expected, ImageStore, Scaled
from clipcls.backends.local import LocalBackend
from clipcls.classify import Prediction
from clipcls.pipeline import ModelInfo
from clipcls.settings import model_id


class RayBackend(BaseBackend):
    """An actor pool on the cluster at config.ray_address ($RAY_ADDRESS, else a local Ray)."""

    name = "ray"

    def __init__(self, config: BackendConfig) -> None:
        from dataclasses import replace

        from clipcls.engine.runtimes import choose_runtime

        super().__init__(config)
        # Resolved here, so every node runs what this one chose (auto looks in a local cache).
        self.settings = replace(config.settings, runtime=choose_runtime(config.settings))
        self._named: tuple[str, str | None] | None = None
        self._joined = False
        self._text_tower: LocalBackend | None = None  # loaded only to score embeddings here
        self._texts: Expected | None = None  # the prompts a run said it will ask

    @property
    def weights(self) -> str | None:
        from clipcls.engine.sources import model_identity

        return model_identity(self.settings).key

    @property
    def named(self) -> tuple[str, str | None]:
        """(model, pretrained) as the actors will load them, read without loading weights."""
        if self._named is None:
            from clipcls.engine.sources import check_model_name, named_model_id, resolve_source

            check_model_name(self.settings)
            named = named_model_id(self.settings)
            if named is None and self.settings.runtime == "onnx":  # a prepared export
                from clipcls.engine.runtimes import expected_identity

                arch, _, tag = (expected_identity(self.settings) or "").partition(":")
                named = (arch, tag) if tag else None
            if named is None:  # the default tag: ask open_clip
                source = resolve_source(self.settings)
                named = (source.name, source.pretrained)
            self._named = named
        return self._named

    @property
    def info(self) -> ModelInfo:
        model, pretrained = self.named
        return ModelInfo(model, pretrained, "ray", self.settings.precision.value)

    @property
    def model_id(self) -> str:
        return model_id(*self.named)

    def start(self, expected: Expected | None = None) -> None:
        """Name the model, then join the cluster (once); remember the prompts the run will
        ask, so that a driver whose cache holds them all loads no model of its own."""
        if expected is not None and self._texts is None:
            self._texts = Expected(expected.labels, expected.template_sets, paths=lambda: ())
        if self._joined:
            return
        from clipcls.backends.ray_data import connect

        _ = self.named
        connect(self.config.ray_address)
        self._joined = True

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """The paths' embeddings as the actors finish them (not in input order)."""
        from clipcls.backends.ray_data import embed_on_ray

        self.start()
        config = self.config
        use_cache = config.cache is not None
        yield from embed_on_ray(
            paths, self.settings, config.batch_size, config.ray_actors, use_cache
        )

    @property
    def text_tower(self) -> LocalBackend:
        """The model in this process, for prompts only: loaded on first use, unless the
        cache holds every prompt the run said it will ask."""
        if self._text_tower is None:
            self._text_tower = LocalBackend(self.config)
            self._text_tower.start(self._texts)
        return self._text_tower

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_tower.embed_texts(texts)

    @property
    def text_model(self) -> Scaled:
        return self.text_tower

    @property
    def batch_size(self) -> int:
        return self.text_tower.batch_size

    @property
    def image_store(self) -> ImageStore | None:
        return None  # the actors embed and cache apart: each search asks them
