"""clipcls: zero-shot image classification with CLIP, as a library and a command line.

from clipcls import Classifier
classifier = Classifier.load(["cat", "dog", "car"])
for prediction in classifier.classify_paths(["photo.jpg"]):
    print(prediction.path, prediction.top)
"""

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier, LabelScore, Prediction, build_text_classifier
from clipcls.errors import ClipclsError, ImageError, ModelLoadError, PromptFileError, UsageError
from clipcls.images import iter_image_paths, load_image
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.pipeline import Encoder
from clipcls.prompts import TemplateSet, list_template_sets, load_templates
from clipcls.settings import Device, ModelSettings, Precision
from clipcls.version import __version__

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
