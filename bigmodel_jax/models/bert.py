"""BERT-style encoder (Devlin et al. 2019, as in Hugging Face's BertModel): token + position +
token-type embeddings, post-LN bidirectional blocks with padding masks, a tanh pooler on [CLS],
and the masked-LM head tied to the word embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from bigmodel_jax.models.blocks import Block, run_blocks
from bigmodel_jax.models.layers import DTYPES, Dense, Embed, Norm, gathered, param
# The model values an init_from source fixes (its tensors' shapes and what they compute); the
# vocabulary comes with the source's tokenizer.
ARCH_KEYS = ("num_layers", "width", "num_heads", "mlp_dim", "max_len", "type_vocab_size", "activation", "norm_eps")


class Bert(nnx.Module):
    """The encoder. cfg is the `model` section of a config (see configs/bert_mlm.py)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)
        self.dtype = DTYPES[cfg.dtype]
        d = cfg.width
        self.word_embed = Embed(cfg.vocab_size, d, ("vocab", "embed"), rngs=rngs)
        self.pos_embed = param(rngs.params(), (cfg.max_len, d), (None, "embed"))
        self.type_embed = param(rngs.params(), (cfg.type_vocab_size, d), (None, "embed"))
        self.embed_norm = Norm(d, "layernorm", eps=cfg.norm_eps)
        self.embed_dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List([
            Block(d, cfg.num_heads, cfg.num_heads, cfg.mlp_dim, rngs=rngs, causal=False, norm="layernorm",
                  activation=cfg.activation, dropout=cfg.dropout, dtype=self.dtype, post_norm=True,
                  norm_eps=cfg.norm_eps, remat=cfg.get("remat", "none"),
                  attention_impl=cfg.get("attention_impl", "plain"))
            for _ in range(cfg.num_layers)])
        self.pooler = Dense(d, d, ("embed", None), rngs=rngs, dtype=self.dtype)

    def __call__(self, input_ids_bt: jax.Array, token_type_ids_bt: jax.Array | None = None,
                 attention_mask_bt: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Returns the last hidden state [B, T, D] in f32. attention_mask_bt: 1 for real tokens, 0 for
        padding (padding keys are hidden from every query). rngs=None: no dropout."""
        b, t = input_ids_bt.shape
        positions_bt = jnp.broadcast_to(jnp.arange(t), (b, t))
        if token_type_ids_bt is None:
            token_type_ids_bt = jnp.zeros_like(input_ids_bt)
        x = (self.word_embed(input_ids_bt) + gathered(self.pos_embed)[:t][None]
             + jnp.take(gathered(self.type_embed), token_type_ids_bt, axis=0))
        x = self.embed_norm(x)
        x = self.embed_dropout(x, deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        mask_bts = None if attention_mask_bt is None else attention_mask_bt[:, None, :].astype(bool)
        x = run_blocks(self.blocks, x, positions_bt, mask_bts, rngs, scan=self.cfg.get("scan_layers", False))
        return x.astype(jnp.float32)

    def pool(self, hidden_btd: jax.Array) -> jax.Array:
        """BERT's pooled output: tanh(Dense(hidden of [CLS])), [B, D]."""
        return jnp.tanh(self.pooler(hidden_btd[:, 0]))


class BertMLM(nnx.Module):
    """Encoder + masked-LM head: Dense -> GELU -> LayerNorm -> tied word embeddings + bias."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.bert = Bert(cfg, rngs=rngs)
        c = self.bert.cfg
        self.mlm_dense = Dense(c.width, c.width, ("embed", None), rngs=rngs, dtype=self.bert.dtype)
        self.mlm_norm = Norm(c.width, "layernorm", eps=c.norm_eps)
        self.mlm_bias = param(None, (c.vocab_size,), ("vocab",), 0.0)

    def __call__(self, input_ids_bt, token_type_ids_bt=None, attention_mask_bt=None,
                 masked_positions_bk: jax.Array | None = None, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """f32 logits [B, K, V] at masked_positions_bk (the K predicted positions of each row, as the
        original BERT's max_predictions_per_seq: the vocab projection runs on ~15% of the tokens),
        or [B, T, V] at every position when it is None."""
        h = self.bert(input_ids_bt, token_type_ids_bt, attention_mask_bt, rngs=rngs)
        if masked_positions_bk is not None:
            h = jnp.take_along_axis(h, masked_positions_bk[..., None], axis=1)  # [B, K, D]
        h = self.mlm_norm(jax.nn.gelu(self.mlm_dense(h), approximate=self.bert.cfg.activation == "gelu_tanh"))
        return self.bert.word_embed.attend(h, self.bert.dtype) + gathered(self.mlm_bias)


def count_params(cfg: ml_collections.ConfigDict, include_embeddings: bool = True) -> int:
    """Encoder parameters from the config alone (pooler included; MLM head not)."""
    d, f, L = cfg.width, cfg.mlp_dim, cfg.num_layers
    per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    n = L * per_layer + 2 * d + (d * d + d)  # blocks, embedding LayerNorm, pooler
    if include_embeddings:
        n += (cfg.vocab_size + cfg.max_len + cfg.type_vocab_size) * d
    return n


def mlm_head_matmul_params(cfg: ml_collections.ConfigDict) -> int:
    return cfg.width * cfg.width + cfg.width * cfg.vocab_size
