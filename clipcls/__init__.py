"""clipcls: zero-shot image classification with CLIP, as a library and a command line.

from clipcls import Classifier
classifier = Classifier.load(["cat", "dog", "car"])
for prediction in classifier.classify_paths(["photo.jpg"]):
    print(prediction.path, prediction.top)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clipcls.version import __version__

# Each public name and the module that defines it, imported on first use (PEP 562): a command
# that needs none of them (`clipcls search --server`, `--help`) does not pay for numpy and
# the cache to start.
_HOMES = {
    "EmbeddingCache": "clipcls.cache",
    "Classifier": "clipcls.classify",
    "LabelScore": "clipcls.classify",
    "Prediction": "clipcls.classify",
    "build_text_classifier": "clipcls.classify",
    "ClipclsError": "clipcls.errors",
    "ImageError": "clipcls.errors",
    "ModelLoadError": "clipcls.errors",
    "PromptFileError": "clipcls.errors",
    "UsageError": "clipcls.errors",
    "iter_image_paths": "clipcls.images",
    "load_image": "clipcls.images",
    "Label": "clipcls.labels",
    "parse_labels": "clipcls.labels",
    "read_labels_file": "clipcls.labels",
    "Encoder": "clipcls.pipeline",
    "TemplateSet": "clipcls.prompts",
    "list_template_sets": "clipcls.prompts",
    "load_templates": "clipcls.prompts",
    "Device": "clipcls.settings",
    "ModelSettings": "clipcls.settings",
    "Precision": "clipcls.settings",
}

__all__ = [
    "Classifier",
    "ClipclsError",
    "Device",
    "EmbeddingCache",
    "Encoder",
    "ImageError",
    "Label",
    "LabelScore",
    "ModelLoadError",
    "ModelSettings",
    "Precision",
    "Prediction",
    "PromptFileError",
    "TemplateSet",
    "UsageError",
    "__version__",
    "build_text_classifier",
    "iter_image_paths",
    "list_template_sets",
    "load_image",
    "load_templates",
    "parse_labels",
    "read_labels_file",
]

if TYPE_CHECKING:  # what type checkers and editors see: the names as plain imports
    from clipcls.cache import EmbeddingCache
    from clipcls.classify import Classifier, LabelScore, Prediction, build_text_classifier
    from clipcls.errors import ClipclsError, ImageError, ModelLoadError, PromptFileError, UsageError
    from clipcls.images import iter_image_paths, load_image
    from clipcls.labels import Label, parse_labels, read_labels_file
    from clipcls.pipeline import Encoder
    from clipcls.prompts import TemplateSet, list_template_sets, load_templates
    from clipcls.settings import Device, ModelSettings, Precision


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'clipcls' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
