"""Evaluation metrics over a whole split, with the field's definitions.

A ratio (accuracy, precision, recall, F1, a mean loss) is computed from the counts of the whole
split, never as a mean of per-batch values: the trainer gathers every example's outputs first
(`tasks/protocol.py`: eval_fn, then corpus_metrics). The definitions come from the libraries the
field reports with: scikit-learn for classification and regression, `seqeval` for entity-level
tagging scores (CoNLL's conlleval counting: an entity is right only when its type and both of its
boundaries are), and the official SQuAD v1.1/v2.0 evaluation's answer normalization for extractive
QA (the script is a few lines of string handling; no package ships it offline). Scores are
fractions in [0, 1] (the SQuAD script and CoNLL papers print them x 100).
"""

from __future__ import annotations

import collections
import math
import re
import string
from typing import Sequence

import numpy as np
from seqeval import metrics as seqeval_metrics
from sklearn import metrics as sk_metrics

# every validation metric a task reports -> whether higher is better (the trainer's best checkpoint,
# early stopping, and the sweep's report and search all read it here)
EVAL_METRICS = {"loss": False, "perplexity": False, "mse": False, "mae": False, "accuracy": True,
                "macro_f1": True, "precision": True, "recall": True, "f1": True, "exact_match": True,
                "token_accuracy": True, "bleu": True, "chrf": True, "per": False, "wer": False, "cer": False,
                **{f"{m}10{p}": True for m in ("hr", "ndcg") for p in ("", "_uniform", "_popular")}}


def mean_loss(loss_sum: np.ndarray, count: np.ndarray | None = None) -> float:
    """Total loss over total count (tokens or examples): per-example sums in, one corpus mean out."""
    total = float(np.sum(count)) if count is not None else float(len(loss_sum))
    return float(np.sum(loss_sum, dtype=np.float64)) / max(total, 1e-9)


def language_model(nll_sum: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """Mean next-token (or masked-token) negative log-likelihood per token, and its perplexity."""
    loss = mean_loss(nll_sum, tokens)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def classification(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Accuracy, and macro-averaged F1 over the classes present in the labels or predictions
    (scikit-learn's definition; it weighs a rare class like a frequent one)."""
    return {"accuracy": float(sk_metrics.accuracy_score(label, pred)),
            "macro_f1": float(sk_metrics.f1_score(label, pred, average="macro", zero_division=0))}


def classifier(outputs: dict[str, np.ndarray], reference: None = None) -> dict[str, float]:
    """corpus_metrics of a classifier task, from each example's "loss", "pred" and "label"."""
    return {"loss": mean_loss(outputs["loss"]), **classification(outputs["pred"], outputs["label"])}


def regression(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"mse": float(sk_metrics.mean_squared_error(target, pred)),
            "mae": float(sk_metrics.mean_absolute_error(target, pred))}


def entities(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 over IOB tag sequences (seqeval's default
    mode, which counts entities as CoNLL-2003's conlleval does)."""
    kw = dict(zero_division=0)
    return {"precision": float(seqeval_metrics.precision_score(gold, pred, **kw)),
            "recall": float(seqeval_metrics.recall_score(gold, pred, **kw)),
            "f1": float(seqeval_metrics.f1_score(gold, pred, **kw))}


# ----------------------------------------------------------------------------- SQuAD
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalization: lower case, punctuation and the articles a/an/the
    removed, white space collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(pred: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # SQuAD v2: "no answer" is right only against "no answer"
        return float(pred_tokens == gold_tokens)
    common = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], gold_answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and token F1, each the max over a question's gold answers, averaged over the
    questions. A question without gold answers (SQuAD v2.0 unanswerable) has the gold answer ""
    and only an empty prediction scores on it, as in the official v2.0 script."""
    em, f1 = [], []
    for pred, golds in zip(predictions, gold_answers, strict=True):
        golds = [g for g in golds if normalize_answer(g)] or [""]
        em.append(max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds))
        f1.append(max(_f1(pred, g) for g in golds))
    n = max(len(em), 1)
    return {"exact_match": sum(em) / n, "f1": sum(f1) / n}


def translation(hypotheses: Sequence[str], references: Sequence[str], target_lang: str) -> dict[str, float]:
    """sacrebleu's corpus BLEU and chrF (both in [0, 1] here, sacrebleu prints x 100). Japanese has
    no spaces between words: its BLEU counts characters (sacrebleu's `char` tokenizer; `ja-mecab`
    needs MeCab and a dictionary, which do not ship offline), chrF is character-based anyway."""
    import sacrebleu

    tokenize = "char" if target_lang == "ja" else "13a"
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
    return {"bleu": bleu.score / 100, "chrf": chrf.score / 100}


def speech_errors(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus character and word error rates (jiwer: edits over all references' characters / words)."""
    import jiwer

    return {"cer": float(jiwer.cer(references, hypotheses)), "wer": float(jiwer.wer(references, hypotheses))}


def phoneme_errors(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """G2P's phoneme error rate (edit distance over phonemes / reference phonemes, jiwer's WER on
    space-separated phonemes) and word error rate (a word is wrong unless it equals one of its
    pronunciations exactly). A word with several pronunciations is scored against the closest."""
    import jiwer

    edits = total = wrong = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        scored = [(jiwer.process_words(ref, hyp if hyp.strip() else "<empty>"), ref) for ref in refs]
        out, ref = min(scored, key=lambda s: s[0].wer)
        edits += out.substitutions + out.deletions + out.insertions
        total += len(ref.split())
        wrong += hyp.split() != ref.split()
    return {"per": edits / max(total, 1), "wer": wrong / max(len(hypotheses), 1)}
