"""What the sequential recommenders share (tasks/sasrec.py, tasks/bert4rec.py): users' histories split
leave-one-out, the arrays the models read, and the ranking evaluation over every user.

Evaluation scores each user's next item given their history (the last data.seq_len items, right
padded): validation predicts the second-to-last item from the training part, test the last item
from everything before it. The model scores every item; the metrics rank the target three ways,
over all users: among all items the user has not seen (full ranking), and among 100 negatives
drawn uniformly or by popularity from the items the user never rated (data.negative_seed fixes
them, so every model, RecBole's included, ranks against the same ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigmodel_jax import eval_metrics, ranking
from bigmodel_jax.data import movielens, pipeline
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.heads import classification_loss
from bigmodel_jax.tasks.protocol import EvalSet, data_seq_len, keep_source

# the protocol names both recommenders share (tasks/protocol.py)
METRICS = ("loss", "hr10", "ndcg10", "hr10_uniform", "ndcg10_uniform", "hr10_popular", "ndcg10_popular")
tokens_per_example = data_seq_len
adapt_source = keep_source
K = 10


def validate(cfg: ml_collections.ConfigDict) -> None:
    d = cfg.data
    if d.seq_len < 2:
        raise ConfigError("data.seq_len", d.seq_len, "at least 2 (the items a prediction reads)")
    if d.seq_len > cfg.model.max_len:
        raise ConfigError("data.seq_len", d.seq_len, f"at most model.max_len={cfg.model.max_len}")
    if d.num_negatives < 1:
        raise ConfigError("data.num_negatives", d.num_negatives, "at least 1 (the sampled-ranking protocol)")
    if d.path and not os.path.isfile(os.path.expanduser(d.path)):
        raise ConfigError("data.path", d.path, "an interactions file (RecBole .inter or GroupLens u.data), or '' "
                                               "for MovieLens-100k from the recbole wheel")


@dataclass
class Reference:
    """One split's ranking context, in user order."""
    inputs: list[np.ndarray]  # the items each prediction read (masked in full ranking)
    negatives: dict[str, np.ndarray]  # protocol -> [users, num_negatives]


def load(cfg: ml_collections.ConfigDict) -> tuple[movielens.Histories, movielens.Split]:
    d = cfg.data
    h = movielens.histories(d.tfds_dir, os.path.expanduser(d.path) if d.path else None)
    return h, movielens.leave_one_out(h.sequences)


def right_padded(sequences: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, length] each sequence's last `length` items from the left, zeros after; [N] how many)."""
    out = np.zeros((len(sequences), length), np.int32)
    lengths = np.zeros(len(sequences), np.int32)
    for i, s in enumerate(sequences):
        s = s[-length:]
        out[i, :len(s)] = s
        lengths[i] = len(s)
    return out, lengths


def windows(sequences: list[np.ndarray], size: int, step: int) -> list[np.ndarray]:
    """Each sequence cut from its end into windows of `size` items, `step` apart (the first window
    of a sequence may be shorter), down to windows of two items: training rows that keep a user's
    latest items whole."""
    return [s[max(0, end - size):end] for s in sequences for end in range(len(s), 1, -step)]


