"""The Transformer block every family stacks (pre-LN or post-LN), its MLP, stochastic depth,
rematerialization and the loop over blocks (optionally one lax.scan)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models.attention import Attention, KVCache
from bigmodel_jax.models.layers import Dense, Norm
from bigmodel_jax.sharding import constrain

Array = jax.Array


def drop_path(x: Array, rate: float, rngs: nnx.Rngs | None) -> Array:
    """Stochastic depth (Huang et al. 2016): a whole residual branch is dropped per example with
    probability `rate` in training and the kept ones scaled by 1/(1-rate); identity in evaluation."""
    if rngs is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)



GATED = {"swiglu": jax.nn.silu, "geglu": partial(jax.nn.gelu, approximate=True)}  # act(gate(x)) * up(x)
PLAIN = {"gelu": partial(jax.nn.gelu, approximate=False), "gelu_tanh": partial(jax.nn.gelu, approximate=True),
         "relu": jax.nn.relu}


class MLP(nnx.Module):
    """up -> activation -> down; a gated activation (SwiGLU: Llama; GEGLU with tanh GELU: T5 v1.1)
    multiplies act(gate(x)) into up(x). dropout: on the hidden layer (T5's; 0 elsewhere)."""

    def __init__(self, dim: int, hidden: int, activation: str, *, rngs: nnx.Rngs, use_bias: bool = True,
                 out_std: float = 0.02, dtype: Any = jnp.float32, std: float = 0.02, dropout: float = 0.0):
        if activation not in GATED and activation not in PLAIN:
            raise ValueError(f"activation={activation!r}; valid: {sorted(GATED) + sorted(PLAIN)}")
        self.activation, self.dtype = activation, dtype
        self.up = Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, use_bias=use_bias, std=std, dtype=dtype)
        self.gate = (Dense(dim, hidden, ("embed", "mlp"), rngs=rngs, use_bias=use_bias, std=std, dtype=dtype)
                     if activation in GATED else None)
        self.down = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs, use_bias=use_bias, std=out_std, dtype=dtype)
        self.hidden_dropout = nnx.Dropout(dropout) if dropout else None

    def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
        h = self.up(x, rngs)  # f32 (rngs: training's, for hidden and LoRA dropout)
        if self.gate is not None:
            h = GATED[self.activation](self.gate(x, rngs)) * h
        else:
            h = PLAIN[self.activation](h)
        if self.hidden_dropout is not None:
            h = self.hidden_dropout(h, deterministic=rngs is None, rngs=rngs)
        return self.down(constrain(h.astype(self.dtype), ("batch", None, "act_mlp")), rngs)


def _block_forward(block: "Block", x: Array, positions_bt: Array, mask_bts: Array | None,
                   rngs: nnx.Rngs | None) -> Array:
    return block.forward(x, positions_bt, mask_bts=mask_bts, rngs=rngs)[0]


# Rematerialization (gradient checkpointing) of a whole block in training: "full" keeps only the
# block's input and recomputes everything in the backward pass (least memory, ~1/3 more compute);
# "dots_saveable" keeps the matmul outputs and recomputes the cheap elementwise ops between them.
# Our matmuls are a custom VJP, which jax's dots_saveable does not see, so their outputs are
# named ("matmul") and saved by name, beside the attention einsums that dots_saveable does save.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, jax.checkpoint_policies.save_only_these_names("matmul")),
}


def remat_table(forward: Callable) -> dict[str, Callable | None]:
    """model.remat's values -> forward rematerialized with that policy (None: as it is)."""
    return {"none": None, **{name: nnx.remat(forward, policy=policy) for name, policy in REMAT_POLICIES.items()}}


REMAT = remat_table(_block_forward)


