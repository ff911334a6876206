"""Finetuning heads' losses and span decoding on tiny batches with known answers; MLM masking
statistics; BERT padding invariance; the example pipelines."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from bigmodel_jax.data import pipeline
from bigmodel_jax.models.bert import Bert, BertMLM, count_params
from bigmodel_jax.models.heads import (best_spans, brier_score, classification_loss, regression_loss, span_loss,
                                       span_nll, tagging_loss, tagging_nll)
from bigmodel_jax.tasks.mlm import mask_tokens, num_predictions
from tests.conftest import ROOT


def small_bert_cfg(**kw):
    base = dict(vocab_size=50, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=16, type_vocab_size=2,
                activation="gelu", norm_eps=1e-12, dropout=0.0, dtype="float32", num_outputs=3)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_classification_loss_known_answer_and_padding_weight():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [9.0, 0.0, 0.0]])
    labels = jnp.array([0, 2, 1])
    weight = jnp.array([1.0, 1.0, 0.0])  # the third row is padding: ignored
    loss, m = classification_loss(logits, labels, weight)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(1 / (math.exp(3) + 2))
    assert float(loss) == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    assert float(m["weight"]) == 2.0


def np_softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_mse_classification_loss_is_the_weighted_brier_score():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 0.0], [0.0, 0.0, 1.0], [9.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2, 2, 1])
    weight = np.array([1.0, 2.0, 1.0, 0.0], np.float32)  # the last row is padding: ignored
    per_row = ((np_softmax(logits) - np.eye(3)[labels]) ** 2).sum(-1)
    expected = (per_row * weight).sum() / weight.sum()
    loss, m = classification_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weight), kind="mse")
    assert float(loss) == pytest.approx(expected, rel=1e-6) and float(m["weight"]) == 4.0
    assert float(m["loss"]) == float(loss)
    np.testing.assert_allclose(brier_score(jnp.asarray(logits), jnp.asarray(labels)), per_row, rtol=1e-6)
    # not cross-entropy under another name; and the default stays optax's integer-label cross-entropy, exactly
    ce, _ = classification_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weight))
    assert abs(float(ce) - expected) > 0.1
    assert float(ce) == float((optax.softmax_cross_entropy_with_integer_labels(logits, labels) * weight).sum()
                              / weight.sum())


def test_mse_gradient_is_finite_and_not_cross_entropys():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 3.0, 0.0], [-50.0, 50.0, 0.0]])  # row 3: confidently wrong
    labels = jnp.array([0, 2, 0])

    def grad(kind):
        return jax.grad(lambda z: classification_loss(z, labels, kind=kind)[0])(logits)

    mse, ce = grad("mse"), grad("cross_entropy")
    assert np.isfinite(mse).all() and np.abs(mse).max() > 0
    assert not np.allclose(mse, ce, atol=1e-3)
    # softmax saturates: the confidently wrong row barely moves under MSE, a lot under cross-entropy
    assert float(jnp.abs(mse[2]).max()) < 1e-6 < 0.1 < float(jnp.abs(ce[2]).max())


def tiny_vit_config(**overrides):
    from bigmodel_jax.config import apply_overrides, load_config_file

    cfg = load_config_file(str(ROOT / "configs" / "vit_digits.py"))
    base = {"model.num_layers": 1, "model.width": 32, "model.num_heads": 2, "model.mlp_dim": 64,
            "model.num_classes": 4, "model.dropout": 0.0, "model.drop_path": 0.0}
    base.update(overrides)
    return apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


def test_image_classify_trains_on_soft_targets_with_the_configured_loss():
    """train.loss reaches image_classify.loss_fn through the graphdef the trainer merges params
    into; with soft targets (label smoothing, mixup) it is the Brier score against them, while
    eval_fn's loss stays cross-entropy."""
    from bigmodel_jax import tasks
    from bigmodel_jax.tasks import image_classify

    rng = np.random.default_rng(0)
    targets = np_softmax(rng.normal(size=(6, 4)) * 2).astype(np.float32)
    batch = {"image": jnp.asarray(rng.normal(size=(6, 8, 8, 1)), jnp.float32), "targets": jnp.asarray(targets),
             "label": jnp.asarray(targets.argmax(-1))}
    losses = {}
    for kind in ("cross_entropy", "mse"):
        cfg = tiny_vit_config(**{"train.loss": kind})
        graphdef, _, _ = tasks.abstract_model(cfg)  # what train.init_state does
        params = nnx.to_pure_dict(nnx.state(image_classify.build_model(cfg, nnx.Rngs(0)), nnx.Param))
        params["head"]["kernel"] = jnp.asarray(rng.normal(size=params["head"]["kernel"].shape), jnp.float32)
        model = nnx.merge(graphdef, params)
        logits = np.asarray(model(batch["image"]))
        loss, m = image_classify.loss_fn(model, batch, nnx.Rngs(dropout=0))
        losses[kind] = float(loss)
        expected = (((np_softmax(logits) - targets) ** 2).sum(-1).mean() if kind == "mse"
                    else -(targets * np.log(np_softmax(logits))).sum(-1).mean())
        assert float(loss) == pytest.approx(expected, rel=1e-5) and float(m["weight"]) == 6.0
        eval_ce = image_classify.eval_fn(model, batch)["loss"]
        np.testing.assert_allclose(eval_ce, -np.log(np_softmax(logits)[np.arange(6), targets.argmax(-1)]), rtol=1e-5)

        @jax.jit
        def step(p):
            value, grads = jax.value_and_grad(
                lambda p: image_classify.loss_fn(nnx.merge(graphdef, p), batch, nnx.Rngs(dropout=0))[0])(p)
            return value, jax.tree.map(lambda x, g: x - 0.5 * g, p, grads)

        values = []
        for _ in range(10):  # a few plain gradient steps: the loss goes down
            value, params = step(params)
            values.append(float(value))
        assert values[0] == pytest.approx(float(loss), rel=1e-5) and values[-1] < 0.8 * values[0]
    assert losses["mse"] != pytest.approx(losses["cross_entropy"], rel=0.1)


