"""The primitive layers every family shares: parameters, the one matmul, Dense, Norm, Embed
(attention.py builds attention from them, blocks.py the Transformer block).

Every matmul goes through `matmul`, so the precision policy lives in one place: params are f32,
operands are cast to the compute dtype inside the dot, accumulation is always f32, and a custom
VJP keeps the backward pass in the compute dtype with layouts XLA runs fast (docs/architecture.md
says why, with the measured effect).
Parameters carry *logical* axis names ("embed", "mlp", "heads", "vocab"); `sharding.py` maps them
to mesh axes, so no model file names a mesh axis.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from bigmodel_jax.sharding import constrain

Array = jax.Array
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config.model.dtype -> the compute dtype


def param(key: Array, shape: tuple[int, ...], axes: tuple[str | None, ...], std: float | None = 0.02) -> nnx.Param:
    """An f32 parameter with logical axis names; std=None means ones (norm scales), 0.0 zeros."""
    if std is None:
        value = jnp.ones(shape, jnp.float32)
    elif std == 0.0:
        value = jnp.zeros(shape, jnp.float32)
    else:
        value = std * jax.random.normal(key, shape, jnp.float32)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def gathered(p: nnx.Param) -> Array:
    """A parameter's value as the computation uses it: FSDP's shards of the embed dim gathered
    (ZeRO-3: a layer's weights are all-gathered when it runs and its gradients reduce-scattered
    back), tensor-parallel dims left split. Without this pin XLA sometimes shards activations
    along the embed dim to match a norm scale and then reshuffles them whole."""
    return constrain(p[...], tuple(None if a == "embed" else a for a in p.out_sharding))


# ----------------------------------------------------------------------------- the one matmul
@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: Array, w: Array, w_transposed: bool) -> Array:
    return _matmul_fwd(x, w, w_transposed)[0]


def _matmul_fwd(x, w, w_transposed):
    wc = w.astype(x.dtype)
    contract_w = 1 if w_transposed else 0
    y = jax.lax.dot_general(x, wc, (((x.ndim - 1,), (contract_w,)), ((), ())),
                            preferred_element_type=jnp.float32)
    return y, (x, wc)


def _matmul_bwd(w_transposed, res, g):
    x, wc = res
    g = g.astype(x.dtype)  # keep the backward dots in the compute dtype (bf16 stays bf16)
    # dX = g · Wᵀ, contracting the output dim of W.
    dx = jax.lax.dot_general(g, wc, (((g.ndim - 1,), (0 if w_transposed else 1,)), ((), ())),
                             preferred_element_type=jnp.float32).astype(x.dtype)
    # dW contracts every leading (batch, time) dim at once: XLA transposes one operand and uses
    # its fast dot kernel (a 2-D Xᵀ·dY contracting dim 0 of both runs 3-5x slower on CPU). The
    # operand transposed is the narrower one: transposing a wide activation (the MLP's hidden
    # layer) costs more than the dot itself. The barrier keeps XLA from folding the final .T
    # back into a dim-0 contraction, which its fast path (and bf16 x bf16 -> f32) lacks.
    lead = tuple(range(x.ndim - 1))
    if x.shape[-1] <= g.shape[-1]:  # [in, out] = Xᵀ·G
        d = jax.lax.dot_general(x, g, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
        dw = jax.lax.optimization_barrier(d).T if w_transposed else d
    else:  # [out, in] = Gᵀ·X
        d = jax.lax.dot_general(g, x, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)
        dw = d if w_transposed else jax.lax.optimization_barrier(d).T
    return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: Array, w: Array, dtype: Any, w_transposed: bool = False) -> Array:
    """x[..., in] @ w[in, out] (or w[out, in]ᵀ) in `dtype` with f32 accumulation; returns f32.
    The output is named "matmul" for the dots_saveable remat policy."""
    return checkpoint_name(_matmul(x.astype(dtype), w, w_transposed), "matmul")


# ----------------------------------------------------------------------------- small layers
class Dense(nnx.Module):
    def __init__(self, d_in: int, d_out: int, axes: tuple[str | None, str | None], *, rngs: nnx.Rngs,
                 use_bias: bool = True, std: float = 0.02, dtype: Any = jnp.float32):
        self.kernel = param(rngs.params(), (d_in, d_out), axes, std)
        self.bias = param(None, (d_out,), (axes[1],), 0.0) if use_bias else None
        self.dtype = dtype
        self.lora = nnx.data(None)  # a low-rank adapter, put here by models/lora.py when a config asks for one

    def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
        """rngs: training's (None in evaluation), for a LoRA adapter's dropout."""
        y = matmul(x, gathered(self.kernel), self.dtype)
        y = y if self.lora is None else y + self.lora(x, self.dtype, rngs)
        return y if self.bias is None else y + gathered(self.bias)


class Norm(nnx.Module):
    """LayerNorm or RMSNorm, computed in f32 whatever the residual dtype."""

    def __init__(self, dim: int, kind: str, eps: float = 1e-5, use_bias: bool = True):
        self.kind, self.eps = kind, eps
        self.scale = param(None, (dim,), ("embed",), None)
        self.bias = param(None, (dim,), ("embed",), 0.0) if (kind == "layernorm" and use_bias) else None

    def __call__(self, x: Array) -> Array:
        x = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdims=True)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + self.eps)
        x = x * gathered(self.scale)
        return x if self.bias is None else x + gathered(self.bias)


class Embed(nnx.Module):
    # bigmodel_jax.explain sets it on a model's input embedding: attributions differentiate the
    # output through an nnx.capture perturbation added to it (zero unless they set one)
    explain = False

    def __init__(self, num: int, dim: int, axes: tuple[str | None, str | None], *, rngs: nnx.Rngs,
                 std: float = 0.02):
        self.embedding = param(rngs.params(), (num, dim), axes, std)

    def __call__(self, ids: Array) -> Array:
        x = jnp.take(gathered(self.embedding), ids, axis=0)
        return self.perturb("input_embeddings", x) if self.explain else x

    def attend(self, x: Array, dtype: Any) -> Array:
        """Tied output head: x[..., d] · Eᵀ, contracting the embedding's dim 1 (no transpose copy)."""
        return matmul(x, gathered(self.embedding), dtype, w_transposed=True)
