"""What a task brings to federated training: its clients from the real data, and the statistics its
local steps minimize and its evaluation reports.

    CLIENTS[task](cfg, workdir) -> FedData
        the tokenizer (trained on every client's training text on the first run, reloaded from
        the workdir after), the training ClientSet, the test examples of every client in a fixed
        shuffle cut to fed.eval_examples, and the model values the data decides
    STATS[task](model, batch, real_b) -> (loss sum, count, correct)
        over a batch's real rows (real_b False: a padding row or a step past the client's data):
        next-token NLL over real targets, or a classifier's cross-entropy over examples

The model is the task's own (tasks.get(cfg.task).build_model), so a federated classifier is the
same BERT with a pooled head that `python -m bigmodel_jax.train` finetunes. Local steps run
without dropout (rngs=None), whatever model.dropout says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigmodel_jax.data import fed_shakespeare, plays
from bigmodel_jax.data.tokenizers import load_tokenizer, train_tokenizer
from bigmodel_jax.federated import clients
from bigmodel_jax.models.heads import softmax_cross_entropy
from bigmodel_jax.tasks import encoder


@dataclass
class FedData:
    tokenizer: Any
    train: clients.ClientSet
    test: dict[str, np.ndarray]  # {name: [examples, ...]}
    model_overrides: dict = field(default_factory=dict)
    unit: str = "windows"  # what an example is, for the log


def _dirs(cfg: ml_collections.ConfigDict) -> tuple[str, str | None]:
    plays_dir = os.path.expanduser(cfg.data.plays_dir) if cfg.data.plays_dir else None
    return os.path.expanduser(cfg.data.tfds_dir), plays_dir


def _partitioned(found: list, cfg: ml_collections.ConfigDict) -> list:
    return fed_shakespeare.iid_partition(found, cfg.seed) if cfg.data.partition == "iid" else found


def _test_sample(test: clients.ClientSet, cfg: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    order = np.random.default_rng(0).permutation(len(test.weights))
    if cfg.fed.eval_examples:
        order = order[:cfg.fed.eval_examples]
    return {k: a[order] for k, a in test.arrays.items()}


def shakespeare_text(cfg: ml_collections.ConfigDict, workdir: Path) -> FedData:
    """Next-character prediction on the (play, role) clients: windows of data.seq_len + 1 characters."""
    found = _partitioned(fed_shakespeare.load_clients(*_dirs(cfg)), cfg)
    train_texts = ["\n".join(c.train) for c in found]
    try:
        tokenizer = load_tokenizer(workdir)
    except FileNotFoundError:
        tokenizer = train_tokenizer("char", "\n".join(train_texts) + "\n", 0)
        tokenizer.save(workdir)
    ids = [c.id for c in found]
    train = clients.text_clients(ids, train_texts, tokenizer.encode_array, cfg.data.seq_len)
    test = clients.text_clients(ids, ["\n".join(c.test) for c in found], tokenizer.encode_array, cfg.data.seq_len)
    return FedData(tokenizer, train, _test_sample(test, cfg), {"vocab_size": tokenizer.vocab_size})


def shakespeare_genre(cfg: ml_collections.ConfigDict, workdir: Path) -> FedData:
    """Genre classification on the same clients (fed_shakespeare.genre_clients): a speech of
    data.seq_len WordPieces -> one of the 6 genres; the WordPiece vocabulary as the classify task
    picks it (the workdir's, data.tokenizer_dir, or trained on the clients' training speeches)."""
    found = _partitioned(fed_shakespeare.genre_clients(*_dirs(cfg)), cfg)
    tok, overrides = encoder.tokenizer(cfg, workdir, 0, lambda: [text for c in found for text, _ in c.train])

    def labeled(split: str) -> clients.ClientSet:
        examples = [ex for c in found for ex in getattr(c, split)]
        enc = tok.encode([text for text, _ in examples], max_len=cfg.data.seq_len)
        arrays = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        arrays["label"] = np.asarray([label for _, label in examples], np.int32)
        return clients.from_rows([c.id for c in found], arrays, [len(getattr(c, split)) for c in found])

    overrides["num_outputs"] = len(plays.GENRES)
    return FedData(tok, labeled("train"), _test_sample(labeled("test"), cfg), overrides, "speeches")


def next_token_stats(model, batch: dict, real_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Over "windows" [B, T+1] with "lengths" real targets each."""
    windows_bt = batch["windows"]
    logits_btv, _ = model(windows_bt[:, :-1])
    logits_btv = logits_btv.astype(jnp.float32)
    targets_bt = windows_bt[:, 1:]
    nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, targets_bt)
    mask_bt = jnp.arange(nll_bt.shape[1]) < jnp.where(real_b, batch["lengths"], 0)[:, None]
    correct = jnp.where(mask_bt, logits_btv.argmax(-1) == targets_bt, False).sum()
    return jnp.where(mask_bt, nll_bt, 0.0).sum(), mask_bt.sum().astype(jnp.float32), correct


def label_stats(model, batch: dict, real_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Over encoded texts ("input_ids", ...) with a "label" each."""
    logits_bc = encoder.forward(model, batch)
    nll_b = softmax_cross_entropy(logits_bc, batch["label"])
    correct = jnp.where(real_b, logits_bc.argmax(-1) == batch["label"], False).sum()
    return jnp.where(real_b, nll_b, 0.0).sum(), real_b.sum().astype(jnp.float32), correct


CLIENTS: dict[str, Callable[[ml_collections.ConfigDict, Path], FedData]] = {
    "causal_lm": shakespeare_text, "classify": shakespeare_genre}
STATS: dict[str, Callable] = {"causal_lm": next_token_stats, "classify": label_stats}