class Block(nnx.Module):
    """Pre-LN Transformer block (GPT-2, Llama, ViT): x + Attn(Norm(x)), then x + MLP(Norm(x)).
    post_norm=True is the original Transformer / BERT order: Norm(x + Attn(x)), then Norm(x + MLP(x)).
    drop_path: stochastic-depth rate of both residual branches (pre-LN only).
    remat: a key of REMAT, applied in training (never with a KV cache).
    attention_impl: one of ATTENTION_IMPLS (Attention's)."""

    explain = False  # bigmodel_jax.explain sets it: each block's input is sown for nnx.capture (probes)

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, mlp_dim: int, *, rngs: nnx.Rngs,
                 causal: bool, norm: str = "layernorm", activation: str = "gelu", use_rope: bool = False,
                 rope_theta: float = 10000.0, use_bias: bool = True, dropout: float = 0.0,
                 out_std: float = 0.02, dtype: Any = jnp.float32, post_norm: bool = False,
                 norm_eps: float = 1e-5, drop_path: float = 0.0, remat: str = "none",
                 attention_impl: str = "plain"):
        if post_norm and drop_path:
            raise ValueError("drop_path is for pre-LN blocks")
        if remat not in REMAT:
            raise ValueError(f"remat={remat!r}; valid: {list(REMAT)}")
        self.post_norm, self.dtype, self.drop_path_rate, self.remat = post_norm, dtype, drop_path, remat
        self.attn_norm = Norm(dim, norm, eps=norm_eps, use_bias=use_bias)
        self.attn = Attention(dim, num_heads, num_kv_heads, rngs=rngs, causal=causal, use_rope=use_rope,
                              rope_theta=rope_theta, use_bias=use_bias, dropout=dropout, out_std=out_std,
                              dtype=dtype, attention_impl=attention_impl)
        self.mlp_norm = Norm(dim, norm, eps=norm_eps, use_bias=use_bias)
        self.mlp = MLP(dim, mlp_dim, activation, rngs=rngs, use_bias=use_bias, out_std=out_std, dtype=dtype)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: Array, positions_bt: Array, *, mask_bts: Array | None = None,
                 cache: KVCache | None = None, cache_index: Array | int = 0, prefill: bool = False,
                 rngs: nnx.Rngs | None = None) -> tuple[Array, KVCache | None]:
        """cache, cache_index, prefill: as Attention's."""
        if self.explain:
            self.sow(nnx.Intermediate, "block_input", x)
        if REMAT[self.remat] is not None and cache is None:
            x = REMAT[self.remat](self, x, positions_bt, mask_bts, rngs)
        else:
            x, cache = self.forward(x, positions_bt, mask_bts=mask_bts, cache=cache, cache_index=cache_index,
                                    prefill=prefill, rngs=rngs)
        return constrain(x, ("batch", None, None)), cache

    def forward(self, x: Array, positions_bt: Array, *, mask_bts: Array | None = None,
                cache: KVCache | None = None, cache_index: Array | int = 0, prefill: bool = False,
                rngs: nnx.Rngs | None = None) -> tuple[Array, KVCache | None]:
        det = rngs is None
        attn_args = dict(mask_bts=mask_bts, cache=cache, cache_index=cache_index, prefill=prefill, rngs=rngs)
        if self.post_norm:
            h, cache = self.attn(x, positions_bt, **attn_args)
            x = self.attn_norm(x + self.dropout(h, deterministic=det, rngs=rngs)).astype(self.dtype)
            h = self.mlp(x, rngs)
            return self.mlp_norm(x + self.dropout(h, deterministic=det, rngs=rngs)).astype(self.dtype), cache
        h, cache = self.attn(self.attn_norm(x), positions_bt, **attn_args)
        x = x + drop_path(self.dropout(h, deterministic=det, rngs=rngs), self.drop_path_rate, rngs).astype(x.dtype)
        h = self.mlp(self.mlp_norm(x), rngs)
        x = x + drop_path(self.dropout(h, deterministic=det, rngs=rngs), self.drop_path_rate, rngs).astype(x.dtype)
        return x, cache


def run_blocks(blocks: nnx.List, x: Array, positions_bt: Array, mask_bts: Array | None = None,
               rngs: nnx.Rngs | None = None, scan: bool = False) -> Array:
    """x through every block in order (no KV cache). scan=True (model.scan_layers) runs them as one
    lax.scan over their parameters stacked along a new leading axis, so XLA traces and optimizes one
    block instead of L. The parameters stay stored per layer (checkpoints, Hugging Face interop and
    the optimizer see the same tree either way), so they are stacked (copied) once per call and
    their gradients unstacked; each layer's dropout draws from its own key split off rngs. On
    XLA:CPU this does not pay yet: the per-parameter optimizer, clipping and stacking work dominates
    a deep step's compile time, and the loop costs step time (docs/speed.md has the figures)."""
    if not scan or blocks[0].explain:  # explain's captures need each block called as itself
        for block in blocks:
            x, _ = block(x, positions_bt, mask_bts=mask_bts, rngs=rngs)
        return x
    graphdef = nnx.graphdef(blocks[0])
    if any(nnx.graphdef(block) != graphdef for block in blocks[1:]):
        raise ValueError("model.scan_layers runs one block's program for every layer, and these blocks differ in a "
                         "static setting (ViT's stochastic depth gives each block its own rate): set "
                         "model.drop_path=0 or model.scan_layers=False")
    stacked = jax.tree.map(lambda *layers: jnp.stack(layers), *[nnx.state(block) for block in blocks])
    keys = None if rngs is None else jax.random.split(rngs.dropout(), len(blocks))

    def layer(x, params_and_key):
        params, key = params_and_key
        block = nnx.merge(graphdef, params)
        return block(x, positions_bt, mask_bts=mask_bts, rngs=None if key is None else nnx.Rngs(dropout=key))[0], None

    return jax.lax.scan(layer, x, (stacked, keys))[0]
