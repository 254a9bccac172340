"""The saved-embeddings backend: image embeddings from a label output written with
--save-embeddings (no image is read), the text side from the local model through the cache
(a run whose prompts are all cached loads no model at all)."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from clipcls.backends.base import BackendConfig, BaseBackend, Expected, ImageStore, Scaled
from clipcls.backends.local import LocalBackend
from clipcls.classify import Prediction
from clipcls.digests import short_identity
from clipcls.errors import UsageError
from clipcls.output.saved import SavedEmbeddings, SavedImage, read_saved
from clipcls.pathtext import clean_text, path_key
from clipcls.pipeline import ModelInfo
from clipcls.settings import ModelSettings, model_id

EMBED_CHUNK = 256  # paths looked up at once; those the file lacks are embedded together


def check_same_model(
    saved: SavedEmbeddings, settings: ModelSettings, key: str | None, asked: bool = True
) -> bool:
    """Refuse embeddings another model made: by the weights' identity where the file's setup
    record and --model both tell it, else by name where --model names its weights. False where
    neither could tell (a default tag): then the loaded model's name decides. asked: whether
    --model named the model (else the file's rows did)."""
    from clipcls.engine.sources import named_model_id

    where = clean_text(str(saved.source))
    if saved.model_key is not None and key is not None:
        if saved.model_key != key:
            made = f"{where} holds embeddings of {saved.model or 'another model'}"
            was, now = short_identity(saved.model_key), short_identity(key)
            if not asked:  # the model it records, its weights changed since (or not its own)
                raise UsageError(f"{made} ({was}), and that model's weights are now others ({now})")
            raise UsageError(f"{made} ({was}), not of --model {settings.model} ({now})")
        return True
    named = named_model_id(settings)
    if named is not None:
        refuse_other(saved, model_id(*named), settings.model)
    return named is not None


def refuse_other(saved: SavedEmbeddings, current: str, asked: str) -> None:
    """Refuse the file if its rows record another model than current (--model asked)."""
    if saved.model and saved.model != current:
        named = asked if asked == current else f"{asked} ({current})"
        raise UsageError(
            f"{clean_text(str(saved.source))} holds embeddings of {saved.model}, not of "
            f"--model {named}"
        )


def _from_here(saved: SavedEmbeddings) -> SavedEmbeddings:
    """saved, its model's relative folder (local-dir:) or weights file (ARCH:FILE) taken from
    the folder the saving run started in, as its rows' paths are: from any other folder they
    were looked for here, and the model the file names was refused as another."""
    from clipcls.engine.sources import LOCAL_DIR, schema_source

    if saved.model.startswith(LOCAL_DIR):
        head, where = LOCAL_DIR, saved.model.removeprefix(LOCAL_DIR)
    elif schema_source(saved.model) is None:
        arch, colon, where = saved.model.partition(":")
        head = arch + colon
    else:
        return saved
    if saved.cwd is None or not where or os.path.isabs(os.path.expanduser(where)):
        return saved
    moved = os.path.join(saved.cwd, where)
    if head != LOCAL_DIR and not os.path.isfile(moved):
        return saved  # a pretrained tag (ARCH:TAG), as open_clip names weights
    return dataclasses.replace(saved, model=head + moved)


def _with_file_model(config: BackendConfig, saved: SavedEmbeddings) -> BackendConfig:
    """config, with the model the file's rows record where neither --model nor --pretrained
    was given: the default model would only be refused as another model (after a download)."""
    if config.asked_model is not None or config.settings.pretrained is not None:
        return config
    if not saved.model:
        return config
    settings = dataclasses.replace(config.settings, model=saved.model)
    return dataclasses.replace(config, settings=settings)


class SavedEmbeddingsBackend(BaseBackend):
    """Predictions from the embeddings a label run saved (config.embeddings), scored with the
    labels' text side of the local model; opening it reads the file and checks its model."""

    name = "embeddings"

    def __init__(self, config: BackendConfig) -> None:
        if config.embeddings is None:
            raise UsageError("the embeddings backend needs a file (--from-embeddings)")
        self.saved = _from_here(read_saved(Path(config.embeddings)))
        config = _with_file_model(config, self.saved)
        super().__init__(config)
        self.text = LocalBackend(config)  # the text tower, or the cache standing in for it
        asked = config.asked_model is not None or config.settings.pretrained is not None
        self.checked = check_same_model(self.saved, config.settings, self.text.weights, asked)
        self.text_needed = True  # False once a start said nothing will be asked of it
        self.images = self.saved.by_key()
        self.extra: dict[str, str] = {}  # path key -> path of images the model embeds here
        self.started = False

    @property
    def paths(self) -> list[str]:
        """The files the saved run labeled, in its order."""
        return [image.path for image in self.saved.images]

    @property
    def weights(self) -> str | None:
        return self.text.weights

    @property
    def model_id(self) -> str:
        if not self.text_needed:  # checked against the model asked when the file was read
            return self.saved.model or self.config.settings.model
        return self.text.model_id

    @property
    def info(self) -> ModelInfo:
        return self.text.info

    def start(self, expected: Expected | None = None) -> None:
        """Start the text side: from the cache alone when it holds every expected prompt (no
        image is asked of it: the file has them), else by loading the model."""
        if self.started:
            return
        if expected is not None and expected.paths is not None:
            self._also_embed(expected.paths())
        # Checked, or nothing to check by loading (the file records no model): a dedupe, or
        # similar to a saved image, asks no text, and loads no model.
        nothing_asked = expected is not None and not expected.labels and not self.extra
        if (self.checked or not self.saved.model) and nothing_asked:
            self.text_needed = False
            self.started = True
            return
        if expected is not None:
            extra = tuple(self.extra.values())  # no input is asked of it: the file has them
            expected = Expected(expected.labels, expected.template_sets, paths=lambda: extra)
        self.text.start(expected)
        self.started = True
        if not self.checked:
            refuse_other(self.saved, self.text.model_id, self.config.settings.model)

    def _find(self, path: Path | str) -> SavedImage:
        """The file's row, or an error saying the saved file has none for it."""
        found = self.images.get(path_key(str(path)))
        if found is not None:
            return SavedImage(str(path), found.embedding, found.error)
        where = clean_text(str(self.saved.source))
        return SavedImage(str(path), error=f"{clean_text(str(path))} has no embedding in {where}")

    def _also_embed(self, paths: Iterable[Path | str]) -> None:
        """Images the saved file lacks that embed_images must answer (a support set's
        examples): the local model embeds them, from the cache where it holds them."""
        for path in paths:
            key = path_key(str(path))
            if key not in self.images:
                self.extra[key] = str(path)

    @property
    def text_model(self) -> Scaled:
        return self.text

    @property
    def batch_size(self) -> int:
        return self.text.batch_size

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        iterator = iter(paths)
        while chunk := list(itertools.islice(iterator, EMBED_CHUNK)):
            extra = [p for p in chunk if path_key(str(p)) in self.extra]
            computed = {str(p.path): p for p in self.text.embed_images(extra)} if extra else {}
            for path in chunk:
                if str(path) in computed:
                    yield computed[str(path)]
                    continue
                image = self._find(path)
                yield Prediction(image.path, error=image.error, embedding=image.embedding)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.text.loaded or self.config.quiet:
            return self._same_width(self.text.embed_texts(texts))
        # a status while the model computes them, as a local run embeds its prompts
        with self.config.hooks.status(f"embedding {len(texts)} prompts"):
            return self._same_width(self.text.embed_texts(texts))

    def _same_width(self, texts: np.ndarray) -> np.ndarray:
        """texts, if as wide as the file's image embeddings (else the scorer's numpy error):
        a file whose every row was cut to one width, or a model whose width changed."""
        width = self.saved.width
        if len(texts) and width is not None and texts.shape[1] != width:
            raise UsageError(
                f"{clean_text(str(self.saved.source))} holds embeddings of {width} numbers, "
                f"the model {self.text.model_id} makes {texts.shape[1]}"
            )
        return texts

    @property
    def image_store(self) -> ImageStore | None:
        return None  # the saved file holds the embeddings: nothing to store
