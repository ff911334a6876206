"""Audio Transformer encoder (Whisper's encoder, Radford et al. 2022) and a CTC recognizer on it.

    log-mel [B, T, M] --conv k3 s1, GELU--> --conv k3 s2, GELU--> + sinusoids --> [Block x N] --LayerNorm-->
    [B, T/2, D]  (a CTC recognizer adds a linear head over the characters and the blank: CTCRecognizer)

Each convolution (kernel 3, padding 1) is one Dense over the concatenation of frames t-1, t, t+1,
so it shares the matmul precision policy and logical axes with every other layer; a kernel stored
[3 * C_in, C_out] in (tap, channel) order is Hugging Face's Conv1d weight [C_out, C_in, 3]
transposed. The blocks are the pre-LN blocks of GPT/ViT (LayerNorm, biases, exact GELU), bidirectional
with a padding mask; the position table starts as Whisper's fixed sinusoids and is a parameter (as
Hugging Face stores it, so imported weights carry their own).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.models.blocks import Block, run_blocks
from bigmodel_jax.models.layers import DTYPES, Dense, Norm, gathered

ARCH_KEYS = ("num_mels", "num_layers", "width", "num_heads", "mlp_dim", "max_frames", "conv_stride", "norm_eps")


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's position table [length, channels]: sines then cosines over geometric timescales."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    angles = np.arange(length)[:, None] * inv[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def conv3(dense: Dense, x_btc: jax.Array, stride: int, rngs: nnx.Rngs | None = None) -> jax.Array:
    """A kernel-3, padding-1 convolution over time as one Dense on each frame's neighbourhood."""
    x = jnp.pad(x_btc, ((0, 0), (1, 1), (0, 0)))
    windows = jnp.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=-1)
    return dense(windows[:, ::stride], rngs)


def encoded_frames(frames: jax.Array | np.ndarray | int, stride: int) -> jax.Array | np.ndarray | int:
    """Positions the encoder gives for that many feature frames (the second conv's stride)."""
    return -(-frames // stride)


class AudioEncoder(nnx.Module):
    """cfg: the `model` section (configs/ctc_asterisk.py has every field; hf_whisper.py maps Whisper's)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)
        self.dtype = DTYPES[cfg.dtype]
        d = cfg.width
        self.conv1 = Dense(3 * cfg.num_mels, d, (None, "embed"), rngs=rngs, dtype=self.dtype)
        self.conv2 = Dense(3 * d, d, (None, "embed"), rngs=rngs, dtype=self.dtype)
        self.pos_embed = nnx.Param(jnp.asarray(sinusoids(cfg.max_frames, d)), out_sharding=(None, "embed"),
                                   eager_sharding=False)
        self.dropout = nnx.Dropout(cfg.dropout)
        self.blocks = nnx.List([
            Block(d, cfg.num_heads, cfg.num_heads, cfg.mlp_dim, rngs=rngs, causal=False, norm="layernorm",
                  activation="gelu", dropout=cfg.dropout, dtype=self.dtype, norm_eps=cfg.norm_eps,
                  remat=cfg.get("remat", "none"), attention_impl=cfg.get("attention_impl", "plain"))
            for _ in range(cfg.num_layers)])
        self.final_norm = Norm(d, "layernorm", eps=cfg.norm_eps)

    def __call__(self, feats_btm: jax.Array, mask_bt: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array | None]:
        """Log-mel features [B, T, M] (and which frames are real) -> final-normed states [B, T', D]
        f32 and the mask of real positions (T' = ceil(T / conv_stride))."""
        stride = self.cfg.conv_stride
        x = jax.nn.gelu(conv3(self.conv1, feats_btm, 1, rngs), approximate=False)
        x = jax.nn.gelu(conv3(self.conv2, x, stride, rngs), approximate=False)
        t = x.shape[1]
        if t > self.cfg.max_frames:
            raise ValueError(f"{t} encoder positions ({feats_btm.shape[1]} feature frames) exceed model.max_frames="
                             f"{self.cfg.max_frames}: raise it or cut the audio shorter")
        x = x + gathered(self.pos_embed)[None, :t]
        x = self.dropout(x, deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        mask = None if mask_bt is None else mask_bt[:, ::stride]
        positions_bt = jnp.zeros(x.shape[:2], jnp.int32)  # unused: positions are the table above
        x = run_blocks(self.blocks, x, positions_bt, None if mask is None else mask[:, None, :], rngs=rngs,
                       scan=self.cfg.get("scan_layers", False))
        return self.final_norm(x), mask


class CTCRecognizer(nnx.Module):
    """The audio encoder and a linear head over the vocabulary (id 0: CTC's blank)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.encoder = AudioEncoder(cfg, rngs=rngs)
        self.head = Dense(cfg.width, cfg.vocab_size, ("embed", None), rngs=rngs, dtype=DTYPES[cfg.dtype])

    def __call__(self, feats_btm: jax.Array, mask_bt: jax.Array, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        """f32 logits [B, T', V] over the encoder's positions and their mask."""
        x, mask = self.encoder(feats_btm, mask_bt, rngs=rngs)
        return self.head(x), mask


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    """Matmul parameters per encoder position: the blocks, the second conv and the head (the first
    conv runs on conv_stride frames per position)."""
    d, f = cfg.width, cfg.mlp_dim
    return (cfg.num_layers * (4 * d * d + 2 * d * f) + 3 * d * d + cfg.get("vocab_size", 0) * d
            + cfg.conv_stride * 3 * cfg.num_mels * d)
