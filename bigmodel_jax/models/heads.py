"""Finetuning heads on the BERT encoder, and the training loss of each.

One module covers the four kinds: a head on the pooled [CLS] output (sequence classification with
cross-entropy, regression with MSE, as HF's BertForSequenceClassification) or on every token
(tagging; extractive QA with two outputs per token: span start and end). The encoder sits at
`.bert` in every BERT-family model, so `init_from` carries it over by parameter path and the head
starts fresh.

The losses take a per-example `weight_b` (0 for padding rows; None = all ones, as in training
batches) and return (loss, {"loss", "weight"}), "weight" being what the mean is over (examples, or
labelled tokens), so gradient accumulation weighs micro-batches exactly. Evaluation metrics over a
whole split (accuracy, F1, exact match) are not here: they are computed from every example's
outputs in `eval_metrics.py`.

Classification trains with `train.loss`: "cross_entropy" or "mse" (the Brier score, for the
MSE-vs-cross-entropy ablation); evaluation reports cross-entropy either way (`classifier_outputs`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from bigmodel_jax.models.bert import Bert
from bigmodel_jax.models.layers import Dense


class EncoderWithHead(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, per_token: bool, *, rngs: nnx.Rngs):
        """cfg: the model section; cfg.num_outputs = classes, 1 (regression) or 2 (QA start/end)."""
        self.bert = Bert(cfg, rngs=rngs)
        self.per_token = per_token
        self.dropout = nnx.Dropout(cfg.dropout)
        self.head = Dense(cfg.width, cfg.num_outputs, ("embed", None), rngs=rngs, dtype=self.bert.dtype)

    def __call__(self, input_ids_bt, token_type_ids_bt, attention_mask_bt, *, rngs: nnx.Rngs | None = None):
        """f32 [B, num_outputs] from the pooled [CLS] output, or [B, T, num_outputs] per token."""
        return self.read(self.features(input_ids_bt, token_type_ids_bt, attention_mask_bt, rngs=rngs), rngs=rngs)

    def features(self, input_ids_bt, token_type_ids_bt, attention_mask_bt, *, rngs: nnx.Rngs | None = None):
        """What the head reads: the pooled [CLS] output [B, D] (every token's state [B, T, D] per token);
        an adversary and a post-hoc projection (bias/) work on it."""
        h = self.bert(input_ids_bt, token_type_ids_bt, attention_mask_bt, rngs=rngs)
        return h if self.per_token else self.bert.pool(h)

    def read(self, features, *, rngs: nnx.Rngs | None = None):
        return self.head(self.dropout(features, deterministic=rngs is None, rngs=rngs))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def reverse_gradient(x: jax.Array, scale: float) -> jax.Array:
    """The identity forward; the gradient multiplied by -scale backward (Ganin & Lempitsky 2015): an
    adversary above it learns to predict, while everything below it learns to make that fail."""
    return x


reverse_gradient.defvjp(lambda x, scale: (x, None), lambda scale, _, g: (-scale * g,))


class Adversary(nnx.Module):
    """A one-hidden-layer MLP predicting a protected attribute from the features the head reads
    (adversarial debiasing, Zhang et al. 2018 / Elazar & Goldberg 2018)."""

    def __init__(self, width: int, num_classes: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.hidden = Dense(width, width, ("embed", None), rngs=rngs, dtype=dtype)
        self.out = Dense(width, num_classes, (None, None), rngs=rngs, dtype=dtype)

    def __call__(self, features_bd: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.hidden(features_bd))).astype(jnp.float32)


def adversary_loss(logits_bc: jax.Array, attribute_b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy, accuracy) over the examples whose attribute is known (attribute_b >= 0)."""
    known_b = (attribute_b >= 0).astype(jnp.float32)
    labels_b = jnp.maximum(attribute_b, 0)
    ce = _wmean(optax.softmax_cross_entropy_with_integer_labels(logits_bc, labels_b), known_b)
    return ce, _wmean((logits_bc.argmax(-1) == labels_b).astype(jnp.float32), known_b)


def _wmean(x, w):
    return (x * w).sum() / jnp.maximum(w.sum(), 1e-9)


def _weights(weight_b: jax.Array | None, batch: int) -> jax.Array:
    return jnp.ones(batch, jnp.float32) if weight_b is None else weight_b


def softmax_cross_entropy(logits_bc: jax.Array, targets: jax.Array) -> jax.Array:
    """Each example's cross-entropy [B]; targets are integer labels [B] (optax's integer form, so
    hard labels give exactly the numbers they always gave) or a distribution per row [B, C]."""
    if targets.ndim == 1:
        return optax.softmax_cross_entropy_with_integer_labels(logits_bc, targets)
    return optax.softmax_cross_entropy(logits_bc, targets)


def brier_score(logits_bc: jax.Array, targets: jax.Array) -> jax.Array:
    """Each example's squared error between the softmax probabilities and the target vector,
    summed over classes [B]: the MSE (y - y_hat)^2 of a classifier whose y_hat is the predicted
    probabilities (the Brier score, in [0, 2]). Its gradient vanishes as a wrong prediction grows
    confident (softmax saturates), which is why cross-entropy usually trains faster; having both
    lets an ablation measure that. targets: integer labels [B] (one-hot) or soft targets [B, C]."""
    if targets.ndim == 1:
        targets = jax.nn.one_hot(targets, logits_bc.shape[-1], dtype=jnp.float32)
    return jnp.square(jax.nn.softmax(logits_bc.astype(jnp.float32), axis=-1) - targets).sum(-1)


# train.loss -> each example's loss [B] from (logits [B, C], integer labels [B] or soft targets [B, C])
CLASSIFICATION_LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": brier_score}


def classification_loss(logits_bc: jax.Array, targets: jax.Array, weight_b: jax.Array | None = None,
                        kind: str = "cross_entropy") -> tuple[jax.Array, dict]:
    """The weighted mean over examples of the `kind` loss (a key of CLASSIFICATION_LOSSES); targets
    are integer labels [B] or soft targets [B, C] (label smoothing, mixup). Training only: eval_fn
    reports cross-entropy whatever the training loss, so runs of either kind are compared on the
    same validation numbers."""
    weight_b = _weights(weight_b, targets.shape[0])
    loss = _wmean(CLASSIFICATION_LOSSES[kind](logits_bc, targets), weight_b)
    return loss, {"loss": loss, "weight": weight_b.sum()}


def with_train_loss(model: nnx.Module, cfg: ml_collections.ConfigDict) -> nnx.Module:
    """The model with cfg.train.loss recorded on it, for a classification task's build_model. The
    trainer hands loss_fn only (model, batch, rngs), so the choice travels as a plain attribute:
    static in the model's graphdef (a compile-time constant, no parameter, nothing in checkpoints).
    A config without the key (a run saved before it existed) trains with cross-entropy."""
    model.train_loss = cfg.get("train", {}).get("loss", "cross_entropy")
    return model


def train_loss_kind(model: nnx.Module) -> str:
    """The train.loss that `with_train_loss` recorded; cross-entropy for a model built otherwise
    (a Hugging Face load, a test's bare model)."""
    return getattr(model, "train_loss", "cross_entropy")


def classifier_outputs(logits_bc: jax.Array, labels_b: jax.Array) -> dict[str, jax.Array]:
    """Each example's cross-entropy, predicted class and label (an eval_fn's outputs)."""
    return {"loss": softmax_cross_entropy(logits_bc, labels_b),
            "pred": logits_bc.argmax(-1), "label": labels_b}


def regression_loss(pred_b: jax.Array, target_b: jax.Array,
                    weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    weight_b = _weights(weight_b, target_b.shape[0])
    mse = _wmean(jnp.square(pred_b - target_b), weight_b)
    return mse, {"loss": mse, "weight": weight_b.sum()}


def tagging_nll(logits_btc: jax.Array, labels_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy summed over each row's labelled tokens [B], their count [B]); labels_bt is
    the tag of each word's first sub-token, -1 elsewhere (ignored)."""
    labelled_bt = (labels_bt >= 0).astype(jnp.float32)
    ce_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btc, jnp.maximum(labels_bt, 0))
    return (ce_bt * labelled_bt).sum(-1), labelled_bt.sum(-1)


def tagging_loss(logits_btc: jax.Array, labels_bt: jax.Array,
                 weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Mean cross-entropy per labelled token; "weight" is the number of labelled tokens."""
    nll_b, count_b = tagging_nll(logits_btc, labels_bt)
    weight_b = _weights(weight_b, labels_bt.shape[0])
    tokens = (count_b * weight_b).sum()
    loss = (nll_b * weight_b).sum() / jnp.maximum(tokens, 1e-9)
    return loss, {"loss": loss, "weight": tokens}


def span_logits(logits_bt2: jax.Array, context_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Start and end scores [B, T], -inf (f32 min) where context_bt is False: an answer lies in the
    context's tokens, or is [CLS] ("no answer in this window", as in BERT's SQuAD setup)."""
    neg = jnp.finfo(jnp.float32).min
    return (jnp.where(context_bt, logits_bt2[..., 0], neg), jnp.where(context_bt, logits_bt2[..., 1], neg))


def span_nll(logits_bt2: jax.Array, start_b: jax.Array, end_b: jax.Array, context_bt: jax.Array) -> jax.Array:
    """Per-example cross-entropy of the true start and of the true end, averaged [B]."""
    start, end = span_logits(logits_bt2, context_bt)
    return (optax.softmax_cross_entropy_with_integer_labels(start, start_b)
            + optax.softmax_cross_entropy_with_integer_labels(end, end_b)) / 2


def span_loss(logits_bt2: jax.Array, start_b: jax.Array, end_b: jax.Array, context_bt: jax.Array,
              weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    weight_b = _weights(weight_b, start_b.shape[0])
    loss = _wmean(span_nll(logits_bt2, start_b, end_b, context_bt), weight_b)
    return loss, {"loss": loss, "weight": weight_b.sum()}


def best_spans(logits_bt2: jax.Array, context_bt: jax.Array, max_answer_len: int) -> tuple[jax.Array, jax.Array]:
    """The highest-scoring span per row: start <= end < start + max_answer_len, both allowed by
    context_bt, scored start + end logit (BERT's SQuAD decoding). (0, 0) is [CLS]: no answer."""
    start, end = span_logits(logits_bt2, context_bt)
    t = start.shape[1]
    gap_tt = jnp.arange(t)[None, :] - jnp.arange(t)[:, None]  # end index - start index
    allowed_tt = (gap_tt >= 0) & (gap_tt < max_answer_len)
    scores_btt = jnp.where(allowed_tt[None], start[:, :, None] + end[:, None, :], -jnp.inf)
    best_b = scores_btt.reshape(scores_btt.shape[0], -1).argmax(-1)
    return (best_b // t).astype(jnp.int32), (best_b % t).astype(jnp.int32)
