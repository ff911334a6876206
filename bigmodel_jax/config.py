"""Loading a config file, applying `--config.a.b=v` overrides, and validating before anything compiles.

Config files are Python files with `get_config(variant: str = "") -> ml_collections.ConfigDict`
(the ml_collections convention; `--config=path:variant` selects a variant). Overrides are parsed
against the type of the field they replace, so a typo or a wrong type fails here, naming the key.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import ml_collections

CHOICES = {
    "task": ("causal_lm", "mlm", "classify", "regress", "tag", "qa", "image_classify"),
    "model.dtype": ("float32", "bfloat16"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.activation": ("gelu", "gelu_tanh", "swiglu"),
    "model.positions": ("learned", "rope"),
    "data.tokenizer": ("char", "bpe"),
    "optim.name": ("adamw", "adam", "sgd"),
    "optim.schedule": ("cosine", "constant"),
    "model.remat": ("none", "full", "dots_saveable"),
    "parallel.mode": ("jit", "pmap"),
}
POSITIVE_INTS = ("model.num_layers", "model.width", "model.num_heads", "model.mlp_dim", "model.max_len",
                 "model.image_size", "model.patch_size",
                 "data.seq_len", "train.num_steps", "train.batch_size", "train.eval_every", "train.eval_batches",
                 "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.grad_accum_steps")

# metric -> True when higher is better; train.eval_metric picks the one that decides "best"
EVAL_METRICS = {"loss": False, "mse": False, "accuracy": True, "f1": True, "exact_match": True}


class ConfigError(ValueError):
    """A bad config value: names the key, the value and what would be valid."""

    def __init__(self, key: str, value: Any, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"config key '{key}' = {value!r} is invalid: {valid}")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """spec is 'path/to/config.py' or 'path/to/config.py:variant'."""
    path, _, variant = spec.partition(":")
    if not Path(path).is_file():
        raise ConfigError("--config", spec, f"no config file at {os.path.abspath(path)}")
    mod_spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    cfg = module.get_config(variant) if variant else module.get_config()
    return cfg


def _lookup(cfg: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    parts = key.split(".")
    node, path = cfg, []
    for part in parts[:-1]:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ConfigError(key, None, f"unknown section '{'.'.join(path + [part])}'; "
                                         f"valid: {sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []}")
        node, path = node[part], path + [part]
    if parts[-1] not in node or isinstance(node[parts[-1]], ml_collections.ConfigDict):
        prefix = ".".join(path)
        valid = sorted(f"{prefix}.{k}" if prefix else k for k, v in node.items()
                       if not isinstance(v, ml_collections.ConfigDict))
        raise ConfigError(key, None, f"unknown key; valid keys here: {valid}")
    return node, parts[-1]


def _parse_value(key: str, text: str, current: Any) -> Any:
    kind = type(current)
    try:
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind in (tuple, list):
            value = ast.literal_eval(text)
            return kind(value if isinstance(value, (tuple, list)) else (value,))
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(key, text, f"expected a {kind.__name__} (current value {current!r})") from None


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """overrides: ['train.num_steps=100', ...] (the text after '--config.')."""
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(key, None, "overrides are written --config.KEY=VALUE")
        node, leaf = _lookup(cfg, key)
        node[leaf] = _parse_value(key, text, node[leaf])
    return cfg


def parse_config_args(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, list[str]]:
    """Pulls `--config FILE[:variant]` and every `--config.KEY=VALUE` out of argv; returns the
    config and the remaining arguments."""
    spec, overrides, rest = None, [], []
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            spec = next(it, None)
        elif arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                body = f"{body}={next(it, '')}"
            overrides.append(body)
        else:
            rest.append(arg)
    if spec is None:
        raise ConfigError("--config", None, "pass --config configs/<experiment>.py")
    return apply_overrides(load_config_file(spec), overrides), rest


def _get(cfg: ml_collections.ConfigDict, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _has(cfg: ml_collections.ConfigDict, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def validate(cfg: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> None:
    """Every check that can fail without compiling anything (the task's own `validate` adds its
    family's). Raises ConfigError."""
    for key, choices in CHOICES.items():
        if _has(cfg, key) and _get(cfg, key) not in choices:
            raise ConfigError(key, _get(cfg, key), f"one of {list(choices)}")
    for key in POSITIVE_INTS:
        if not _has(cfg, key):  # a field of another family's config (GPT vs BERT)
            continue
        value = _get(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(key, value, "a positive integer")
    m = cfg.model
    if "num_heads" in m and m.width % m.num_heads:
        raise ConfigError("model.num_heads", m.num_heads, f"must divide model.width={m.width}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError("model.dropout", m.dropout, "a rate in [0, 1)")
    if cfg.optim.lr <= 0:
        raise ConfigError("optim.lr", cfg.optim.lr, "a positive learning rate")
    if cfg.optim.warmup_steps < 0:
        raise ConfigError("optim.warmup_steps", cfg.optim.warmup_steps, "0 or more steps")
    if cfg.train.eval_metric not in EVAL_METRICS:
        raise ConfigError("train.eval_metric", cfg.train.eval_metric,
                          f"one of {sorted(EVAL_METRICS)} that the task reports")
    if cfg.train.patience < 0:
        raise ConfigError("train.patience", cfg.train.patience, "0 (off) or a positive number of evaluations")

    from bigmodel_jax.train import TASKS  # imported here: the tasks import this module

    task = TASKS[cfg.task]
    if cfg.train.eval_metric not in task.METRICS:
        raise ConfigError("train.eval_metric", cfg.train.eval_metric, f"one of {list(task.METRICS)} for task {cfg.task}")
    task.validate(cfg)

    mesh = mesh_shape(cfg, num_devices)
    if cfg.parallel.mode == "pmap" and mesh["data"] != num_devices:
        raise ConfigError("parallel.mode", "pmap", f"pmap is data parallelism only: set parallel.fsdp=1 and "
                          f"parallel.tensor=1 (now {mesh['fsdp']} and {mesh['tensor']}), or use mode 'jit'")
    batch_shards = mesh["data"] * mesh["fsdp"]
    micro = cfg.train.batch_size // cfg.train.grad_accum_steps
    if cfg.train.batch_size % cfg.train.grad_accum_steps:
        raise ConfigError("train.grad_accum_steps", cfg.train.grad_accum_steps,
                          f"must divide train.batch_size={cfg.train.batch_size}")
    if micro % batch_shards:
        raise ConfigError("train.batch_size", cfg.train.batch_size,
                          f"the micro-batch ({micro} = batch_size / grad_accum_steps) must divide over the "
                          f"{batch_shards} data shards (parallel.data x parallel.fsdp = {mesh['data']} x {mesh['fsdp']})")
    if cfg.train.batch_size % num_processes:
        raise ConfigError("train.batch_size", cfg.train.batch_size, f"must divide over {num_processes} processes")


def mesh_shape(cfg: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
    """Resolves parallel.{data,fsdp,tensor} (one may be -1 = the rest) against the device count."""
    sizes = {k: cfg.parallel[k] for k in ("data", "fsdp", "tensor")}
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1 or any(v == 0 or v < -1 for v in sizes.values()):
        raise ConfigError("parallel", sizes, "positive sizes, at most one of them -1 (= the remaining devices)")
    fixed = 1
    for k, v in sizes.items():
        if v != -1:
            fixed *= v
    if free:
        if num_devices % fixed:
            raise ConfigError(f"parallel.{free[0]}", -1, f"the other axes ({fixed}) must divide {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    if sizes["data"] * sizes["fsdp"] * sizes["tensor"] != num_devices:
        raise ConfigError("parallel", sizes, f"data x fsdp x tensor must equal the {num_devices} devices")
    return sizes
