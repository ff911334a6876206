"""Transformer building blocks shared by every family (GPT, BERT, ViT).

Every matmul goes through `matmul`, so the precision policy lives in one place: params are f32,
operands are cast to the compute dtype inside the dot, accumulation is always f32, and a custom
VJP keeps the backward pass in the compute dtype with layouts XLA runs fast (docs/architecture.md
says why, with the measured effect).
Parameters carry *logical* axis names ("embed", "mlp", "heads", "vocab"); `sharding.py` maps them
to mesh axes, so no model file names a mesh axis.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from bigmodel_jax.sharding import constrain

Array = jax.Array
# The KV cache stores keys transposed, [B, Hkv, D, S], so a decode step's scores stream along the slots
# (Attention._attend_plain says why decoding reads the cache the way it does).
KVCache = dict[str, Array]  # {"k": [B, Hkv, D, S], "v": [B, Hkv, S, D]}
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

    def __call__(self, x: Array) -> Array:
        y = matmul(x, gathered(self.kernel), self.dtype)
        y = y if self.lora is None else y + self.lora(x, self.dtype)
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
    def __init__(self, num: int, dim: int, axes: tuple[str | None, str | None], *, rngs: nnx.Rngs,
                 std: float = 0.02):
        self.embedding = param(rngs.params(), (num, dim), axes, std)

    def __call__(self, ids: Array) -> Array:
        return jnp.take(gathered(self.embedding), ids, axis=0)

    def attend(self, x: Array, dtype: Any) -> Array:
        """Tied output head: x[..., d] · Eᵀ, contracting the embedding's dim 1 (no transpose copy)."""
        return matmul(x, gathered(self.embedding), dtype, w_transposed=True)


def rope(x_bhtd: Array, positions_bt: Array, theta: float = 10000.0) -> Array:
    """Rotary embedding (GPT-NeoX / Llama half-split layout), in f32."""
    d = x_bhtd.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions_bt[:, None, :, None].astype(jnp.float32) * inv_freq  # [B, 1, T, D/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x = x_bhtd.astype(jnp.float32)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


# ----------------------------------------------------------------------------- attention
# model.attention_impl: "plain" is Attention's own einsums; "xla" and "cudnn" hand the scores,
# masks and softmax to jax.nn.dot_product_attention with that implementation ("cudnn": cuDNN's
# fused flash attention, GPU and bf16 only, which never materializes the [T, S] scores).
ATTENTION_IMPLS = ("plain", "xla", "cudnn")
CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def cudnn_missing(dtype: Any) -> str:
    """Why attention_impl="cudnn" cannot run in this process with this compute dtype ("" when it can):
    the config refuses it with this reason, and a model trained with it loads as "xla" instead."""
    if jax.default_backend() != "gpu":
        return (f"cuDNN's fused attention needs a GPU (this backend is {jax.default_backend()!r}); "
                "use 'xla' or 'plain' off GPU")
    if jnp.dtype(dtype) not in CUDNN_DTYPES:
        return f"cuDNN's fused attention has no {jnp.dtype(dtype).name} kernel: set model.dtype=bfloat16, or use 'xla'"
    return ""


