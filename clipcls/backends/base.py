"""The seam between the runs and where embeddings come from: one Backend protocol (this
process, a Ray cluster, a `clipcls serve` server, a file of saved embeddings), a base with
what they share, what opening one takes, and the registry that builds one by name, importing
its module only when it is asked for."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import Advance, Prediction
from clipcls.errors import UsageError
from clipcls.gathered import Embedded, gather
from clipcls.labels import Label
from clipcls.pipeline import ModelInfo
from clipcls.prompts import TemplateSet
from clipcls.settings import ModelSettings


def _silent(text: str) -> None:
    return None


def _no_status(text: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _no_advance(done: int) -> None:
    return None


def _no_progress(text: str, total: int) -> AbstractContextManager[Advance]:
    return contextlib.nullcontext(lambda done: None)


@dataclass(frozen=True)
class Hooks:
    """How a backend speaks while it works: the caller's notice and warning lines (the library
    never prints), a status context shown around slow steps (loading the model), and a counted
    one, progress(what, total), whose context yields the function told how many more are done
    (embedding the prompts a run lacks: 80,000 take minutes on a CPU)."""

    notice: Callable[[str], None] = _silent
    warn: Callable[[str], None] = _silent
    status: Callable[[str], AbstractContextManager[Any]] = _no_status
    progress: Callable[[str, int], AbstractContextManager[Advance]] = _no_progress
    tip: Callable[[str], None] = _silent  # advice once per model: the CLI shows it on a terminal


@dataclass(frozen=True)
class BackendConfig:
    """Everything a backend may need to open; each implementation reads its own part."""

    settings: ModelSettings = field(default_factory=ModelSettings)
    # The embedding cache, or a function that opens it when first needed (None: no cache).
    cache: EmbeddingCache | Callable[[], EmbeddingCache | None] | None = None
    batch_size: int | None = None  # images per batch (per actor call on Ray)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a local Ray for the run
    ray_actors: int | None = None
    server: str | None = None  # a `clipcls serve` URL
    embeddings: Path | None = None  # a label output written with --save-embeddings
    # The model the user named (None: a default): a server must run it, and so (device, ...);
    # a local run with a default model names another that the cache holds the files for.
    asked_model: str | None = None
    server_options: Mapping[str, Any] = field(default_factory=dict)
    quiet: bool = False  # no notices (warnings still go to hooks.warn)
    hooks: Hooks = field(default_factory=Hooks)


@dataclass(frozen=True)
class Expected:
    """What a run will ask of a backend, said before it starts: the labels, every template set
    it will score with, and (a function giving) the files it will see; a local backend answers
    from its cache alone, without loading the model, when the cache holds all of it."""

    labels: tuple[Label, ...]
    template_sets: tuple[TemplateSet, ...]
    paths: Callable[[], Iterable[Path | str]] | None = None
    # A file the cache lacks but that cannot be read needs no model either (evaluate's rule).
    unreadable_ok: bool = False


@dataclass(frozen=True)
class ImageStore:
    """Where derived files of a backend's image embeddings may be kept (a search's stored
    matrix): its cache folder, and a key naming the model and input rules they are of."""

    folder: Path
    key: str


class Backend(Protocol):
    """An embedding source for one model: a label, predict, evaluate or search run asks it for
    image and text embeddings, and scores them itself (clipcls.scoring).

    Opening one is cheap (a server is asked what it runs; nothing loads); `start` loads or
    joins what it needs, once; the other methods start it if it has not been started.
    """

    name: str  # its registry name

    @property
    def weights(self) -> str | None:
        """The weights' identity (their digest for files), known before anything loads."""

    @property
    def known_model(self) -> str | None:
        """The model id where it is known before `start` (a server says what it runs when it
        is opened); None where only starting tells."""

    @property
    def served_by(self) -> str | None:
        """The server whose answers these are, its URL as client.wire.base_url writes it;
        None where this machine computes them."""

    @property
    def model_id(self) -> str:
        """The model as rows record it (`ARCH:TAG`, or its hf-hub:/local-dir: name)."""

    @property
    def info(self) -> ModelInfo:
        """The model and where it runs."""

    @property
    def logit_scale(self) -> float:
        """How the model scales a cosine into a logit."""

    @property
    def logit_bias(self) -> float | None:
        """The bias added to a logit (SigLIP-family models), else None."""

    @property
    def batch_size(self) -> int:
        """Images per batch as a local run embeds them: embeddings are scored so many at a
        time, whoever embedded them, so that the same matrix products give the same bits."""

    @property
    def image_store(self) -> ImageStore | None:
        """Where files derived from its cached image embeddings may be kept, known before
        `start` where it can be (a local model an earlier run recorded); None where they are
        not cached here."""

    def start(self, expected: Expected | None = None) -> None:
        """Load the model (or join the cluster); from the cache alone where expected allows."""

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """One Prediction per path with its image embedding (no scores), or its error; in
        input order except on Ray (the order they finish). Lazy in the paths."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings, (n_texts, dim), each distinct text computed once."""

    def embed_matrix(
        self,
        paths: Sequence[Path | str],
        advance: Advance = _no_advance,
        dtype: type[np.floating[Any]] = np.float32,
    ) -> Embedded:
        """Every path embedded, gathered into one matrix of dtype in input order."""


