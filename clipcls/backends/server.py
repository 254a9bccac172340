"""The server backend: a warm `clipcls serve` server embeds and scores, this side sends the
files (or their paths, where it shares the server's file system); nothing here loads a model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.backends.base import BackendConfig, Expected, Hooks
from clipcls.classify import Prediction, Scorer, encode_prompts, label_weights
from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.pipeline import ModelInfo
from clipcls.prompts import TemplateSet, single_templates
from clipcls.server.client import RemoteClassifier, RemoteEncoder, ServerClient
from clipcls.settings import model_id

# What an embedding-only request asks when the run named no labels: the server scores every
# image it embeds, so it needs one label; the scores are dropped.
PROBE = (Label.plain("image"),)


def connect_server(
    url: str,
    asked: str | None,
    options: Mapping[str, Any],
    hooks: Hooks,
    quiet: bool = False,
) -> ServerClient:
    """The `clipcls serve` server at url, refused if it runs another model than asked, or
    otherwise than the options given explicitly (device, precision, ...) ask."""
    from clipcls.server.expect import setting_conflict

    client = ServerClient(url)
    model, pretrained = client.model
    named = model_id(model, pretrained)
    if asked is not None and asked not in (model, named):
        raise UsageError(f"--model {asked}: the server at {client.url} runs {named}")
    conflict = setting_conflict(client, dict(options))
    if conflict is not None:
        raise UsageError(f"{conflict}; drop the option, or use a server started with it")
    if not quiet:
        facts = client.facts
        where = f"({facts.get('device')}, {facts.get('precision')})"
        hooks.notice(f"model {named} on the server at {client.url} {where}")
    return client


class ServerBackend:
    """The server at config.server; opening it asks what it runs (and waits while it loads)."""

    name = "server"

    def __init__(self, config: BackendConfig) -> None:
        if config.server is None:
            raise UsageError("the server backend needs a URL (--server)")
        self.config = config
        self.client = connect_server(
            config.server, config.asked_model, config.server_options, config.hooks, config.quiet
        )
        self.encoder = RemoteEncoder(self.client)
        self.expected: Expected | None = None

    @property
    def weights(self) -> str | None:
        return self.client.weights

    @property
    def info(self) -> ModelInfo:
        return self.encoder.info

    @property
    def known_model(self) -> str | None:
        return self.model_id  # the server said what it runs when it was opened

    @property
    def model_id(self) -> str:
        return model_id(*self.client.model)

    def start(self, expected: Expected | None = None) -> None:
        """Nothing to load: the server is warm. Embedding-only requests name expected's labels."""
        self.expected = expected

    def _remote(self, labels: Sequence[Label], templates: TemplateSet) -> RemoteClassifier:
        limit = self.config.settings.max_megapixels  # checked here: the server's may be higher
        return RemoteClassifier(self.client, labels, templates, limit)

    def predict(
        self,
        paths: Iterable[Path | str],
        labels: Sequence[Label],
        templates: TemplateSet,
        embeddings: bool = False,
    ) -> Iterator[Prediction]:
        remote = self._remote(labels, templates)
        remote.embeddings = embeddings
        return remote.classify_paths(paths)

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        expected = self.expected
        if expected is not None and expected.template_sets:
            remote = self._remote(expected.labels, expected.template_sets[0])
        else:
            remote = self._remote(PROBE, single_templates(["{}"]))
        remote.embeddings = True
        for prediction in remote.classify_paths(paths):
            yield Prediction(
                prediction.path, error=prediction.error, embedding=prediction.embedding
            )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_prompts(self.encoder, texts)

    def scorer(self, labels: Sequence[Label], templates: TemplateSet) -> Scorer:
        weights = label_weights(self.embed_texts, labels, templates)
        return Scorer(labels, weights, self.encoder.logit_scale, self.encoder.logit_bias)