class Attention(nnx.Module):
    """Multi-head attention with optional grouped-query heads, RoPE and a KV cache.

    Layout inside is [batch, heads, time, head_dim]: batched dots in that order run ~2x faster on
    XLA:CPU than [b, t, h, d].
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, *, rngs: nnx.Rngs, causal: bool,
                 use_rope: bool, rope_theta: float = 10000.0, use_bias: bool = True, dropout: float = 0.0,
                 out_std: float = 0.02, dtype: Any = jnp.float32, head_dim: int | None = None,
                 scale: float | None = None, std: float = 0.02, q_std: float | None = None,
                 attention_impl: str = "plain"):
        """head_dim: per head (default dim // num_heads; T5's d_kv may differ). scale: of the
        scores (default head_dim ** -0.5; T5 uses 1 and folds it into the query's init, q_std).
        attention_impl: one of ATTENTION_IMPLS; a combination cuDNN has no kernel for is refused
        here rather than at the first call inside a compiled step."""
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = head_dim or dim // num_heads
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={attention_impl!r}; valid: {list(ATTENTION_IMPLS)}")
        if attention_impl == "cudnn" and jnp.dtype(dtype) not in CUDNN_DTYPES:
            raise ValueError(f"attention_impl='cudnn' needs a bfloat16 compute dtype, not {jnp.dtype(dtype).name} "
                             "(cuDNN's fused attention has no float32 kernel); use 'xla' or 'plain'")
        if attention_impl == "cudnn" and (self.head_dim % 8 or self.head_dim > 256):
            raise ValueError(f"attention_impl='cudnn' needs a head_dim that is a multiple of 8 and at most 256 "
                             f"(128 before Hopper), not {self.head_dim}; use 'xla' or 'plain'")
        self.attention_impl = attention_impl
        self.scale = self.head_dim ** -0.5 if scale is None else scale
        self.causal, self.use_rope, self.rope_theta, self.dtype = causal, use_rope, rope_theta, dtype
        q_dim, kv_dim = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.query = Dense(dim, q_dim, ("embed", "heads"), rngs=rngs, use_bias=use_bias, std=q_std or std,
                           dtype=dtype)
        self.key = Dense(dim, kv_dim, ("embed", "kv_heads"), rngs=rngs, use_bias=use_bias, std=std, dtype=dtype)
        self.value = Dense(dim, kv_dim, ("embed", "kv_heads"), rngs=rngs, use_bias=use_bias, std=std, dtype=dtype)
        self.out = Dense(q_dim, dim, ("heads", "embed"), rngs=rngs, use_bias=use_bias, std=out_std, dtype=dtype)
        self.attn_dropout = nnx.Dropout(dropout)

    def _heads(self, x_btf: Array, n: int) -> Array:
        b, t, _ = x_btf.shape
        x_bhtd = x_btf.reshape(b, t, n, self.head_dim).transpose(0, 2, 1, 3)
        return constrain(x_bhtd, ("batch", "act_heads", None, None))

    def __call__(self, x_btd: Array, positions_bt: Array, *, mask_bts: Array | None = None,
                 cache: KVCache | None = None, cache_index: Array | int = 0, prefill: bool = False,
                 rngs: nnx.Rngs | None = None, bias_bhts: Array | None = None,
                 kv: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """Self-attention of x [B, T, D]. mask_bts: True where a query may attend a key (padding
        masks); causality is added here. bias_bhts: added to the scores (T5's relative position
        bias), over the keys attended.

        With a cache, x holds the tokens of slots cache_index..cache_index+T-1: their keys and
        values are written there, and the queries attend over the whole cache (unwritten slots
        are hidden by causality). prefill=True fills a fresh cache from slot 0 and attends over
        the T new keys only, not the empty rest of the cache.

        kv: cross-attention instead: keys and values made once by `keys_values` from another
        sequence (an encoder's output), attended as they are (the cache is not touched).
        """
        if kv is not None:
            q = self._heads(self.query(x_btd), self.num_heads).astype(self.dtype)
            y_btd = self._attend(q, kv["k"].astype(self.dtype), kv["v"].astype(self.dtype), 0, mask_bts, rngs,
                                 bias_bhts)
            return self.out(y_btd), cache
        q, k, v = self._project_qkv(x_btd, positions_bt)
        start = 0 if prefill else cache_index
        from_cache = cache is not None and not prefill
        if cache is not None:
            cache = self._update_cache(cache, k, v, start)
            if from_cache:
                k, v = cache["k"].astype(self.dtype), cache["v"].astype(self.dtype)
        y_btd = self._attend(q, k, v, start, mask_bts, rngs, bias_bhts, cached=from_cache)
        return self.out(y_btd), cache

    def keys_values(self, x_bsd: Array, dtype: Any = None) -> KVCache:
        """Keys and values [B, Hkv, S, hd] of a sequence to cross-attend (computed once per source)."""
        k = self._heads(self.key(x_bsd), self.num_kv_heads).astype(dtype or self.dtype)
        return {"k": k, "v": self._heads(self.value(x_bsd), self.num_kv_heads).astype(dtype or self.dtype)}

    def _project_qkv(self, x_btd: Array, positions_bt: Array) -> tuple[Array, Array, Array]:
        """Queries [B, H, T, hd] and keys / values [B, Hkv, T, hd] in the compute dtype (RoPE in f32)."""
        q = self._heads(self.query(x_btd), self.num_heads)
        k = self._heads(self.key(x_btd), self.num_kv_heads)
        v = self._heads(self.value(x_btd), self.num_kv_heads)
        if self.use_rope:
            q, k = rope(q, positions_bt, self.rope_theta), rope(k, positions_bt, self.rope_theta)
        return q.astype(self.dtype), k.astype(self.dtype), v.astype(self.dtype)

    @staticmethod
    def _update_cache(cache: KVCache, k: Array, v: Array, start: Array | int) -> KVCache:
        """The cache with k, v [B, Hkv, T, hd] written into slots start..start+T-1 (in place when donated)."""
        return {"k": jax.lax.dynamic_update_slice(cache["k"], k.transpose(0, 1, 3, 2).astype(cache["k"].dtype),
                                                  (0, 0, 0, start)),
                "v": jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, 0, start, 0))}

    def _attend(self, q: Array, k: Array, v: Array, start: Array | int, mask_bts: Array | None,
                rngs: nnx.Rngs | None, bias_bhts: Array | None = None, cached: bool = False) -> Array:
        """softmax(q kᵀ · scale + bias) v, the T queries sitting at slots start..start+T-1 of the S
        keys; grouped-query heads share each K/V head without copying it. Returns [B, T, H·hd].
        k is [B, Hkv, S, hd]; cached: k and v are a KV cache being decoded from (k [B, Hkv, hd, S]).
        Only a one-token plain decode step reads it in that layout; a prefill chunk reads it by a dot."""
        if cached and (self.attention_impl != "plain" or q.shape[2] > 1):
            k, cached = k.transpose(0, 1, 3, 2), False
        # jax.nn.dot_product_attention has no dropout on the attention probabilities, so a training
        # call with dropout > 0 takes the plain path (same math, plus the dropout). Refusing the
        # combination at construction instead would also forbid the fused kernels in evaluation and
        # sampling of every model trained with dropout (its config keeps the rate: BERT, ViT and T5
        # default to 0.1). Training itself gets the fused kernel with model.dropout=0.
        if self.attention_impl == "plain" or (rngs is not None and self.attn_dropout.rate > 0):
            y = self._attend_plain(q, k, v, start, mask_bts, rngs, bias_bhts, cached)
        else:
            y = self._attend_fused(q, k, v, start, mask_bts, bias_bhts)
        return constrain(y.astype(self.dtype), ("batch", None, "act_heads"))

    @staticmethod
    def _allowed(t: int, s: int, start: Array | int, mask_bts: Array | None, causal: bool) -> Array | None:
        """[B or 1, 1, T, S] bool, True where a query may attend a key (None: every key): causality
        for queries at slots start..start+T-1, and the padding mask."""
        allowed = None
        if causal:
            allowed = ((jnp.arange(t) + start)[:, None] >= jnp.arange(s)[None, :])[None, None]
        if mask_bts is not None:
            keys = mask_bts[:, None, :, :s].astype(bool)  # a prefill's mask may span the whole cache
            allowed = keys if allowed is None else allowed & keys
        return allowed

    def _attend_plain(self, q: Array, k: Array, v: Array, start: Array | int, mask_bts: Array | None,
                      rngs: nnx.Rngs | None, bias_bhts: Array | None, cached: bool = False) -> Array:
        b, _, t, _ = q.shape
        s = v.shape[2]
        allowed = self._allowed(t, s, start, mask_bts, self.causal)
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(b, self.num_kv_heads, groups, t, self.head_dim)
        if self.scale != 1.0:
            q = q * self.scale
        # Decoding reads the cache that this step's dynamic_update_slice just wrote. Fed to a dot,
        # XLA:CPU duplicates that update into the dot's operand fusion whenever a batch or head dim
        # is 1, and each copy of the in-place update then needs the whole cache copied: for
        # SmolLM2 at batch 1, 240 cache-sized copies per decoded token, and per-token time grew
        # 2.7x from a 32- to a 2,048-token prompt. Multiply-and-sum, which reads the cache once
        # like the dot (a decode step is bandwidth-bound), compiles with none (docs/speed.md).
        if cached:
            scores = jnp.sum(q[..., None].astype(jnp.float32) * k[:, :, None, None].astype(jnp.float32), axis=-2)
        else:
            scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
        scores = scores.reshape(b, self.num_heads, t, s)
        if bias_bhts is not None:
            scores = scores + bias_bhts
        if allowed is not None:
            scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = self.attn_dropout(probs, deterministic=rngs is None, rngs=rngs)
        probs = probs.astype(self.dtype).reshape(b, self.num_kv_heads, groups, t, s)
        if cached:
            y = jnp.sum(probs[..., None].astype(jnp.float32) * v[:, :, None, None].astype(jnp.float32), axis=-2)
        else:
            y = jnp.einsum("bkgts,bksd->bkgtd", probs, v, preferred_element_type=jnp.float32)
        return y.reshape(b, self.num_heads, t, self.head_dim).transpose(0, 2, 1, 3).reshape(b, t, -1)

    def _attend_fused(self, q: Array, k: Array, v: Array, start: Array | int, mask_bts: Array | None,
                      bias_bhts: Array | None) -> Array:
        b, _, t, _ = q.shape
        s = k.shape[2]
        # Queries aligned with their keys (training, prefill: start is the literal 0) take causality
        # as is_causal, which cuDNN's kernel uses to skip the masked blocks; a decode step's queries
        # sit at a traced slot of the cache, so its causality travels in the explicit mask.
        aligned = self.causal and t == s and isinstance(start, int) and start == 0
        allowed = self._allowed(t, s, start, mask_bts, self.causal and not aligned)
        if self.attention_impl == "cudnn":
            # jax folds the mask into cuDNN's bias, whose shape check wants every query row (a mask
            # broadcast over the queries is refused); the bias goes in the operands' dtype, as the
            # fused kernel reads one element type
            if allowed is not None:
                allowed = jnp.broadcast_to(allowed, allowed.shape[:2] + (t, s))
            if bias_bhts is not None:
                bias_bhts = bias_bhts.astype(q.dtype)
        y = jax.nn.dot_product_attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                                         bias=bias_bhts, mask=allowed, scale=self.scale, is_causal=aligned,
                                         implementation=self.attention_impl)
        return y.reshape(b, t, -1)


def init_kv_cache(batch: int, num_layers: int, num_kv_heads: int, max_len: int, head_dim: int,
                  dtype: Any) -> list[KVCache]:
    return [{"k": jnp.zeros((batch, num_kv_heads, head_dim, max_len), dtype),
             "v": jnp.zeros((batch, num_kv_heads, max_len, head_dim), dtype)} for _ in range(num_layers)]


# ----------------------------------------------------------------------------- MLP and block
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
        h = self.up(x)  # f32
        if self.gate is not None:
            h = GATED[self.activation](self.gate(x)) * h
        else:
            h = PLAIN[self.activation](h)
        if self.hidden_dropout is not None:
            h = self.hidden_dropout(h, deterministic=rngs is None, rngs=rngs)
        return self.down(constrain(h.astype(self.dtype), ("batch", None, "act_mlp")))


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
            h = self.mlp(x)
            return self.mlp_norm(x + self.dropout(h, deterministic=det, rngs=rngs)).astype(self.dtype), cache
        h, cache = self.attn(self.attn_norm(x), positions_bt, **attn_args)
        x = x + drop_path(self.dropout(h, deterministic=det, rngs=rngs), self.drop_path_rate, rngs).astype(x.dtype)
        h = self.mlp(self.mlp_norm(x))
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
    if not scan:
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
