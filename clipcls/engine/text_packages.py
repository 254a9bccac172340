"""The Python packages a model's text side needs beyond clipcls's own: a Hugging Face text
tower or tokenizer (the multilingual models, SigLIP) runs through `transformers`. Checked
before a load, so a missing package is one line, not a download that ends in a traceback."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from clipcls.errors import ModelLoadError

HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"


def _model_config(name: str) -> dict[str, Any] | None:
    """The architecture config open_clip builds `name` from, or None where only a download
    would tell (hf-hub:) or the folder's config is unreadable (open_clip then says why)."""
    if name.startswith(HF_HUB):
        return None
    if name.startswith(LOCAL_DIR):
        try:
            text = (Path(name[len(LOCAL_DIR) :]) / "open_clip_config.json").read_text("utf-8")
            config = json.loads(text).get("model_cfg")
        except (OSError, ValueError, AttributeError):
            return None
        return config if isinstance(config, dict) else None
    import open_clip

    config = open_clip.get_model_config(name)
    return dict(config) if config else None


def check_text_packages(name: str) -> None:
    """Refuse, naming the pip command, a model whose text side needs transformers when it is
    not installed (open_clip would fail only after downloading the weights)."""
    text_cfg = (_model_config(name) or {}).get("text_cfg")
    if not isinstance(text_cfg, dict) or importlib.util.find_spec("transformers") is not None:
        return
    tower, tokenizer = text_cfg.get("hf_model_name"), text_cfg.get("hf_tokenizer_name")
    if not (tower or tokenizer):
        return
    parts = "text tower and tokenizer" if tower else "tokenizer"
    repo = tower or tokenizer
    raise ModelLoadError(
        f"{name} needs the transformers package for its {parts} (Hugging Face's {repo}), and "
        "it is not installed: pip install transformers"
    )
