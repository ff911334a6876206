"""Finetuning heads on the BERT encoder, and the loss + metrics of each.

One module covers the four kinds: a head on the pooled [CLS] output (sequence classification with
cross-entropy, regression with MSE, as HF's BertForSequenceClassification) or on every token
(tagging; extractive QA with two outputs per token: span start and end). The encoder sits at
`.bert` in every BERT-family model, so `init_from` carries it over by parameter path and the head
starts fresh.

The losses take a per-example `weight_b` (0 for the padding rows that fill the last eval batch;
None = all ones, as in training batches) and return (loss, metrics) with metrics as means over the
real examples plus "weight".
"""

from __future__ import annotations

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
        h = self.bert(input_ids_bt, token_type_ids_bt, attention_mask_bt, rngs=rngs)
        h = h if self.per_token else self.bert.pool(h)
        return self.head(self.dropout(h, deterministic=rngs is None, rngs=rngs))


def _wmean(x, w):
    return (x * w).sum() / jnp.maximum(w.sum(), 1e-9)


def _weights(weight_b: jax.Array | None, batch: int) -> jax.Array:
    return jnp.ones(batch, jnp.float32) if weight_b is None else weight_b


def classification_loss(logits_bc: jax.Array, labels_b: jax.Array,
                        weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    weight_b = _weights(weight_b, labels_b.shape[0])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_bc, labels_b)
    loss = _wmean(ce, weight_b)
    acc = _wmean((logits_bc.argmax(-1) == labels_b).astype(jnp.float32), weight_b)
    return loss, {"loss": loss, "accuracy": acc, "weight": weight_b.sum()}


def regression_loss(pred_b: jax.Array, target_b: jax.Array,
                    weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    weight_b = _weights(weight_b, target_b.shape[0])
    err = pred_b - target_b
    mse = _wmean(jnp.square(err), weight_b)
    return mse, {"loss": mse, "mse": mse, "mae": _wmean(jnp.abs(err), weight_b), "weight": weight_b.sum()}


def tagging_loss(logits_btc: jax.Array, labels_bt: jax.Array,
                 weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """labels_bt: the tag of each word's first sub-token, -1 elsewhere (ignored). Tag 0 is "O";
    f1 is the micro F1 of the other tags over labelled tokens (token level)."""
    w_bt = (labels_bt >= 0) * _weights(weight_b, labels_bt.shape[0])[:, None]
    labels = jnp.maximum(labels_bt, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_btc, labels)
    loss = _wmean(ce, w_bt)
    pred = logits_btc.argmax(-1)
    correct = (pred == labels) * w_bt
    tp = (correct * (labels > 0)).sum()
    pred_pos, true_pos = ((pred > 0) * w_bt).sum(), ((labels > 0) * w_bt).sum()
    f1 = 2 * tp / jnp.maximum(pred_pos + true_pos, 1e-9)
    return loss, {"loss": loss, "accuracy": correct.sum() / jnp.maximum(w_bt.sum(), 1e-9), "f1": f1,
                  "weight": w_bt.sum()}


def span_loss(logits_bt2: jax.Array, start_b: jax.Array, end_b: jax.Array, context_bt: jax.Array,
              weight_b: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Extractive QA: cross-entropy of the start and of the end token over the positions where
    context_bt is True (the context's tokens and [CLS], which stands for "no answer in this
    window", as in BERT's SQuAD setup). exact_match: both ends right; f1: token overlap of the
    predicted span (best start, then best end at or after it) with the true span."""
    weight_b = _weights(weight_b, start_b.shape[0])
    neg = jnp.finfo(jnp.float32).min
    start_logits = jnp.where(context_bt, logits_bt2[..., 0], neg)
    end_logits = jnp.where(context_bt, logits_bt2[..., 1], neg)
    ce = (optax.softmax_cross_entropy_with_integer_labels(start_logits, start_b)
          + optax.softmax_cross_entropy_with_integer_labels(end_logits, end_b)) / 2
    loss = _wmean(ce, weight_b)
    ps = start_logits.argmax(-1)
    t = logits_bt2.shape[1]
    pe = jnp.where(jnp.arange(t)[None] >= ps[:, None], end_logits, neg).argmax(-1)
    exact = ((ps == start_b) & (pe == end_b)).astype(jnp.float32)
    overlap = jnp.maximum(jnp.minimum(pe, end_b) - jnp.maximum(ps, start_b) + 1, 0)
    f1 = 2 * overlap / ((pe - ps + 1) + (end_b - start_b + 1))
    return loss, {"loss": loss, "exact_match": _wmean(exact, weight_b), "f1": _wmean(f1, weight_b),
                  "weight": weight_b.sum()}
