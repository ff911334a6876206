"""Bag-of-n-grams baselines for the labeled sets in data/labeled.py: the number a finetuned encoder
has to beat. scikit-learn, CPU, seconds."""

from __future__ import annotations

import collections

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge


def tfidf_logreg(train: list[tuple[str, int]], test: list[tuple[str, int]], seed: int = 0,
                 chars: bool = False) -> dict:
    """TF-IDF of word 1-2 grams (chars: character 1-4 grams, for single-word records) + logistic
    regression (default C): test accuracy, and the accuracy of always predicting train's most common
    label."""
    texts, labels = zip(*train)
    vectorizer = (TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False, sublinear_tf=True)
                  if chars else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1))
    model = LogisticRegression(solver="saga", max_iter=1000, random_state=seed)  # 25x faster than lbfgs here
    model.fit(vectorizer.fit_transform(texts), labels)
    test_texts, test_labels = zip(*test)
    predicted = model.predict(vectorizer.transform(test_texts))
    majority = collections.Counter(labels).most_common(1)[0][0]
    test_labels = np.asarray(test_labels)
    return {"accuracy": float(np.mean(predicted == test_labels)),
            "majority_accuracy": float(np.mean(test_labels == majority))}


def tfidf_ridge(train: list[tuple[str, float]], test: list[tuple[str, float]]) -> dict:
    """TF-IDF of character 1-4 grams (VADER records are single words and emoticons) + ridge
    regression: test MSE, and the MSE of predicting train's mean."""
    texts, values = zip(*train)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False, sublinear_tf=True)
    model = Ridge(alpha=1.0)
    model.fit(vectorizer.fit_transform(texts), values)
    test_texts, test_values = zip(*test)
    test_values = np.asarray(test_values, dtype=np.float64)
    predicted = model.predict(vectorizer.transform(test_texts))
    return {"mse": float(np.mean((predicted - test_values) ** 2)),
            "mean_baseline_mse": float(np.mean((np.mean(values) - test_values) ** 2))}


def svm_rbf(train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
            test: tuple[np.ndarray, np.ndarray], grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0)) -> dict:
    """An RBF-kernel SVM on raw pixels (the classic strong baseline on small digit images): C picked
    on the validation split (gamma='scale'), then refit on train and scored once on test. Images
    are flattened; (x, y) pairs with x [N, ...] in [0, 1]."""
    from sklearn.svm import SVC

    flat = [(x.reshape(len(x), -1), y) for x, y in (train, validation, test)]
    (xtr, ytr), (xva, yva), (xte, yte) = flat
    val_acc = {c: float(SVC(C=c, kernel="rbf", gamma="scale").fit(xtr, ytr).score(xva, yva)) for c in grid}
    best_c = max(val_acc, key=lambda c: (val_acc[c], -c))  # ties: the smaller C (more regularized)
    model = SVC(C=best_c, kernel="rbf", gamma="scale").fit(xtr, ytr)
    majority = collections.Counter(ytr.tolist()).most_common(1)[0][0]
    return {"accuracy": float(model.score(xte, yte)), "C": best_c, "validation_accuracy": val_acc[best_c],
            "majority_accuracy": float(np.mean(yte == majority))}


def logreg_pixels(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Multinomial logistic regression on raw pixels: the linear baseline."""
    (xtr, ytr), (xte, yte) = [(x.reshape(len(x), -1), y) for x, y in (train, test)]
    model = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    return {"accuracy": float(model.score(xte, yte))}


def retrieval(train: list[tuple[str, str]], sources: list[str], analyzer: str = "word") -> list[str]:
    """Translation memory: for each source, the target of the most similar training source (TF-IDF
    cosine over word 1-2 grams, or character 1-4 grams with analyzer="char" for text without
    spaces, Japanese, or spelled-out letters). The baseline a seq2seq model has to beat."""
    train_sources, train_targets = zip(*train)
    vectorizer = (TfidfVectorizer(analyzer="char", ngram_range=(1, 4), sublinear_tf=True) if analyzer == "char"
                  else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"))
    memory = vectorizer.fit_transform(train_sources)
    queries = vectorizer.transform(sources)
    best = []
    for start in range(0, queries.shape[0], 256):  # a dense [256, N] block of similarities at a time
        best.extend(np.asarray((queries[start:start + 256] @ memory.T).argmax(axis=1)).ravel().tolist())
    return [train_targets[i] for i in best]