class Scaled(Protocol):
    """What scales a model's cosines into logits: its encoder, or the backend whose text tower
    a backend borrows."""

    @property
    def logit_scale(self) -> float: ...

    @property
    def logit_bias(self) -> float | None: ...


class BaseBackend:
    """What every backend shares: its config, the embedding cache opened on first use, and
    embed_matrix over its own embed_images; an implementation writes what differs."""

    name = ""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._cache: EmbeddingCache | None = None

    @property
    def cache(self) -> EmbeddingCache | None:
        """The embedding cache, opened on first use (a run with nothing to do opens none)."""
        if self._cache is None:
            self._cache = opened_cache(self.config.cache)
        return self._cache

    @property
    def known_model(self) -> str | None:
        return None  # known on start

    @property
    def served_by(self) -> str | None:
        return None

    @property
    def text_model(self) -> Scaled:
        """The model whose text tower this backend scores with (started if need be)."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        return self.text_model.logit_scale

    @property
    def logit_bias(self) -> float | None:
        return self.text_model.logit_bias

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        raise NotImplementedError

    def embed_matrix(
        self,
        paths: Sequence[Path | str],
        advance: Advance = _no_advance,
        dtype: type[np.floating[Any]] = np.float32,
    ) -> Embedded:
        """Every path through embed_images (Ray answers in the order it finishes), gathered
        in input order into one matrix of dtype; advance is told of each one done."""
        return gather(self.embed_images(paths), paths, advance, dtype)


# name -> "module:Class"; the module is imported only when its backend is opened, so that a
# run on a server never imports torch and a local run never imports Ray.
BACKENDS: dict[str, str] = {
    "local": "clipcls.backends.local:LocalBackend",
    "ray": "clipcls.backends.ray:RayBackend",
    "server": "clipcls.backends.server:ServerBackend",
    "embeddings": "clipcls.backends.saved:SavedEmbeddingsBackend",
}


def open_backend(name: str, config: BackendConfig) -> Backend:
    """The backend registered under name, opened with config."""
    if name not in BACKENDS:
        raise UsageError(f"no backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module, _, attribute = BACKENDS[name].partition(":")
    backend: Backend = getattr(importlib.import_module(module), attribute)(config)
    return backend


def opened_cache(
    source: EmbeddingCache | Callable[[], EmbeddingCache | None] | None,
) -> EmbeddingCache | None:
    """The cache a config names: itself, or what its opening function returns."""
    return source() if callable(source) else source


def image_store(
    cache: EmbeddingCache | None, image_key: str | None, max_megapixels: float
) -> ImageStore | None:
    """The store beside a cache for images keyed image_key and checked at max_megapixels."""
    if cache is None or image_key is None or cache.failure is not None:
        return None
    return ImageStore(cache.path.parent, f"{image_key}\n{max_megapixels}")


def backend_name(server: str | None, engine: str, embeddings: Path | None = None) -> str:
    """The backend a command's options choose: saved embeddings or a server if one is given
    (not both: UsageError, as with --engine ray), else --engine."""
    if embeddings is not None and (server is not None or engine != "local"):
        other = "--server" if server is not None else f"--engine {engine}"
        raise UsageError(f"--from-embeddings and {other}: give one or the other")
    if embeddings is not None:
        return "embeddings"
    return "server" if server is not None else engine
