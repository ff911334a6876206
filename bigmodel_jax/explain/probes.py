"""Linear probes (Alain & Bengio 2016; Tenney et al. 2019): a logistic regression per layer on
frozen representations. The layer whose probe predicts a property best is where that property is
most linearly readable, not necessarily where the model computes it; the majority-class rate is
the floor every layer is read against."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bigmodel_jax.explain.render import pyplot, save


def fit_probes(train_layers: Sequence[np.ndarray], y_train: np.ndarray, test_layers: Sequence[np.ndarray],
               y_test: np.ndarray, seed: int = 0) -> list[dict]:
    """One row per layer: test accuracy, macro-F1 and the majority baseline of a scikit-learn
    logistic regression (features standardized on the training set) fit on that layer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    majority = float(np.mean(y_test == np.bincount(y_train).argmax()))
    rows = []
    for layer, (x_train, x_test) in enumerate(zip(train_layers, test_layers)):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        probe.fit(x_train, y_train)
        pred = probe.predict(x_test)
        rows.append({"layer": layer, "accuracy": float(accuracy_score(y_test, pred)),
                     "macro_f1": float(f1_score(y_test, pred, average="macro")), "majority": majority})
    return rows


def probes_png(rows: list[dict], path, title: str):
    plt = pyplot()
    layers = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(layers, [r["accuracy"] for r in rows], "o-", label="probe accuracy (test)")
    ax.plot(layers, [r["macro_f1"] for r in rows], "s--", label="probe macro-F1 (test)")
    ax.axhline(rows[0]["majority"], color="gray", linestyle=":", label="majority class")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_xticks(layers)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save(fig, path)
