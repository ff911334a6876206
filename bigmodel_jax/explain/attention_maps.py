"""Attention maps as pictures: one layer's heads over the tokens, and attention rollout over all
layers (Abnar & Zuidema 2020) drawn on a ViT's image.

Rollout follows information from the input through the stack: each layer's head-averaged
attention, with the residual connection as an identity half, 0.5·A + 0.5·I renormalized by rows,
multiplied from the first layer to the last. Row i of the result says how much of token i's final
representation traces back to each input token; for a ViT, the [CLS] row over the patches is the
map drawn on the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bigmodel_jax.explain.render import pyplot, save


def rollout(probs_per_layer: Sequence[np.ndarray]) -> np.ndarray:
    """[T, S] rollout from each layer's probabilities [H, T, S] (one example), first layer first."""
    joint = None
    for probs_hts in probs_per_layer:
        a = np.asarray(probs_hts, np.float64).mean(0)
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        a = a / a.sum(-1, keepdims=True)
        joint = a if joint is None else a @ joint
    return joint


def heads_png(probs_hts: np.ndarray, tokens: Sequence[str], path: str | Path, title: str,
              heads: Sequence[int] | None = None, key_tokens: Sequence[str] | None = None) -> Path:
    """One PNG: a heatmap per head (rows: queries, columns: keys) labelled with the tokens; the keys
    are other tokens in cross-attention (key_tokens: a decoder's rows over the source's columns)."""
    plt = pyplot()
    heads = list(range(probs_hts.shape[0])) if heads is None else list(heads)
    keys = tokens if key_tokens is None else key_tokens
    t, s = len(tokens), len(keys)
    cols = min(len(heads), 4)
    rows = -(-len(heads) // cols)
    width, height = max(3.0, 0.28 * s), max(3.0, 0.28 * t)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        ax.axis("on")
        ax.imshow(probs_hts[h, :t, :s], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(s), keys, rotation=90, fontsize=7)
        ax.set_yticks(range(t), tokens, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save(fig, path, rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # room for the two-line title


def image_rollout_png(image_hwc: np.ndarray, rollout_ts: np.ndarray, grid: int, path: str | Path, title: str,
                      num_prefix: int = 1) -> Path:
    """The image beside it with the rollout of its [CLS] row over the grid x grid patches on top
    (a mean-pooled ViT has no [CLS]: the mean of every patch's row, num_prefix=0)."""
    plt = pyplot()
    row = rollout_ts[0] if num_prefix else rollout_ts.mean(0)
    patches = row[num_prefix:].reshape(grid, grid)
    image = np.asarray(image_hwc, np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-9)
    image = image[..., 0] if image.shape[-1] == 1 else image
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(image, cmap="gray")
    h, w = image.shape[:2]
    axes[1].imshow(patches, cmap="inferno", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5),  # pixel edges
                   interpolation="nearest")
    axes[1].set_title("attention rollout ([CLS] -> patches)" if num_prefix else "attention rollout (mean)",
                      fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
