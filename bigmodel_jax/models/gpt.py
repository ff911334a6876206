"""GPT-style decoder-only language model (nanoGPT / GPT-2 shape, with Llama-style options)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from bigmodel_jax.sharding import constrain
from bigmodel_jax.models.attention import KVCache, init_kv_cache
from bigmodel_jax.models.blocks import GATED, Block, run_blocks
from bigmodel_jax.models.layers import DTYPES, Embed, Norm, gathered, matmul, param
# The model values an init_from source fixes (the vocabulary comes with the run's tokenizer).
ARCH_KEYS = ("num_layers", "width", "num_heads", "num_kv_heads", "mlp_dim", "max_len", "positions", "rope_theta",
             "norm", "norm_eps", "activation", "use_bias", "tie_embeddings")


class GPT(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        """cfg is the `model` section of a config (see configs/gpt_char.py for every field)."""
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)  # static and hashable for jit
        self.dtype = DTYPES[cfg.dtype]
        d = cfg.width
        # GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 * layers).
        out_std = 0.02 / (2 * cfg.num_layers) ** 0.5
        self.token_embed = Embed(cfg.vocab_size, d, ("vocab", "embed"), rngs=rngs)
        self.pos_embed = (param(rngs.params(), (cfg.max_len, d), (None, "embed"), 0.01)
                          if cfg.positions == "learned" else None)
        self.blocks = nnx.List([
            Block(d, cfg.num_heads, cfg.num_kv_heads or cfg.num_heads, cfg.mlp_dim, rngs=rngs, causal=True,
                  norm=cfg.norm, activation=cfg.activation, use_rope=cfg.positions == "rope",
                  rope_theta=cfg.rope_theta, use_bias=cfg.use_bias, dropout=cfg.dropout, out_std=out_std,
                  dtype=self.dtype, norm_eps=cfg.get("norm_eps", 1e-5), remat=cfg.get("remat", "none"),
                  attention_impl=cfg.get("attention_impl", "plain"))
            for _ in range(cfg.num_layers)])
        self.final_norm = Norm(d, cfg.norm, eps=cfg.get("norm_eps", 1e-5), use_bias=cfg.use_bias)
        self.lm_head = None if cfg.tie_embeddings else param(rngs.params(), (d, cfg.vocab_size), ("embed", "vocab"))
        self.embed_dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, tokens_bt: jax.Array, *, cache: list[KVCache] | None = None,
                 cache_index: jax.Array | int = 0, prefill: bool = False, positions_bt: jax.Array | None = None,
                 mask_bs: jax.Array | None = None, rngs: nnx.Rngs | None = None
                 ) -> tuple[jax.Array, list[KVCache] | None]:
        """Returns f32 logits [B, T, V] (and the updated cache when one is given).

        rngs=None means deterministic (no dropout). With a cache, the tokens fill cache slots
        cache_index..cache_index+T-1 and attend over the whole cache; prefill=True fills a fresh
        cache from slot 0 and attends over the new tokens only. Batched generation of left-padded
        prompts passes each row's own positions (positions_bt) and which key slots hold real
        tokens (mask_bs: [B, S], S the cache length, or T without a cache); by default positions
        are the slot indices.
        """
        x, cache = self.hidden(tokens_bt, cache=cache, cache_index=cache_index, prefill=prefill,
                               positions_bt=positions_bt, mask_bs=mask_bs, rngs=rngs)
        return self.logits(x), cache

    def hidden(self, tokens_bt: jax.Array, *, cache: list[KVCache] | None = None,
               cache_index: jax.Array | int = 0, prefill: bool = False, positions_bt: jax.Array | None = None,
               mask_bs: jax.Array | None = None, rngs: nnx.Rngs | None = None
               ) -> tuple[jax.Array, list[KVCache] | None]:
        """The final-normed residual stream [B, T, D]; generation projects only its last position
        onto the vocabulary (a 512-token prompt's full logits would be 100 MB per row)."""
        b, t = tokens_bt.shape
        if positions_bt is None:
            start = 0 if prefill else cache_index
            positions_bt = jnp.broadcast_to(start + jnp.arange(t), (b, t))
        mask_bts = None if mask_bs is None else mask_bs[:, None, :]
        x = self.token_embed(tokens_bt)
        if self.pos_embed is not None:
            x = x + jnp.take(gathered(self.pos_embed), positions_bt, axis=0)
        x = self.embed_dropout(x, deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        if cache is None:
            x = run_blocks(self.blocks, x, positions_bt, mask_bts, rngs, scan=self.cfg.get("scan_layers", False))
            return self.final_norm(x), None
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, positions_bt, mask_bts=mask_bts, cache=cache[i], cache_index=cache_index,
                                   prefill=prefill, rngs=rngs)
            new_cache.append(layer_cache)
        return self.final_norm(x), new_cache

    def logits(self, x_btd: jax.Array) -> jax.Array:
        if self.lm_head is None:
            logits = self.token_embed.attend(x_btd, self.dtype)
        else:
            logits = matmul(x_btd, gathered(self.lm_head), self.dtype)
        return constrain(logits, ("batch", None, "act_vocab"))

    def init_cache(self, batch: int, max_len: int | None = None, dtype: Any = None) -> list[KVCache]:
        cfg = self.cfg
        return init_kv_cache(batch, cfg.num_layers, cfg.num_kv_heads or cfg.num_heads,
                             max_len or cfg.max_len, cfg.width // cfg.num_heads, dtype or self.dtype)


def count_params(cfg: ml_collections.ConfigDict, include_embeddings: bool = True) -> int:
    """Parameter count from the config alone (used for FLOPs; a test checks it against the model)."""
    d, f, L, V = cfg.width, cfg.mlp_dim, cfg.num_layers, cfg.vocab_size
    kv = (cfg.num_kv_heads or cfg.num_heads) * (d // cfg.num_heads)
    b = 1 if cfg.use_bias else 0
    norm = d * (2 if (cfg.norm == "layernorm" and cfg.use_bias) else 1)
    attn = d * d * 2 + d * kv * 2 + b * (2 * d + 2 * kv)
    gated = cfg.activation in GATED
    mlp = d * f * (3 if gated else 2) + b * (f * (2 if gated else 1) + d)
    n = L * (attn + mlp + 2 * norm) + norm
    if not cfg.tie_embeddings:
        n += d * V
    if include_embeddings:
        n += V * d + (cfg.max_len * d if cfg.positions == "learned" else 0)
    return n