def next_item_windows(sequences: list[np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    """Causal training rows: windows of seq_len + 1 items overlapping by one, so every item after a
    user's first is a target once; inputs the window's first seq_len items, targets the next ones
    (0 = no target), right padded."""
    cut = windows(sequences, seq_len + 1, seq_len)
    inputs, _ = right_padded([w[:-1] for w in cut], seq_len)
    targets, _ = right_padded([w[1:] for w in cut], seq_len)
    return {"inputs": inputs, "targets": targets}


def item_loss(logits_bkv: jax.Array, labels_bk: jax.Array) -> tuple[jax.Array, dict]:
    """Cross-entropy over all items at the positions with a label (0: none), their mean."""
    vocab = logits_bkv.shape[-1]
    return classification_loss(logits_bkv.reshape(-1, vocab), labels_bk.reshape(-1),
                               (labels_bk.reshape(-1) > 0).astype(jnp.float32))


def ranked_outputs(scores_bv: jax.Array, target_b: jax.Array) -> dict[str, jax.Array]:
    """eval_fn's outputs: every item's score, and the target's negative log-likelihood under the
    softmax over all items (padding, item 0, left out)."""
    nll = optax.softmax_cross_entropy_with_integer_labels(scores_bv.at[:, 0].set(-jnp.inf), target_b)
    return {"scores": scores_bv, "nll": nll, "target": target_b}


def eval_arrays(inputs: list[np.ndarray], targets: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
    items, lengths = right_padded(inputs, seq_len)
    return {"inputs": items, "length": lengths, "target": targets.astype(np.int32)}


def references(h: movielens.Histories, split: movielens.Split, num_negatives: int,
               seed: int) -> dict[str, Reference]:
    """Validation and test negatives, drawn once from a generator of their own (not the run's
    seed): uniform, and by popularity in the training sequences."""
    rng = np.random.default_rng(seed)
    popularity = movielens.item_counts(split.train, h.num_items)
    out = {}
    for name, (inputs, _) in (("validation", split.validation), ("test", split.test)):
        negatives = {"uniform": movielens.sample_negatives(split.seen, h.num_items, num_negatives, rng),
                     "popular": movielens.sample_negatives(split.seen, h.num_items, num_negatives, rng, popularity)}
        out[name] = Reference(inputs, negatives)
    return out


def popularity(cfg: ml_collections.ConfigDict) -> dict[str, dict[str, float]]:
    """The most-popular baseline on both splits, scored as the models are: every item ranked by how
    often it occurs in the sequences the predictions read (validation: the training part; test: the
    test inputs, which add each user's validation item). No loss: it is not a distribution."""
    h, split = load(cfg)
    refs = references(h, split, cfg.data.num_negatives, cfg.data.negative_seed)
    out = {}
    for name, (inputs, targets) in (("validation", split.validation), ("test", split.test)):
        counts = movielens.item_counts(inputs, h.num_items).astype(np.float64)
        metrics = corpus_metrics({"scores": np.broadcast_to(counts, (len(targets), len(counts))),
                                  "target": targets}, refs[name])
        out[name] = metrics
    return out


def eval_sets(cfg: ml_collections.ConfigDict, h: movielens.Histories, split: movielens.Split,
              history_inputs: Callable, process_index: int, process_count: int) -> dict[str, EvalSet]:
    """Validation and test over every user: history_inputs(histories, seq_len, num_items) says
    what a model reads (BERT4Rec appends [MASK]), the references what it is ranked against."""
    d = cfg.data
    refs = references(h, split, d.num_negatives, d.negative_seed)
    out = {}
    for name, (inputs, targets) in (("validation", split.validation), ("test", split.test)):
        arrays = eval_arrays(history_inputs(inputs, d.seq_len, h.num_items), targets, d.seq_len)
        out[name] = EvalSet(pipeline.example_eval_batches(arrays, cfg.train.batch_size, process_index, process_count),
                            f"{len(targets):,} users", refs[name])
    return out


def corpus_metrics(outputs: dict[str, np.ndarray], reference: Reference) -> dict[str, float]:
    """Full and sampled HR@10 / NDCG@10 over every user, and the target's mean negative
    log-likelihood over all items (the softmax's own view)."""
    scores, targets = outputs["scores"], outputs["target"]
    out = {"loss": eval_metrics.mean_loss(outputs["nll"])} if "nll" in outputs else {}
    out.update(ranking.full_ranking(scores, reference.inputs, targets, K))
    for name, negatives in reference.negatives.items():
        out.update({f"{k}_{name}": v for k, v in ranking.sampled_ranking(scores, targets, negatives, K).items()})
    return out
