"""Vision Transformer (Dosovitskiy et al. 2021, as in Hugging Face's ViTModel): the image is cut
into patch_size x patch_size patches, each flattened and projected (a reshape + Dense, the same
map as a strided conv), a [CLS] token is prepended (or the patches are mean-pooled), learned
position embeddings over the 2-D patch grid are added, pre-LN encoder blocks, a final LayerNorm
and a linear classifier.

The position embeddings are stored as HF and timm store them: [prefix + grid_h * grid_w, D] with
the [CLS] row first and the grid in row-major order; `resample_pos_embed` maps them to another
grid (finetuning at another image size), as torch's bicubic `interpolate` does in HF's ViT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.models.blocks import Block, run_blocks
from bigmodel_jax.models.layers import DTYPES, Dense, Norm, gathered, param
# The model values an init_from source fixes. image_size and num_classes may differ: the position
# embeddings are resampled to the new patch grid and a classifier of another size starts fresh.
ARCH_KEYS = ("num_layers", "width", "num_heads", "mlp_dim", "patch_size", "num_channels", "pool", "activation",
             "norm_eps")


def patchify(images_bhwc: jax.Array, patch: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]: patches in row-major grid order, each flattened
    as (row, column, channel)."""
    b, h, w, c = images_bhwc.shape
    x = images_bhwc.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def num_tokens(cfg: ml_collections.ConfigDict) -> int:
    """Sequence length the encoder runs on: the patches, plus [CLS] with pool='cls'."""
    return (cfg.image_size // cfg.patch_size) ** 2 + (cfg.pool == "cls")


class ViT(nnx.Module):
    """cfg is the `model` section of a config (see configs/vit_digits.py)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.cfg = cfg = ml_collections.FrozenConfigDict(cfg)
        self.dtype = DTYPES[cfg.dtype]
        d, p = cfg.width, cfg.patch_size
        self.patch_embed = Dense(p * p * cfg.num_channels, d, (None, "embed"), rngs=rngs, dtype=self.dtype)
        self.cls_token = param(rngs.params(), (d,), ("embed",)) if cfg.pool == "cls" else None
        self.pos_embed = param(rngs.params(), (num_tokens(cfg), d), (None, "embed"))
        self.embed_dropout = nnx.Dropout(cfg.dropout)
        # stochastic depth grows linearly with depth, 0 at the first block (as DeiT / timm)
        rates = np.linspace(0.0, cfg.drop_path, cfg.num_layers) if cfg.num_layers > 1 else [cfg.drop_path]
        self.blocks = nnx.List([
            Block(d, cfg.num_heads, cfg.num_heads, cfg.mlp_dim, rngs=rngs, causal=False, norm="layernorm",
                  activation=cfg.activation, dropout=cfg.dropout, dtype=self.dtype, norm_eps=cfg.norm_eps,
                  drop_path=float(rate), remat=cfg.get("remat", "none"),
                  attention_impl=cfg.get("attention_impl", "plain"))
            for rate in rates])
        self.final_norm = Norm(d, "layernorm", eps=cfg.norm_eps)
        # zero-init classifier (big_vision): every class starts at the same logit
        self.head = Dense(d, cfg.num_classes, ("embed", None), rngs=rngs, std=0.0, dtype=self.dtype)

    def features(self, images_bhwc: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """The final-LayerNorm hidden states [B, T, D] in f32 ([CLS] first with pool='cls')."""
        c = self.cfg
        if images_bhwc.shape[1:] != (c.image_size, c.image_size, c.num_channels):
            raise ValueError(f"images of shape {images_bhwc.shape[1:]}; this model takes "
                             f"{(c.image_size, c.image_size, c.num_channels)} (resample the position embeddings "
                             "for another size: init_from a checkpoint with a new model.image_size)")
        x = self.patch_embed(patchify(images_bhwc, c.patch_size))  # [B, N, D] f32
        if self.cls_token is not None:
            cls = jnp.broadcast_to(gathered(self.cls_token), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        x = x + gathered(self.pos_embed)[None]
        x = self.embed_dropout(x, deterministic=rngs is None, rngs=rngs).astype(self.dtype)
        positions_bt = jnp.zeros(x.shape[:2], jnp.int32)  # unused: positions are the embeddings above
        x = run_blocks(self.blocks, x, positions_bt, rngs=rngs, scan=c.get("scan_layers", False))
        return self.final_norm(x)

    def __call__(self, images_bhwc: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """f32 logits [B, num_classes] from [CLS] (pool='cls') or the mean over patches (pool='mean').
        images_bhwc: normalized pixels (value range [-1, 1]), channels last."""
        h = self.features(images_bhwc, rngs=rngs)
        pooled = h[:, 0] if self.cls_token is not None else h.mean(axis=1)
        return self.head(pooled)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2 (torch's bicubic, a=-0.75)."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _resize_axis(x: np.ndarray, new: int, axis: int) -> np.ndarray:
    """Bicubic resampling along one axis, align_corners=False, edge taps clamped (torch's rule)."""
    old = x.shape[axis]
    src = (np.arange(new) + 0.5) * (old / new) - 0.5
    base = np.floor(src).astype(int)
    w = _cubic_weights(src - base)  # [new, 4]
    idx = np.clip(base[:, None] + np.arange(-1, 3)[None], 0, old - 1)  # [new, 4]
    x = np.moveaxis(x, axis, 0)
    out = np.einsum("nk,nk...->n...", w, x[idx])
    return np.moveaxis(out, 0, axis)


def resample_pos_embed(pos_td: np.ndarray, num_prefix: int, new_grid: tuple[int, int]) -> np.ndarray:
    """[prefix + gh*gw, D] -> [prefix + new_h*new_w, D]: the prefix ([CLS]) rows are kept, the
    square grid is resampled bicubically in 2-D (float64 inside, as HF's `interpolate_pos_encoding`
    computes in the checkpoint's dtype), so a checkpoint trained at one image size finetunes at another."""
    pos = np.asarray(pos_td, np.float64)
    prefix, grid = pos[:num_prefix], pos[num_prefix:]
    side = int(round(len(grid) ** 0.5))
    if side * side != len(grid):
        raise ValueError(f"position embeddings of {len(grid)} patches are not a square grid")
    g = grid.reshape(side, side, -1)
    g = _resize_axis(_resize_axis(g, new_grid[0], 0), new_grid[1], 1)
    return np.concatenate([prefix, g.reshape(-1, g.shape[-1])]).astype(np.float32)


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    """Matmul parameters per token: the blocks and the patch projection (the classifier runs once
    per image: ignored)."""
    d, f = cfg.width, cfg.mlp_dim
    return cfg.num_layers * (4 * d * d + 2 * d * f) + cfg.patch_size ** 2 * cfg.num_channels * d
