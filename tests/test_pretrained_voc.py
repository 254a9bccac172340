"""Real weights on VOC2007 (tier c): reproduce CLIP_benchmark's published multi-label anchor.

Runs only where both are at hand: $CLIPCLS_VOC2007_CSV names a `path,labels` CSV of the VOC2007
test set (4,952 images, the 20 classes `;`-joined, paths relative to the CSV), and the
`ViT-B-32-quickgelu` `laion400m_e32` weights are in the user's cache. CLIP_benchmark reports a
zero-shot mAP of 0.763 for them; its class names and templates differ a little from clipcls's
`openai` set, so the check allows two points either way.
"""

import os
from pathlib import Path

import pytest

from clipcls.backends.base import BackendConfig, open_backend
from clipcls.engine.catalog import catalog
from clipcls.evaluation.run import MultiLabelRun, run_evaluation
from clipcls.prompts import load_templates
from clipcls.settings import ModelSettings

USER_CACHE = ModelSettings().resolved_cache_dir()  # read before the fixtures move the cache
VOC = os.environ.get("CLIPCLS_VOC2007_CSV")
ANCHOR = 0.763


def weights_cached() -> bool:
    settings = ModelSettings(cache_dir=USER_CACHE)
    entries = catalog(settings, "ViT-B-32-quickgelu")
    return any(e.pretrained == "laion400m_e32" and e.cached for e in entries)


pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(not VOC, reason="set CLIPCLS_VOC2007_CSV to a VOC2007 path,labels CSV"),
    pytest.mark.skipif(not weights_cached(), reason=f"laion400m_e32 weights not in {USER_CACHE}"),
]


def test_voc2007_multi_label_map_matches_clip_benchmark() -> None:
    settings = ModelSettings(
        "ViT-B-32-quickgelu", "laion400m_e32", cache_dir=USER_CACHE, offline=True
    )
    run = MultiLabelRun.from_csv(Path(str(VOC)), load_templates("openai"))
    [found] = run_evaluation([open_backend("local", BackendConfig(settings))], run)
    assert found.metrics.mean_ap == pytest.approx(ANCHOR, abs=0.02)
