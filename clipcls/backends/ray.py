"""The Ray backend: images embedded and scored by an actor pool on a Ray cluster (each actor
loads the model once); prompts for scoring embeddings here use the model in this process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from clipcls.backends.base import BackendConfig, Expected, ImageStore
from clipcls.backends.local import LocalBackend
from clipcls.classify import Prediction, Scorer
from clipcls.labels import Label
from clipcls.pipeline import ModelInfo
from clipcls.prompts import TemplateSet
from clipcls.settings import model_id


class RayBackend:
    """An actor pool on the cluster at config.ray_address ($RAY_ADDRESS, else a local Ray)."""

    name = "ray"

    def __init__(self, config: BackendConfig) -> None:
        self.config, self.settings = config, config.settings
        self._named: tuple[str, str | None] | None = None
        self._joined = False
        self._text_tower: LocalBackend | None = None  # loaded only to score embeddings here

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
    def known_model(self) -> str | None:
        return None  # named on start, from the model's config

    @property
    def model_id(self) -> str:
        return model_id(*self.named)

    def start(self, expected: Expected | None = None) -> None:
        """Name the model, then join the cluster (once)."""
        if self._joined:
            return
        from clipcls.backends.ray_data import connect

        _ = self.named
        connect(self.config.ray_address)
        self._joined = True

    def predict(
        self,
        paths: Iterable[Path | str],
        labels: Sequence[Label],
        templates: TemplateSet,
        embeddings: bool = False,
    ) -> Iterator[Prediction]:
        from clipcls.backends.ray_data import classify_on_ray

        self.start()
        config = self.config
        return classify_on_ray(
            paths,
            self.settings,
            tuple(labels),
            templates,
            batch_size=config.batch_size,
            actors=config.ray_actors,
            use_cache=config.cache is not None,
            embeddings=embeddings,
        )

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        from clipcls.backends.ray_data import embed_on_ray

        self.start()
        given = [str(path) for path in paths]
        config = self.config
        with config.hooks.status(f"embedding {len(given)} images on Ray"):
            found = embed_on_ray(
                given, self.settings, config.batch_size, config.ray_actors, config.cache is not None
            )
        for path in given:
            vector, error = found.get(path, (None, "not embedded"))
            yield (
                Prediction(path, error=error or "not embedded")
                if vector is None
                else (Prediction(path, embedding=vector))
            )

    @property
    def text_tower(self) -> LocalBackend:
        """The model in this process, loaded on first use, for prompts only."""
        if self._text_tower is None:
            self._text_tower = LocalBackend(self.config)
            self._text_tower.start()
        return self._text_tower

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_tower.embed_texts(texts)

    @property
    def image_store(self) -> ImageStore | None:
        return None  # the actors embed and cache apart: each search asks them

    def scorer(self, labels: Sequence[Label], templates: TemplateSet) -> Scorer:
        return self.text_tower.scorer(labels, templates)
