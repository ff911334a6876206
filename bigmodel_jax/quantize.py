"""Int8 weight-only quantization of any of our models, for inference.

Each Dense kernel [in, out] becomes int8 values with one f32 scale per output channel (the
largest |w| of the column / 127, rounded to nearest: symmetric, no zero point); each Embed table
[V, D] likewise with one scale per row, which is also the output channel of a tied head (x · Eᵀ).
Activations stay in the compute dtype: the int8 values are converted inside the matmul and the
scale is applied to its f32 output, y = (x · q) * s. Norms, biases, an untied GPT head and
position tables stay as they are. LoRA adapters are merged in first.

This saves memory (1 byte per weight instead of 4, plus a scale per channel); whether it saves
time depends on whether XLA fuses the int8 -> float conversion into the dot: benchmarks/quantize.py
measures it (docs/quantization.md has the figures).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models import lora
from bigmodel_jax.models.layers import Dense, Embed, matmul

Array = jax.Array


def int8_per_channel(w: Array, axis: int) -> tuple[Array, Array]:
    """(int8 values, f32 scales) of w, one scale per slice along `axis` (the kept axis)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    scale = jnp.max(jnp.abs(w), axis=reduce) / 127.0
    scale = jnp.where(scale == 0, 1.0, scale).astype(jnp.float32)  # an all-zero channel stays zero
    shape = [1] * w.ndim
    shape[axis] = -1
    q = jnp.clip(jnp.round(w / scale.reshape(shape)), -127, 127).astype(jnp.int8)
    return q, scale


class Int8Dense(nnx.Module):
    """A Dense whose kernel is int8 with a scale per output channel (same call as Dense)."""

    def __init__(self, dense: Dense):
        q, scale = int8_per_channel(dense.kernel[...], axis=1)
        self.kernel = nnx.Param(q)
        self.scale = nnx.Param(scale)
        self.bias = dense.bias
        self.dtype = dense.dtype

    def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
        y = matmul(x, self.kernel[...], self.dtype) * self.scale[...]
        return y if self.bias is None else y + self.bias[...]


class Int8Embed(nnx.Module):
    """An Embed table in int8 with a scale per row (same calls as Embed)."""

    def __init__(self, embed: Embed):
        q, scale = int8_per_channel(embed.embedding[...], axis=0)
        self.embedding = nnx.Param(q)
        self.scale = nnx.Param(scale)

    def __call__(self, ids: Array) -> Array:
        rows = jnp.take(self.embedding[...], ids, axis=0).astype(jnp.float32)
        return rows * jnp.take(self.scale[...], ids)[..., None]

    def attend(self, x: Array, dtype: Any) -> Array:
        return matmul(x, self.embedding[...], dtype, w_transposed=True) * self.scale[...]


def _parent_and_key(model: nnx.Module, path: tuple):
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    return parent, path[-1]


def quantize_int8(model: nnx.Module) -> nnx.Module:
    """A copy of model with every Dense and Embed in int8 (the model itself is left as it is)."""
    model = lora.merged(model)
    model = nnx.clone(model)
    targets = [(p, m) for p, m in nnx.iter_graph(model) if isinstance(m, (Dense, Embed))]
    for path, module in targets:
        parent, key = _parent_and_key(model, path)
        new = Int8Dense(module) if isinstance(module, Dense) else Int8Embed(module)
        if isinstance(key, int):
            parent[key] = new
        else:
            setattr(parent, key, new)
    return model


def weight_bytes(model: nnx.Module) -> int:
    """Bytes of every parameter as stored."""
    return sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
