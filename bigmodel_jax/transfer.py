"""Weights that come from another run or another library: a trained workdir loaded for inference
(`load_trained`: sample, embed), and `init_from`, which starts a training run from a workdir of
ours or a Hugging Face directory.

init_from, step by step (the trainer calls these before anything compiles):
1. `source_model`: the source's model section (the config in its newest checkpoint, or its
   config.json mapped to ours), after checking it is a model of the task's family.
2. `apply_source_architecture`: the source fixes the architecture (`ARCH_KEYS` of the family). A
   value the user set on the command line that disagrees is an error naming both; a value that
   only came from the config file is replaced, and every replacement is logged in one table.
3. `source_params` + the task's `adapt_source` + `transfer_params`: every parameter whose path and
   shape the source has is taken from it (the encoder of a finetuning model, `bert/...`); the
   rest (a new head) keep their fresh init. Both sides are logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Collection

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from bigmodel_jax import checkpoint, decoder_sources, hf, hf_t5, pretrained, tasks
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models import audio, bert, encdec, gpt, lora, vit
from bigmodel_jax.models.attention import cudnn_missing

log = logging.getLogger(__name__)

ARCH_KEYS = {"gpt": gpt.ARCH_KEYS, "bert": bert.ARCH_KEYS, "vit": vit.ARCH_KEYS, "t5": encdec.ARCH_KEYS,
             "audio": audio.ARCH_KEYS}
NAMES = {"gpt": "GPT", "bert": "BERT", "vit": "ViT", "t5": "T5", "audio": "audio encoder"}
HF_CONFIGS = {"bert": hf.bert_config, "vit": hf.vit_config, "t5": hf_t5.t5_config}  # families that start from HF


def path_key(path) -> str:
    """'bert/blocks/0/attn/query/kernel' for a pytree path: how init_from matches parameters."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flat_params(tree: Any) -> dict[str, Any]:
    """A params tree as {path_key: leaf}."""
    return {path_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_trained(workdir: str | Path, which: str = "latest", dtype: str | None = None):
    """(model, config, step) from a workdir's newest `latest` or `best` checkpoint, whatever its
    task (inference, and `init_from` a workdir)."""
    directory = Path(workdir) / ("best" if which == "best" else "checkpoints")
    meta = checkpoint.read_meta(directory)
    if meta is None:
        raise FileNotFoundError(f"no checkpoint under {directory}; train first: "
                                f"python -m bigmodel_jax.train --config ... --workdir {workdir}")
    cfg = ml_collections.ConfigDict(json.loads(meta["config"]))
    if cfg.task not in tasks.TASKS:
        raise ValueError(f"{directory}: unknown task {cfg.task!r} in its checkpoint; valid: {sorted(tasks.TASKS)}")
    if dtype:
        cfg.model.dtype = dtype
    if cfg.model.get("attention_impl") == "cudnn" and cudnn_missing(cfg.model.dtype):
        cfg.model.attention_impl = "xla"  # trained with cuDNN's kernel, used where it cannot run: the same math
    graphdef, abstract_params, _ = tasks.abstract_model(cfg)
    step, params, _, _ = checkpoint.restore(directory, abstract_params)
    return nnx.merge(graphdef, params), cfg, step


def source_model(init_from: str, family: str) -> dict:
    """The model section of an init_from source: a workdir of ours (the config of its newest
    checkpoint) or a Hugging Face directory (config.json, for the families in HF_CONFIGS), which
    must hold a model of `family`."""
    want = NAMES[family]
    if decoder_sources.is_decoder(init_from):
        if family != "gpt":
            raise ConfigError("init_from", init_from, f"a pretrained decoder (GPT-2 / Llama), not a {want}")
        try:
            return decoder_sources.model_config(init_from)
        except (OSError, ValueError) as e:
            raise ConfigError("init_from", init_from, f"an unreadable pretrained decoder: {e}") from None
    try:
        src = pretrained.resolve(init_from)
    except FileNotFoundError as e:
        raise ConfigError("init_from", init_from, str(e)) from None
    if (src / "config.json").is_file():
        if family not in HF_CONFIGS:
            raise ConfigError("init_from", init_from, f"a workdir of ours with checkpoints/, or (a GPT) a "
                              f"GPT-2 / Llama directory, a .gguf file or 'smollm2': a {want} starts from no "
                              "other Hugging Face directory")
        try:
            return dict(HF_CONFIGS[family](json.loads((src / "config.json").read_text())))
        except ValueError as e:
            raise ConfigError("init_from", init_from, f"not a {want} directory: {e}") from None
    meta = checkpoint.read_meta(src / "checkpoints") if (src / "checkpoints").is_dir() else None
    if meta is None:
        hf_kind = (f"a Hugging Face {want} directory (config.json + model.safetensors) or "
                   if family in HF_CONFIGS else "")
        raise ConfigError("init_from", init_from, f"{hf_kind}a workdir of ours with checkpoints; {src} is neither")
    saved = json.loads(meta["config"])
    saved_family = tasks.TASKS[saved["task"]].FAMILY if saved["task"] in tasks.TASKS else None
    if saved_family != family:
        raise ConfigError("init_from", init_from, f"its checkpoints are of task {saved['task']!r}, not a {want}")
    return saved["model"]


def apply_source_architecture(cfg: ml_collections.ConfigDict, user_set: Collection[str] = ()
                              ) -> ml_collections.ConfigDict:
    """A copy of cfg whose architecture is the init_from source's. user_set: the keys the user set
    on the command line ("model.num_layers", ...); one of them that disagrees with the source is a
    ConfigError, since a run cannot have both. Without init_from, cfg itself."""
    if not cfg.init_from:
        return cfg
    family = tasks.get(cfg.task).FAMILY
    source = source_model(cfg.init_from, family)
    keys = [k for k in ARCH_KEYS[family] if k in source]
    for k in keys:
        if f"model.{k}" in user_set and cfg.model.get(k) != source[k]:
            raise ConfigError(f"model.{k}", cfg.model[k], f"init_from {cfg.init_from} has {k}={source[k]!r}, and a "
                              "model keeps the architecture it starts from: drop the override or use another init_from")
    changed = {k: (cfg.model.get(k), source[k]) for k in keys if cfg.model.get(k) != source[k]}
    out = ml_collections.ConfigDict(cfg.to_dict())
    for k in keys:
        out.model[k] = source[k]
    if changed:
        width = max(len(k) for k in changed)
        rows = "\n".join(f"  model.{k:<{width}}  {old!r:>12} -> {new!r}" for k, (old, new) in changed.items())
        log.info("init_from %s fixes the architecture; config file values replaced (config -> source):\n%s",
                 cfg.init_from, rows)
    return out


def source_params(init_from: str) -> dict[str, Any]:
    """Params to start from, flat {path: array}: a Hugging Face BERT, ViT or T5 directory (config.json +
    model.safetensors; "minilm" = the packaged one), a pretrained decoder (decoder_sources: GPT-2 /
    Llama directories, GGUF files, "smollm2") or a workdir of ours (its newest checkpoint, whatever
    its task)."""
    if decoder_sources.is_decoder(init_from):
        model, _ = decoder_sources.load(init_from)
        return flat_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    path = pretrained.resolve(init_from)
    if (path / "config.json").is_file():
        return flat_params(hf.params_from_dir(path)[1])
    try:
        model, _, _ = load_trained(path)
    except FileNotFoundError:
        raise ConfigError("init_from", init_from, "a workdir with checkpoints/ inside, or a Hugging Face "
                          "directory with config.json + model.safetensors") from None
    return flat_params(nnx.to_pure_dict(nnx.state(lora.merge(model), nnx.Param)))  # adapters folded in


def transfer_params(params: Any, param_sh: Any, source: dict[str, Any], init_from: str) -> Any:
    """Every parameter whose path and shape the source has is taken from it; the rest (a new
    finetuning head) keep their fresh init. Both sides are logged; a shape clash is an error."""
    flat_sh = flat_params(param_sh)
    taken, new = [], []

    def pick(path, leaf):
        key = path_key(path)
        if key not in source:
            new.append(key)
            return leaf
        if tuple(source[key].shape) != tuple(leaf.shape):
            raise ConfigError("init_from", init_from, f"its tensor {key} has shape {source[key].shape}, "
                              f"the model's is {leaf.shape}; the model section must match the source")
        taken.append(key)
        return jax.device_put(jnp.asarray(source[key], leaf.dtype), flat_sh[key])

    params = jax.tree_util.tree_map_with_path(pick, params)
    if not taken:
        raise ConfigError("init_from", init_from, "shares no parameter with this model")
    unused = sorted(set(source) - set(taken))
    adapters = [k for k in new if "/lora/" in k]
    fresh = [k for k in new if "/lora/" not in k] + ([f"{len(adapters)} LoRA adapter tensors"] if adapters else [])
    log.info("initialized %d tensors from %s; new (fresh init): %s; not used: %s", len(taken), init_from,
             fresh or "none", unused or "none")
    return params
