"""Evaluation metrics with the field's definitions (seqeval entities, the official SQuAD
normalization, scikit-learn) and the trainer's evaluation over a whole split: ratios from corpus
counts, padding dropped, order restored."""

import jax
import numpy as np
import pytest

from bigmodel_jax import eval_metrics, sharding, train
from bigmodel_jax.tasks import qa, tag
from bigmodel_jax.tasks.protocol import EvalSet


def test_entity_scores_count_whole_entities_as_conlleval():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O"]]  # the first PER is cut short: wrong entity
    s = eval_metrics.entities(gold, pred)
    # 3 gold entities, 3 predicted, 2 right (LOC and the second PER)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert eval_metrics.entities([["O", "O"]], [["O", "O"]])["f1"] == 0.0  # nothing to find: 0, no warning


def test_squad_normalization_max_over_gold_answers_and_unanswerable():
    assert eval_metrics.normalize_answer("The  Duke of York!") == "duke of york"
    s = eval_metrics.squad(["the Duke of York", "King Richard", "", "Romeo"],
                           [["Duke of York", "York"], ["KING RICHARD II"], [], ["Juliet"]])
    # EM: 1 (normalized), 0, 1 (no answer predicted for an unanswerable question), 0
    assert s["exact_match"] == pytest.approx(2 / 4)
    # F1: 1; "king richard" vs "king richard ii": P 1, R 2/3 -> 0.8; 1; 0
    assert s["f1"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)


def test_classification_and_regression_use_sklearn_definitions():
    s = eval_metrics.classification(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    assert s["accuracy"] == 0.75
    assert s["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)  # class 0: P 2/3 R 1; class 1: P 1 R 1/2
    r = eval_metrics.regression(np.array([1.0, 2.0]), np.array([0.0, 4.0]))
    assert (r["mse"], r["mae"]) == (pytest.approx(2.5), pytest.approx(1.5))


def test_tag_corpus_metrics_count_truncated_words_as_missed():
    names = ("O", "B-SPK", "I-SPK")
    # one example of 4 words; the window held only the first 2 (labels >= 0 at their first sub-tokens)
    outputs = {"pred": np.array([[0, 1, 0, 2, 0]]), "labels": np.array([[-1, 1, -1, 2, -1]]),
               "nll": np.array([0.4]), "tokens": np.array([2.0])}
    gold = [["B-SPK", "I-SPK", "O", "B-SPK"]]  # the second entity lies past the window
    s = tag.corpus_metrics(outputs, {"label_names": names, "tags": gold})
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and s["accuracy"] == 1.0
    assert s["loss"] == pytest.approx(0.2)


def test_qa_corpus_metrics_turn_spans_into_context_text():
    context = "ROMEO: But soft! JULIET: Ay me."
    offsets = np.zeros((6, 2), np.int32)
    offsets[2], offsets[3] = (17, 23), (23, 24)  # tokens "JULIET", ":"
    reference = [(context, offsets, ["JULIET"]), (context, offsets, ["JULIET"]), (context, offsets, [])]
    outputs = {"start": np.array([2, 2, 0]), "end": np.array([2, 3, 0]), "loss": np.array([1.0, 2.0, 3.0])}
    s = qa.corpus_metrics(outputs, reference)
    # "JULIET" exact; "JULIET:" normalizes to "juliet": exact too; [CLS] on an unanswerable: right
    assert s["exact_match"] == 1.0 and s["f1"] == 1.0 and s["loss"] == 2.0


def test_trainer_evaluation_is_corpus_level_drops_padding_and_restores_order():
    """Two batches of different sizes: the mean of per-batch F1 differs from the split's F1; the
    trainer reports the split's. Rows arrive out of order with a padding row (weight 0)."""
    names = ("O", "B-X")
    golds = [["B-X"], ["B-X"], ["B-X"], ["O"]]
    preds = [["B-X"], ["O"], ["O"], ["B-X"]]
    ids = {"O": 0, "B-X": 1}
    batches = []
    for rows in ([0, 1], [3, 2]):  # the second batch out of order, then a padding row
        idx = rows + [0]
        batches.append({"pred": np.array([[ids[preds[i][0]]] for i in idx]),
                        "labels": np.array([[ids[golds[i][0]]] for i in idx]),
                        "nll": np.ones(3, np.float32), "tokens": np.ones(3, np.float32),
                        "weight": np.array([1, 1, 0], np.float32), "index": np.array(idx, np.int32)})
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    got = train.evaluate(lambda params, batch: batch, None, EvalSet(batches, "4", {"label_names": names,
                                                                                   "tags": golds}), mesh, tag)
    assert got["f1"] == pytest.approx(eval_metrics.entities(golds, preds)["f1"])  # 1 right of 3 gold, 2 predicted
    per_batch = np.mean([eval_metrics.entities(golds[:2], preds[:2])["f1"],
                         eval_metrics.entities(golds[2:], preds[2:])["f1"]])
    assert got["f1"] == pytest.approx(0.4) and per_batch == pytest.approx(1 / 3)
