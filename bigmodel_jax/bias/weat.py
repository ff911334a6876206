"""The Word Embedding Association Test (Caliskan, Bryson & Narayanan 2017), and its sentence form
SEAT (May et al. 2019): the same statistic over sentence embeddings.

For target sets X, Y and attribute sets A, B, each target w has an association
s(w, A, B) = mean cos(w, a) - mean cos(w, b). The effect size is
d = (mean_x s(x) - mean_y s(y)) / std_{w in X u Y} s(w) (sample std, ddof=1), a Cohen's d; the
p-value is the one-sided permutation test of the paper: the share of equal-size re-partitions
{X_i, Y_i} of X u Y whose statistic exceeds the observed one. s(w, A, B) does not depend on the
partition, so that is a two-sample permutation test on the associations: scipy's
`permutation_test` runs it, exactly when the partitions are few, else on n_resamples draws.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def associations(w_nd: np.ndarray, a_md: np.ndarray, b_kd: np.ndarray) -> np.ndarray:
    """s(w, A, B) for each row of w [N]: its mean cosine with A minus its mean cosine with B."""
    w = _unit(w_nd)
    return (w @ _unit(a_md).T).mean(1) - (w @ _unit(b_kd).T).mean(1)


def _mean_difference(sx, sy, axis=-1):
    return np.mean(sx, axis=axis) - np.mean(sy, axis=axis)


def weat(x_nd: np.ndarray, y_nd: np.ndarray, a_md: np.ndarray, b_kd: np.ndarray, n_resamples: int = 100_000,
         seed: int = 0) -> dict[str, float]:
    """{"d": effect size, "p": one-sided permutation p-value, "s": the test statistic
    sum_x s(x) - sum_y s(y), "diff": mean_x s(x) - mean_y s(y) (d before its division by the spread,
    in cosine units: a shrinking bias shows here even when d, scale-free, does not), "exact":
    whether every partition was enumerated} for targets X, Y
    [n, D] and attributes A, B [m, D] (rows: one embedding per word or sentence)."""
    for name, v in (("X", x_nd), ("Y", y_nd), ("A", a_md), ("B", b_kd)):
        if np.ndim(v) != 2 or len(v) < 2:
            raise ValueError(f"WEAT set {name} must be at least 2 embeddings [n, D], got shape {np.shape(v)}")
    sx, sy = associations(x_nd, a_md, b_kd), associations(y_nd, a_md, b_kd)
    d = _mean_difference(sx, sy) / np.std(np.concatenate([sx, sy]), ddof=1)
    test = stats.permutation_test((sx, sy), _mean_difference, permutation_type="independent", vectorized=True,
                                  n_resamples=n_resamples, alternative="greater", rng=np.random.default_rng(seed))
    exact = _partitions(len(sx), len(sy)) <= n_resamples
    return {"d": float(d), "p": float(test.pvalue), "s": float(sx.sum() - sy.sum()),
            "diff": float(_mean_difference(sx, sy)), "exact": bool(exact)}


def _partitions(n: int, m: int) -> float:
    from math import comb

    return float(comb(n + m, n))
