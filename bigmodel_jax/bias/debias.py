"""Hard-debiasing by projection (Bolukbasi et al. 2016), the post-hoc baseline: find a gender
direction from definitional pairs (she - he, woman - man, ...) and remove it from the vectors that
should be gender-neutral. Works on any vectors: word embeddings, or the pooled features a
finetuned classifier's head reads (bias/probe.py applies it there)."""

from __future__ import annotations

import numpy as np


def gender_direction(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The unit first principal component [D] of the pairs centered on their own means (each pair
    contributes its two halves-differences), Bolukbasi et al.'s definition; oriented so that the
    first member of the first pair (the female word, by our convention) has the larger projection."""
    if len(pairs) < 2:
        raise ValueError(f"a gender direction needs at least 2 definitional pairs, got {len(pairs)}")
    rows = []
    for f, m in pairs:
        center = (np.asarray(f, np.float64) + np.asarray(m, np.float64)) / 2
        rows += [f - center, m - center]
    direction = np.linalg.svd(np.stack(rows), full_matrices=False)[2][0]
    f, m = pairs[0]
    return direction if (np.asarray(f) - np.asarray(m)) @ direction >= 0 else -direction


def neutralize(vectors_nd: np.ndarray, direction_d: np.ndarray, renormalize: bool = False) -> np.ndarray:
    """vectors minus their component along the (unit) direction; renormalize: back to their norms
    (word embeddings, compared by cosine)."""
    v = np.asarray(vectors_nd, np.float64)
    out = v - np.outer(v @ direction_d, direction_d)
    if renormalize:
        out *= np.linalg.norm(v, axis=-1, keepdims=True) / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True),
                                                                       1e-12)
    return out.astype(np.float32)
