"""T5-style encoder-decoder (Raffel et al. 2020; v1.1 of the T5 repository with `activation="geglu"`).

    source --embed--> [EncoderLayer x N] --norm--> encoded ------------------.
                       self-attention + bidirectional relative position bias  | cross-attention
    target --embed--> [DecoderLayer x M] --norm--> logits                    |
                       causal self-attention + causal bias, cross-attention <-'

What differs from GPT/BERT: no position embeddings but a learned bias per head on the attention
scores, looked up by the (bucketed) distance between query and key, one table per stack shared by
its layers; RMSNorm without bias, pre-norm; no biases in any Dense; scores not scaled by
1/sqrt(head_dim) (the query's init carries it); one embedding table shared by both stacks. v1.0:
ReLU MLP and the head tied to the embedding with its input scaled by width**-0.5; v1.1: GEGLU MLP
and an untied head (`tie_embeddings=False`).

Generation (generate.py) sees the decoder through the same `hidden` / `logits` / `init_cache`
calls as a GPT: `init_cache(..., source=(tokens, mask))` runs the encoder once and keeps each
decoder layer's cross-attention keys and values beside its self-attention KV cache.

Whisper (Radford et al. 2022, hf_whisper.py) is the same decoder in other clothes, so it is this
class, not a copy: `source="audio"` puts models/audio.py's AudioEncoder in place of the token
encoder, `positions="learned"` a position table in place of the relative bias, `norm="layernorm"`
and `use_bias=True` the GPT-2-style layers, `scale_scores` the usual 1/sqrt(head_dim) and
`scale_head=False` an unscaled tied head. Every key defaults to T5's, so a T5 config without them
builds the same parameter tree.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from bigmodel_jax.models import audio
from bigmodel_jax.models.attention import Attention, KVCache, init_kv_cache
from bigmodel_jax.models.blocks import GATED, MLP, remat_table
from bigmodel_jax.models.layers import DTYPES, Embed, Norm, gathered, matmul, param
from bigmodel_jax.sharding import constrain

SOURCES = ("tokens", "audio")  # model.source: what the encoder reads
POSITIONS = ("relative", "learned")  # model.positions: how the decoder knows where a token is
ARCH_KEYS = ("num_layers", "num_decoder_layers", "width", "num_heads", "head_dim", "mlp_dim", "activation",
             "tie_embeddings", "rel_buckets", "rel_max_distance", "norm_eps", "source", "positions", "norm", "use_bias",
             "scale_scores", "scale_head", "num_mels", "max_frames", "conv_stride")


def relative_bucket(relative_pos: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucket of each (key - query) distance: exact for small distances, log-spaced up to
    max_distance, one bucket beyond; the encoder's buckets tell before from after, the decoder's
    see only the past (the future is masked anyway)."""
    bucket = jnp.zeros_like(relative_pos)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_pos > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_pos)
    else:
        distance = -jnp.minimum(relative_pos, 0)
    max_exact = num_buckets // 2
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = jnp.minimum(max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


class RelativeBias(nnx.Module):
    """One learned bias per head and distance bucket, added to every layer's scores of a stack."""

    def __init__(self, num_heads: int, num_buckets: int, max_distance: int, bidirectional: bool, *, rngs: nnx.Rngs,
                 std: float):
        self.table = param(rngs.params(), (num_buckets, num_heads), (None, None), std)
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional

    def __call__(self, query_pos_bt: jax.Array, key_pos_bs: jax.Array) -> jax.Array:
        """[B, H, T, S] f32 from query positions [B, T] and key positions [B, S] (B may be 1)."""
        rel_bts = key_pos_bs[:, None, :] - query_pos_bt[:, :, None]
        buckets = relative_bucket(rel_bts, self.bidirectional, self.num_buckets, self.max_distance)
        return jnp.take(self.table[...], buckets, axis=0).transpose(0, 3, 1, 2)


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: ml_collections.FrozenConfigDict, dtype: Any, *, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg)
        self.attn = _attention(cfg, dtype, causal=False, rngs=rngs)
        self.mlp_norm = _norm(cfg)
        self.mlp = _mlp(cfg, dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x: jax.Array, mask_bts: jax.Array, bias_bhts: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        return self.forward(x, mask_bts, bias_bhts, rngs)

    def forward(self, x: jax.Array, mask_bts: jax.Array, bias_bhts: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        det = rngs is None
        h, _ = self.attn(self.attn_norm(x), None, mask_bts=mask_bts, bias_bhts=bias_bhts, rngs=rngs)
        x = x + self.dropout(h, deterministic=det, rngs=rngs).astype(x.dtype)
        h = self.mlp(self.mlp_norm(x), rngs=rngs)
        return constrain(x + self.dropout(h, deterministic=det, rngs=rngs).astype(x.dtype), ("batch", None, None))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ml_collections.FrozenConfigDict, dtype: Any, *, rngs: nnx.Rngs):
        self.attn_norm = _norm(cfg)
        self.attn = _attention(cfg, dtype, causal=True, rngs=rngs)
        self.cross_norm = _norm(cfg)
        self.cross = _attention(cfg, dtype, causal=False, rngs=rngs)
        self.mlp_norm = _norm(cfg)
        self.mlp = _mlp(cfg, dtype, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x: jax.Array, *, mask_bts: jax.Array | None, bias_bhts: jax.Array, cross_kv: KVCache,
                 source_mask_bs: jax.Array, cache: KVCache | None = None, cache_index: jax.Array | int = 0,
                 prefill: bool = False, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, KVCache | None]:
        return self.forward(x, mask_bts, bias_bhts, cross_kv, source_mask_bs, cache, cache_index, prefill, rngs)

    def forward(self, x: jax.Array, mask_bts: jax.Array | None, bias_bhts: jax.Array, cross_kv: KVCache,
                source_mask_bs: jax.Array, cache: KVCache | None = None, cache_index: jax.Array | int = 0,
                prefill: bool = False, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, KVCache | None]:
        det = rngs is None
        h, cache = self.attn(self.attn_norm(x), None, mask_bts=mask_bts, bias_bhts=bias_bhts, cache=cache,
                             cache_index=cache_index, prefill=prefill, rngs=rngs)
        x = x + self.dropout(h, deterministic=det, rngs=rngs).astype(x.dtype)
        h, _ = self.cross(self.cross_norm(x), None, mask_bts=source_mask_bs[:, None, :], kv=cross_kv, rngs=rngs)
        x = x + self.dropout(h, deterministic=det, rngs=rngs).astype(x.dtype)
        h = self.mlp(self.mlp_norm(x), rngs=rngs)
        x = x + self.dropout(h, deterministic=det, rngs=rngs).astype(x.dtype)
        return constrain(x, ("batch", None, None)), cache


def _encoder_forward(layer: EncoderLayer, x, mask_bts, bias_bhts, rngs):
    return layer.forward(x, mask_bts, bias_bhts, rngs)


def _decoder_forward(layer: DecoderLayer, x, mask_bts, bias_bhts, cross_kv, source_mask_bs, rngs):
    return layer.forward(x, mask_bts, bias_bhts, cross_kv, source_mask_bs, rngs=rngs)[0]


# model.remat in training (a layer at a time, as the other families' blocks; never with a KV cache)
ENCODER_REMAT, DECODER_REMAT = remat_table(_encoder_forward), remat_table(_decoder_forward)


def _attention(cfg: ml_collections.FrozenConfigDict, dtype: Any, *, causal: bool, rngs: nnx.Rngs) -> Attention:
    """T5's attention and init (Mesh TensorFlow's, as transformers has it): no biases, unscaled
    scores, the query's init scaled by (width * head_dim)**-0.5 instead. Whisper's: biases (its
    key has none: an imported zero bias adds one constant per query, which the softmax ignores)
    and scores scaled by head_dim**-0.5."""
    d, inner, scaled = cfg.width, cfg.num_heads * cfg.head_dim, cfg.get("scale_scores", False)
    return Attention(d, cfg.num_heads, cfg.num_heads, rngs=rngs, causal=causal, use_rope=False,
                     use_bias=cfg.get("use_bias", False), dropout=cfg.dropout, dtype=dtype, head_dim=cfg.head_dim,
                     scale=None if scaled else 1.0, std=d ** -0.5, q_std=None if scaled else (d * cfg.head_dim) ** -0.5,
                     out_std=inner ** -0.5, attention_impl=cfg.get("attention_impl", "plain"))


def _mlp(cfg: ml_collections.FrozenConfigDict, dtype: Any, *, rngs: nnx.Rngs) -> MLP:
    return MLP(cfg.width, cfg.mlp_dim, cfg.activation, rngs=rngs, use_bias=cfg.get("use_bias", False),
               std=cfg.width ** -0.5, out_std=cfg.mlp_dim ** -0.5, dtype=dtype, dropout=cfg.dropout)


def _norm(cfg: ml_collections.FrozenConfigDict) -> Norm:
    """T5's RMSNorm without bias, or Whisper's LayerNorm with one."""
    return Norm(cfg.width, cfg.get("norm", "rmsnorm"), eps=cfg.norm_eps, use_bias=cfg.get("use_bias", False))


class EncoderDecoder(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        """cfg is the `model` section of a config (see configs/t5_translate.py for every field)."""
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)
        self.dtype = DTYPES[cfg.dtype]
        self.source, self.positions = cfg.get("source", "tokens"), cfg.get("positions", "relative")
        for key, value, valid in (("source", self.source, SOURCES), ("positions", self.positions, POSITIONS)):
            if value not in valid:
                raise ValueError(f"model.{key}={value!r}; valid: {list(valid)}")
        self.shared = Embed(cfg.vocab_size, cfg.width, ("vocab", "embed"), rngs=rngs, std=1.0)
        bias = dict(num_buckets=cfg.get("rel_buckets"), max_distance=cfg.get("rel_max_distance"), rngs=rngs,
                    std=cfg.width ** -0.5)
        if self.source == "audio":  # the AudioEncoder (final norm included) reads the same keys as ours
            self.encoder_bias, self.encoder_norm = None, None
            self.encoder = audio.AudioEncoder(cfg, rngs=rngs)
        else:
            self.encoder_bias = RelativeBias(cfg.num_heads, bidirectional=True, **bias)
            self.encoder = nnx.List([EncoderLayer(cfg, self.dtype, rngs=rngs) for _ in range(cfg.num_layers)])
            self.encoder_norm = _norm(cfg)
        if self.positions == "learned":  # one row per decoder position, added to the token embedding
            self.decoder_bias = None
            self.decoder_positions = param(rngs.params(), (cfg.max_len, cfg.width), (None, "embed"), 0.02)
        else:
            self.decoder_bias = RelativeBias(cfg.num_heads, bidirectional=False, **bias)
        self.decoder = nnx.List([DecoderLayer(cfg, self.dtype, rngs=rngs) for _ in range(cfg.num_decoder_layers)])
        self.decoder_norm = _norm(cfg)
        # untied head: std width**-0.5 puts the first logits near unit scale (transformers draws it
        # with std 1, logits ~ sqrt(width) and a first loss ~8x ln(vocab); loaded weights replace it)
        self.lm_head = (None if cfg.tie_embeddings
                        else param(rngs.params(), (cfg.width, cfg.vocab_size), ("embed", "vocab"), cfg.width ** -0.5))
        self.dropout = nnx.Dropout(cfg.dropout)
        self.remat = cfg.get("remat", "none")  # an attribute, as Block's: explain's hooks turn it off

    def __call__(self, source_bs: jax.Array, source_mask_bs: jax.Array, target_in_bt: jax.Array, *,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        """Teacher-forced logits [B, T, V] f32 (target_in: the targets shifted right behind the
        start token; right padding needs no mask: causality keeps it out of the real positions)."""
        encoded, mask_bs = self.encode_masked(source_bs, source_mask_bs, rngs=rngs)
        cross = [layer.cross.keys_values(encoded, rngs=rngs) for layer in self.decoder]
        x, _ = self.hidden(target_in_bt, cross_kv=cross, source_mask_bs=mask_bs, rngs=rngs)
        return self.logits(x)

    def encode_masked(self, source: jax.Array, source_mask: jax.Array | None, rngs: nnx.Rngs | None = None
                      ) -> tuple[jax.Array, jax.Array]:
        """(encoder output [B, S', D], which of its S' positions are real): the source's own mask
        for tokens; for audio features [B, T, M], the mask of the positions the convs leave."""
        if self.source != "audio":
            return self.encode(source, source_mask, rngs), source_mask
        x, mask_bs = self.encoder(source, source_mask, rngs=rngs)
        return x.astype(self.dtype), (jnp.ones(x.shape[:2], bool) if mask_bs is None else mask_bs)

    def encode(self, source_bs: jax.Array, source_mask_bs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        """The final-normed encoder output [B, S, D] (padding rows are computed but never attended)."""
        if self.source == "audio":
            return self.encode_masked(source_bs, source_mask_bs, rngs)[0]
        s = source_bs.shape[1]
        positions = jnp.arange(s)[None]
        bias = self.encoder_bias(positions, positions)
        x = self.dropout(self.shared(source_bs), deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        mask_bts = source_mask_bs[:, None, :]
        remat = ENCODER_REMAT[self.remat]
        for layer in self.encoder:
            x = layer(x, mask_bts, bias, rngs) if remat is None else remat(layer, x, mask_bts, bias, rngs)
        return self.dropout(self.encoder_norm(x), deterministic=rngs is None, rngs=rngs).astype(self.dtype)

    def hidden(self, tokens_bt: jax.Array, *, cache: list[KVCache] | None = None, cache_index: jax.Array | int = 0,
               prefill: bool = False, positions_bt: jax.Array | None = None, mask_bs: jax.Array | None = None,
               cross_kv: list[KVCache] | None = None, source_mask_bs: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> tuple[jax.Array, list[KVCache] | None]:
        """The decoder's final-normed output [B, T, D], GPT.hidden's contract for generation: with a
        cache (from init_cache) the cross-attention keys/values and source mask come from it;
        without, from cross_kv and source_mask_bs. mask_bs: which key slots hold real tokens
        (left-padded prompts); key positions are counted from each row's first real slot."""
        b, t = tokens_bt.shape
        if cache is not None:
            cross_kv = [{"k": c["ck"], "v": c["cv"]} for c in cache]
            source_mask_bs = cache[0]["source_mask"]
        start = 0 if prefill or cache is None else cache_index
        if positions_bt is None:
            positions_bt = jnp.broadcast_to(start + jnp.arange(t), (b, t))
        keys = t if cache is None or prefill else cache[0]["v"].shape[2]
        if mask_bs is None:
            key_pos = jnp.arange(keys)[None]
        else:
            key_pos = jnp.cumsum(mask_bs[:, :keys], axis=1) - 1
        bias = None if self.decoder_bias is None else self.decoder_bias(positions_bt, key_pos)
        mask_bts = None if mask_bs is None else mask_bs[:, None, :]
        x = self.shared(tokens_bt)
        if self.decoder_bias is None:
            x = x + jnp.take(gathered(self.decoder_positions), positions_bt, axis=0)
        x = self.dropout(x, deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        new_cache = [] if cache is not None else None
        remat = DECODER_REMAT[self.remat] if cache is None else None
        for i, layer in enumerate(self.decoder):
            if remat is not None:
                x = remat(layer, x, mask_bts, bias, cross_kv[i], source_mask_bs, rngs)
                continue
            self_cache = None if cache is None else {"k": cache[i]["k"], "v": cache[i]["v"]}
            x, self_cache = layer(x, mask_bts=mask_bts, bias_bhts=bias, cross_kv=cross_kv[i],
                                  source_mask_bs=source_mask_bs, cache=self_cache, cache_index=cache_index,
                                  prefill=prefill, rngs=rngs)
            if cache is not None:
                new_cache.append({**cache[i], **self_cache})
        x = self.dropout(self.decoder_norm(x), deterministic=rngs is None, rngs=rngs)
        return x, new_cache

    def logits(self, x_btd: jax.Array) -> jax.Array:
        if self.lm_head is None:  # T5 v1.0: the tied head sees the output scaled by width**-0.5 (Whisper: not)
            scale = self.cfg.width ** -0.5 if self.cfg.get("scale_head", True) else 1.0
            logits = self.shared.attend(x_btd * scale, self.dtype)
        else:
            logits = matmul(x_btd, gathered(self.lm_head), self.dtype)
        return constrain(logits, ("batch", None, "act_vocab"))

    def init_cache(self, batch: int, max_len: int | None = None, dtype: Any = None, *,
                   source: tuple[jax.Array, jax.Array]) -> list[KVCache]:
        """Runs the encoder once on source = (tokens [B, S] or audio features [B, T, M], mask) and
        returns, per decoder layer, an empty self-attention cache of max_len slots beside the
        cross-attention keys and values of the encoded source (and its mask) that every decoding
        step reuses."""
        cfg, dtype = self.cfg, dtype or self.dtype
        encoded, mask_bs = self.encode_masked(*source)
        slots = max_len or cfg.max_len
        caches = []
        for layer, self_kv in zip(self.decoder, init_kv_cache(batch, len(self.decoder), cfg.num_heads, slots,
                                                               cfg.head_dim, dtype)):
            kv = layer.cross.keys_values(encoded, dtype)
            caches.append({**self_kv, "ck": kv["k"], "cv": kv["v"], "source_mask": mask_bs})
        return caches


def count_params(cfg: ml_collections.ConfigDict, include_embeddings: bool = True) -> int:
    """Parameter count from the config alone (FLOPs; a test checks it against the model). Position
    tables count as embeddings; the audio encoder's convs as layers."""
    d, f, inner, h = cfg.width, cfg.mlp_dim, cfg.num_heads * cfg.head_dim, cfg.num_heads
    b = 1 if cfg.get("use_bias", False) else 0
    norm = d * (2 if cfg.get("norm", "rmsnorm") == "layernorm" and b else 1)
    attn = 4 * d * inner + b * (3 * inner + d)
    hidden = 2 if cfg.activation in GATED else 1
    mlp = d * f * (hidden + 1) + b * (f * hidden + d)
    n = cfg.num_decoder_layers * (2 * attn + mlp + 3 * norm) + norm
    if cfg.get("source", "tokens") == "audio":  # AudioEncoder: biased blocks, LayerNorm, width // heads per head
        block = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
        n += 3 * cfg.num_mels * d + d + 3 * d * d + d + cfg.num_layers * block + 2 * d
        n += cfg.max_frames * d if include_embeddings else 0
    else:
        n += cfg.num_layers * (attn + mlp + 2 * norm) + norm + cfg.rel_buckets * h
    if cfg.get("positions", "relative") == "learned":
        n += cfg.max_len * d if include_embeddings else 0
    else:
        n += cfg.rel_buckets * h
    if not cfg.tie_embeddings:
        n += d * cfg.vocab_size
    if include_embeddings:
        n += cfg.vocab_size * d
    return n
