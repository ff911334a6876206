"""Top-k ranking metrics with one relevant item per user: hit rate and NDCG at k, by full ranking
over every item (the user's seen items masked) or over the target and sampled negatives.

Ties are scored as their expectation over a uniformly random order of the tied items: a
popularity baseline gives many items the same score, and breaking ties by item id (what a sort
does) would move its numbers by chance. For one relevant item this expectation equals
scikit-learn's tie-averaged `ndcg_score` (McSherry & Najork 2008), which a test checks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def hit_ndcg(scores_bn: np.ndarray, target_col_b: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per row: HR@k and NDCG@k of the column target_col_b among the row's scores [B, N] (higher
    ranks first; -inf never ranks above a finite target)."""
    scores_bn = np.asarray(scores_bn, np.float64)
    rows = np.arange(len(scores_bn))
    target = scores_bn[rows, target_col_b][:, None]
    higher = (scores_bn > target).sum(1)
    tied = (scores_bn == target).sum(1)  # includes the target itself
    discount = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2))])  # discount[j]: first j ranks
    first, last = np.minimum(higher, k), np.minimum(higher + tied, k)
    return {"hr": (last - first) / tied, "ndcg": (discount[last] - discount[first]) / tied}


def mask_seen(scores_bi: np.ndarray, inputs: Sequence[np.ndarray], targets_b: np.ndarray) -> np.ndarray:
    """A copy with -inf at padding (item 0) and at each user's input items other than the target:
    full ranking recommends only what the user has not seen."""
    out = np.array(scores_bi, np.float64)
    out[:, 0] = -np.inf
    for u, items in enumerate(inputs):
        out[u, items[items != targets_b[u]]] = -np.inf
    return out


def full_ranking(scores_bi: np.ndarray, inputs: Sequence[np.ndarray], targets_b: np.ndarray,
                 k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k over all items, averaged over users."""
    m = hit_ndcg(mask_seen(scores_bi, inputs, targets_b), targets_b, k)
    return {f"hr{k}": float(m["hr"].mean()), f"ndcg{k}": float(m["ndcg"].mean())}


def sampled_ranking(scores_bi: np.ndarray, targets_b: np.ndarray, negatives_bn: np.ndarray,
                    k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of the target among it and its row of negatives, averaged over users."""
    candidates = np.concatenate([targets_b[:, None], negatives_bn], axis=1)
    picked = np.take_along_axis(np.asarray(scores_bi), candidates, axis=1)
    m = hit_ndcg(picked, np.zeros(len(picked), int), k)
    return {f"hr{k}": float(m["hr"].mean()), f"ndcg{k}": float(m["ndcg"].mean())}
