"""Multi-head attention (grouped-query heads, RoPE, a KV cache, fused kernels), built on layers.Dense.

Where a newcomer looks for attention: `Attention._attend_plain` is softmax(q kᵀ · scale) v in einsums.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bigmodel_jax.models.layers import Dense
from bigmodel_jax.sharding import constrain

Array = jax.Array
# The KV cache stores keys transposed, [B, Hkv, D, S], so a decode step's scores stream along the slots
# (Attention._attend_plain says why decoding reads the cache the way it does).
KVCache = dict[str, Array]  # {"k": [B, Hkv, D, S], "v": [B, Hkv, S, D]}


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

    explain = False  # bigmodel_jax.explain sets it: the probabilities are sown for nnx.capture

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
            q = self._heads(self.query(x_btd, rngs), self.num_heads).astype(self.dtype)
            y_btd = self._attend(q, kv["k"].astype(self.dtype), kv["v"].astype(self.dtype), 0, mask_bts, rngs,
                                 bias_bhts)
            return self.out(y_btd, rngs), cache
        q, k, v = self._project_qkv(x_btd, positions_bt, rngs)
        start = 0 if prefill else cache_index
        from_cache = cache is not None and not prefill
        if cache is not None:
            cache = self._update_cache(cache, k, v, start)
            if from_cache:
                k, v = cache["k"].astype(self.dtype), cache["v"].astype(self.dtype)
        y_btd = self._attend(q, k, v, start, mask_bts, rngs, bias_bhts, cached=from_cache)
        return self.out(y_btd, rngs), cache

    def keys_values(self, x_bsd: Array, dtype: Any = None, rngs: nnx.Rngs | None = None) -> KVCache:
        """Keys and values [B, Hkv, S, hd] of a sequence to cross-attend (computed once per source)."""
        k = self._heads(self.key(x_bsd, rngs), self.num_kv_heads).astype(dtype or self.dtype)
        return {"k": k, "v": self._heads(self.value(x_bsd, rngs), self.num_kv_heads).astype(dtype or self.dtype)}

    def _project_qkv(self, x_btd: Array, positions_bt: Array, rngs: nnx.Rngs | None = None
                     ) -> tuple[Array, Array, Array]:
        """Queries [B, H, T, hd] and keys / values [B, Hkv, T, hd] in the compute dtype (RoPE in f32)."""
        q = self._heads(self.query(x_btd, rngs), self.num_heads)
        k = self._heads(self.key(x_btd, rngs), self.num_kv_heads)
        v = self._heads(self.value(x_btd, rngs), self.num_kv_heads)
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
        if self.explain:
            self.sow(nnx.Intermediate, "attention_probs", probs)  # [B, H, T, S]
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