def test_regression_loss_known_answer():
    loss, m = regression_loss(jnp.array([1.0, -1.0, 5.0]), jnp.array([0.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 0.0]))
    assert float(loss) == pytest.approx((1 + 4) / 2) and float(m["weight"]) == 2.0


def test_tagging_loss_is_a_mean_over_labelled_tokens():
    # 1 row, 4 tokens: labels [-1 (special), 1 (B), 0 (O), 2 (I)]; predictions: B, B, O, O
    logits = jnp.full((1, 4, 3), -5.0).at[0, 0, 1].set(5).at[0, 1, 1].set(5).at[0, 2, 0].set(5).at[0, 3, 0].set(5)
    labels = jnp.array([[-1, 1, 0, 2]])
    loss, m = tagging_loss(logits, labels, jnp.ones(1))
    assert float(m["weight"]) == 3  # three labelled tokens
    ce_right = -jax.nn.log_softmax(jnp.array([5.0, -5.0, -5.0]))[0]
    ce_wrong = -jax.nn.log_softmax(jnp.array([5.0, -5.0, -5.0]))[2]
    assert float(loss) == pytest.approx(float((2 * ce_right + ce_wrong) / 3), rel=1e-5)
    nll, count = tagging_nll(logits, labels)
    assert float(count[0]) == 3 and float(nll[0]) == pytest.approx(float(2 * ce_right + ce_wrong), rel=1e-5)


def test_span_loss_and_best_span_respect_the_context_mask_and_the_length_limit():
    t = 6
    logits = jnp.zeros((4, t, 2))
    # row 0: best start 2, end 3; row 1: start 1, end 1 (a huge start score at 5, outside the context)
    logits = logits.at[0, 2, 0].set(10).at[0, 3, 1].set(10).at[1, 1, 0].set(10).at[1, 1, 1].set(10)
    logits = logits.at[1, 5, 0].set(100)
    # row 2: the best start (4) comes after the best end (1); the best span by start + end score is
    # (1, 1) = 5 + 8, not "best start, then the best end after it" (4, 4) = 8 + 0
    logits = logits.at[2, 4, 0].set(8).at[2, 1, 0].set(5).at[2, 1, 1].set(8).at[2, 2, 1].set(6)
    # row 3: (1, 4) scores 20 but spans 4 tokens; with a limit of 3 the best is (1, 2) = 15
    logits = logits.at[3, 1, 0].set(10).at[3, 4, 1].set(10).at[3, 2, 1].set(5)
    context = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1] * 6, [1] * 6], bool)
    start, end = best_spans(logits, context, max_answer_len=30)
    assert start.tolist() == [2, 1, 1, 1] and end.tolist() == [3, 1, 1, 4]
    start, end = best_spans(logits, context, max_answer_len=3)
    assert (int(start[3]), int(end[3])) == (1, 2)
    loss, m = span_loss(logits[:2], jnp.array([2, 1]), jnp.array([3, 1]), context[:2], jnp.ones(2))
    np.testing.assert_allclose(float(loss), float(span_nll(logits[:2], jnp.array([2, 1]), jnp.array([3, 1]),
                                                           context[:2]).mean()), rtol=1e-6)
    assert float(loss) < 1e-3  # both rows right with margin 10: near-zero cross-entropy


