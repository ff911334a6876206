"""LoRA (Hu et al. 2021): low-rank adapters on the shared Dense layer.

A targeted Dense computes x W + b + (alpha / r) (x A) B, A [in, r] Gaussian, B [r, out] zeros, so a
model with fresh adapters computes exactly what its base does. A and B are `nnx.LoRAParam`s (a
kind of Param: they checkpoint, shard and restore like any other), and `is_adapter` tells the
optimizer which leaves train; the base stays frozen. `merge` folds B A into W for inference and
export, leaving an ordinary model.

model.lora in a config: rank (0 = no adapters), alpha, targets — a regular expression searched in
each Dense's path ('blocks/0/attn/query'), default the attention projections and the MLP;
also_train, the parameters that train in full beside the adapters (default a task's head, which a
finetuning run starts fresh); dropout on the adapters' input in training (it applies where the
layer's caller passes the training rngs: the attention and MLP projections of every family, so
every default target); and base_dtype ("bfloat16": the frozen base stored in bf16, store_frozen).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx, traverse_util

from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.layers import Dense, gathered, matmul

DEFAULT_TARGETS = r"(attn|attention)/(query|key|value|out)$|mlp/(up|gate|down)$"
DEFAULT_ALSO_TRAIN = r"^head/"  # a finetuning task's new head trains in full beside the adapters (as PEFT's)


class Adapter(nnx.Module):
    def __init__(self, d_in: int, d_out: int, axes: tuple[str | None, str | None], rank: int, alpha: float, *,
                 rngs: nnx.Rngs, dropout: float = 0.0):
        # A's init as the paper's (random Gaussian), scaled like a fan-in init so x A stays O(1)
        a = jax.random.normal(rngs.params(), (d_in, rank), jnp.float32) / jnp.sqrt(d_in)
        self.a = nnx.LoRAParam(a, out_sharding=(axes[0], None), eager_sharding=False)
        self.b = nnx.LoRAParam(jnp.zeros((rank, d_out), jnp.float32), out_sharding=(None, axes[1]),
                               eager_sharding=False)
        self.scale = alpha / rank
        self.dropout = nnx.Dropout(dropout)  # on the adapter's input only (the paper's and PEFT's lora_dropout)

    def __call__(self, x: jax.Array, dtype: Any, rngs: nnx.Rngs | None = None) -> jax.Array:
        if rngs is not None and self.dropout.rate > 0:
            x = self.dropout(x, deterministic=False, rngs=rngs)
        return self.scale * matmul(matmul(x, gathered(self.a), dtype), gathered(self.b), dtype)


BASE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.lora.base_dtype -> the frozen base's


def lora_config(rank: int = 0, alpha: float = 16.0, targets: str = DEFAULT_TARGETS,
                also_train: str = DEFAULT_ALSO_TRAIN, dropout: float = 0.0,
                base_dtype: str = "float32") -> ml_collections.ConfigDict:
    """The model.lora section configs carry."""
    return ml_collections.ConfigDict(dict(rank=rank, alpha=alpha, targets=targets, also_train=also_train,
                                          dropout=dropout, base_dtype=base_dtype))


def _path(path: tuple) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def add_adapters(model: nnx.Module, cfg: ml_collections.ConfigDict | None, rngs: nnx.Rngs) -> nnx.Module:
    """Puts an Adapter on every Dense whose path matches cfg.targets (cfg None or rank 0: none).
    A pattern that matches no Dense is a ConfigError naming the paths there are."""
    if cfg is None or not cfg.get("rank", 0):
        return model
    pattern = re.compile(cfg.targets)
    denses = [(_path(p), m) for p, m in nnx.iter_graph(model) if isinstance(m, Dense)]
    chosen = [(p, m) for p, m in denses if pattern.search(p)]
    if not chosen:
        raise ConfigError("model.lora.targets", cfg.targets, "a regular expression searched in the Dense layers' "
                          "paths; this model's are " + ", ".join(p for p, _ in denses[:12])
                          + (" ..." if len(denses) > 12 else ""))
    for _, dense in chosen:
        d_in, d_out = dense.kernel.shape
        dense.lora = Adapter(d_in, d_out, dense.kernel.out_sharding, cfg.rank, cfg.alpha, rngs=rngs,
                             dropout=cfg.get("dropout", 0.0))
    return model


def is_adapter(path: tuple) -> bool:
    """Whether a params-tree path (a pure dict's keys) is an adapter's A or B."""
    keys = [str(getattr(k, "key", k)) for k in path]
    return len(keys) >= 2 and keys[-2] == "lora" and keys[-1] in ("a", "b")


def trainable(cfg: ml_collections.ConfigDict) -> Callable[[tuple], bool] | None:
    """path -> whether a LoRA run trains that parameter (the adapters, and what model.lora.also_train
    matches); None when the run has no adapters and trains everything."""
    if not enabled(cfg):
        return None
    also = re.compile(cfg.model.lora.also_train) if cfg.model.lora.get("also_train") else None
    return lambda path: is_adapter(path) or bool(also and also.search(_path(path)))


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    """Whether a run config asks for adapters (model.lora.rank > 0)."""
    return bool(cfg.model.get("lora", {}).get("rank", 0))


def check(cfg: ml_collections.ConfigDict) -> tuple[str, Any, str] | None:
    """What is wrong with model.lora, as a ConfigError's (key, value, what is valid), or None."""
    lo = cfg.model.get("lora")
    if lo is None:
        return None
    if lo.rank < 0:
        return "model.lora.rank", lo.rank, "0 (no adapters) or a positive rank"
    if lo.rank and lo.alpha <= 0:
        return "model.lora.alpha", lo.alpha, "positive (the adapter's output is scaled by alpha / rank)"
    if lo.get("base_dtype", "float32") not in BASE_DTYPES:
        return "model.lora.base_dtype", lo.base_dtype, f"one of {sorted(BASE_DTYPES)} (how the frozen base is stored)"
    if not 0.0 <= lo.get("dropout", 0.0) < 1.0:
        return "model.lora.dropout", lo.dropout, "a rate in [0, 1) on the adapters' input"
    for key in ("targets", "also_train"):
        try:
            re.compile(lo.get(key, ""))
        except re.error as e:
            return f"model.lora.{key}", lo[key], f"a Python regular expression ({e})"
    return None


def split(params: dict, chosen: Callable[[tuple], bool] = is_adapter) -> tuple[dict, dict]:
    """A pure-dict params tree -> (the leaves `chosen` picks, the rest), flat by path tuple."""
    flat = traverse_util.flatten_dict(params)
    picked = {k: v for k, v in flat.items() if chosen(k)}
    return picked, {k: v for k, v in flat.items() if k not in picked}


def trained_count(cfg: ml_collections.ConfigDict, params: dict) -> int:
    """How many parameters a run trains: all of them, or with adapters those `trainable` picks."""
    chosen = trainable(cfg)
    leaves = jax.tree.leaves(params) if chosen is None else split(params, chosen)[0].values()
    return sum(x.size for x in leaves)


def trained_note(cfg: ml_collections.ConfigDict, params: dict) -> str:
    """For the trainer's model line: how many parameters a LoRA run trains ("" without adapters)."""
    if not enabled(cfg):
        return ""
    return f" ({trained_count(cfg, params):,} trained: the adapters and model.lora.also_train)"


def store_frozen(cfg: ml_collections.ConfigDict, params: dict) -> dict:
    """params (arrays or ShapeDtypeStructs) with the frozen base in model.lora.base_dtype: bf16
    halves the memory of a base that never gets a gradient (the adapters, what also_train picks and
    the optimizer state stay f32). Matmuls cast their weights to the compute dtype either way."""
    chosen = trainable(cfg)
    dtype = BASE_DTYPES[cfg.model.lora.get("base_dtype", "float32")] if chosen is not None else jnp.float32
    if dtype == jnp.float32:
        return params
    train_part, frozen = split(params, chosen)

    def cast(v):
        if isinstance(v, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(v.shape, dtype, sharding=v.sharding)
        return v.astype(dtype)
    return join(train_part, {k: cast(v) for k, v in frozen.items()})


def join(adapters: dict, rest: dict) -> dict:
    return traverse_util.unflatten_dict({**rest, **adapters})


def merged(model: nnx.Module) -> nnx.Module:
    """What an export writes: a merged copy of a model holding adapters (the model itself keeps
    them), else the model as it is. Every Hugging Face exporter goes through it, so an adapted
    model never exports as its bare base."""
    if not any(isinstance(m, Dense) and m.lora is not None for _, m in nnx.iter_graph(model)):
        return model
    return merge(nnx.clone(model))


def merge(model: nnx.Module) -> nnx.Module:
    """W + (alpha / r) A B into each adapted Dense, its adapter removed: an ordinary model that
    computes what the adapted one does (in f32; rounding aside)."""
    for _, dense in list(nnx.iter_graph(model)):
        if isinstance(dense, Dense) and dense.lora is not None:
            ad = dense.lora
            dense.kernel[...] = dense.kernel[...] + ad.scale * (ad.a[...] @ ad.b[...])
            dense.lora = None
    return model
