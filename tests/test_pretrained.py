"""Real pretrained weights (tier c): run only where the default weights are already cached."""

from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES

from clipcls.classify import Classifier
from clipcls.engine.catalog import catalog
from clipcls.settings import ModelSettings

# Read before the autouse fixture points the cache at a temp folder.
USER_CACHE = ModelSettings().resolved_cache_dir()


def default_weights_cached() -> bool:
    settings = ModelSettings(cache_dir=USER_CACHE)
    return any(entry.is_default and entry.cached for entry in catalog(settings, "ViT-B-32"))


pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(not default_weights_cached(), reason=f"default weights not in {USER_CACHE}"),
]


def test_default_model_names_the_sample_photos() -> None:
    labels = ["cat", "cup of coffee", "rocket launch", "astronaut", "coins", "flower"]
    settings = ModelSettings(cache_dir=USER_CACHE, offline=True)
    classifier = Classifier.load(labels, "openai", settings)
    expected = {
        "chelsea.png": "cat",
        "coffee.png": "cup of coffee",
        "rocket.jpg": "rocket launch",
        "astronaut.png": "astronaut",
        "coins.png": "coins",
        "flower.jpg": "flower",
    }
    paths = [SAMPLE_IMAGES / name for name in expected]
    got = {Path(p.path).name: p.top.label for p in classifier.classify_paths(paths) if p.top}
    assert got == expected
