"""Bag-of-n-grams baselines for the labeled sets in data/labeled.py: the number a finetuned encoder
has to beat. scikit-learn, CPU, seconds."""

from __future__ import annotations

import collections

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge


def tfidf_logreg(train: list[tuple[str, int]], test: list[tuple[str, int]], seed: int = 0) -> dict:
    """TF-IDF of word 1-2 grams + logistic regression (default C): test accuracy, and the accuracy of
    always predicting train's most common label."""
    texts, labels = zip(*train)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
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