def test_mlm_masking_statistics():
    rng = np.random.default_rng(0)
    specials = frozenset({0, 1, 2, 3, 4})
    replacement = np.arange(5, 1000)
    t = 130
    k = num_predictions(t, 0.15)
    assert k == round(0.15 * 128)
    chosen = masked = random = kept = 0
    for i in range(400):
        ids = np.concatenate([[2], rng.integers(5, 1000, t - 2), [3]]).astype(np.int32)
        ex = mask_tokens(ids, np.random.default_rng(i), k, 4, replacement, specials)
        pos = ex["masked_positions"]
        assert len(set(pos.tolist())) == k and pos.min() >= 1 and pos.max() <= t - 2  # never [CLS]/[SEP]
        np.testing.assert_array_equal(ex["masked_labels"], ids[pos])
        untouched = np.setdiff1d(np.arange(t), pos)
        np.testing.assert_array_equal(ex["input_ids"][untouched], ids[untouched])
        new = ex["input_ids"][pos]
        chosen += k
        masked += (new == 4).sum()
        kept += (new == ids[pos]).sum()
        random += ((new != 4) & (new != ids[pos])).sum()
        assert not np.isin(new[new != 4], list(specials)).any()
    # 7,600 chosen tokens: 80/10/10 within ~4 standard errors
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert random / chosen == pytest.approx(0.1, abs=0.015)  # (a random pick equal to the original counts as kept)
    assert kept / chosen == pytest.approx(0.1, abs=0.015)


def test_bert_padding_never_changes_real_tokens():
    model = Bert(small_bert_cfg(), rngs=nnx.Rngs(0))
    ids = jnp.array([[2, 7, 8, 9, 3]])
    alone = model(ids, jnp.zeros_like(ids), jnp.ones_like(ids))
    # padded with arbitrary ids and a second segment type under the mask
    padded_ids = jnp.array([[2, 7, 8, 9, 3, 11, 12, 13]])
    mask = jnp.array([[1, 1, 1, 1, 1, 0, 0, 0]])
    types = jnp.array([[0, 0, 0, 0, 0, 1, 1, 1]])
    padded = model(padded_ids, types, mask)
    np.testing.assert_allclose(padded[:, :5], alone, atol=1e-5)


def test_bert_param_count_and_mlm_shapes():
    cfg = small_bert_cfg()
    model = BertMLM(cfg, rngs=nnx.Rngs(0))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model.bert, nnx.Param)))
    assert n == count_params(cfg)
    logits = model(jnp.ones((2, 8), jnp.int32), None, None, jnp.array([[1, 3], [2, 5]]))
    assert logits.shape == (2, 2, 50)
    full = model(jnp.ones((2, 8), jnp.int32), None, None, None)
    np.testing.assert_allclose(logits[0, 1], full[0, 3], atol=1e-5)  # gathered = the same position


def test_example_eval_batches_cover_every_example_once_with_zero_weight_padding():
    arrays = {"x": np.arange(10), "label": np.arange(10) % 3}
    batches = pipeline.example_eval_batches(arrays, 4)
    assert len(batches) == 3
    seen = np.concatenate([b["x"][b["weight"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(10))
    np.testing.assert_array_equal(np.concatenate([b["index"][b["weight"] > 0] for b in batches]), np.arange(10))
    assert batches[-1]["weight"].tolist() == [1, 1, 0, 0]
    # two processes together give the same global batches
    halves = [pipeline.example_eval_batches(arrays, 4, p, 2) for p in range(2)]
    for b, (h0, h1) in enumerate(zip(*halves)):
        np.testing.assert_array_equal(np.concatenate([h0["x"], h1["x"]]), batches[b]["x"])


def test_example_dataset_is_a_function_of_seed_and_step():
    arrays = {"x": np.arange(20)}
    a = pipeline.example_dataset(arrays, 4, seed=3)
    b = pipeline.example_dataset(arrays, 4, seed=3)
    np.testing.assert_array_equal(a[7]["x"], b[7]["x"])
    epoch = np.concatenate([a[i]["x"] for i in range(5)])
    assert sorted(epoch.tolist()) == list(range(20))  # an epoch visits each example once
    assert not np.array_equal(epoch, np.concatenate([a[i]["x"] for i in range(5, 10)]))  # reshuffled
