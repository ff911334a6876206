"""Are the attributions faithful? Delete the k tokens they rank highest and the prediction should
fall further than when k random words are deleted (the deletion test / ERASER's comprehensiveness,
DeYoung et al. 2020). A deleted token is removed, the rest shifted left and padded, so the model
sees a shorter real sentence rather than a [MASK] or [PAD] it never trained on in the middle.
"""

from __future__ import annotations

import numpy as np


def top_k(scores_t: np.ndarray, words_t: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest-scored word tokens (not [CLS]/[SEP]/padding), in order."""
    candidates = np.flatnonzero(words_t)
    ranked = candidates[np.argsort(-scores_t[candidates], kind="stable")]
    return np.sort(ranked[:k])


def random_k(words_t: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    candidates = np.flatnonzero(words_t)
    return np.sort(rng.choice(candidates, size=min(k, len(candidates)), replace=False))


def delete(ids_t: np.ndarray, positions: np.ndarray, pad_id: int) -> np.ndarray:
    """ids_t without the tokens at `positions`, padded back to its length with pad_id."""
    kept = np.delete(ids_t, positions)
    return np.concatenate([kept, np.full(len(ids_t) - len(kept), pad_id, ids_t.dtype)])
