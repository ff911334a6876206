"""Causal language modelling: next-token cross-entropy on packed sequences of the plays.

A task gives the trainer four things: build_model, loss_fn, make_data and matmul_params (for
FLOPs). The trainer knows nothing else about it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax.data import pipeline, plays
from bigmodel_jax.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from bigmodel_jax.models.gpt import GPT, count_params

log = logging.getLogger(__name__)


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> GPT:
    return GPT(cfg.model, rngs=rngs)


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    """Parameters that take part in matmuls: all but the embedding lookups (the tied output head
    is a matmul, so a tied embedding counts once)."""
    m = cfg.model
    n = count_params(m, include_embeddings=False)
    return n + (m.vocab_size * m.width if m.tie_embeddings else 0)


def loss_fn(model: GPT, batch: dict[str, jax.Array], rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_btv, _ = model(batch["inputs"], rngs=rngs)
    loss_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, batch["targets"])
    loss = loss_bt.mean()
    return loss, {"loss": loss}


@dataclass
class LMData:
    tokenizer: Tokenizer
    train: object  # grain.MapDataset of per-process batches
    eval_batches: list[dict[str, np.ndarray]]
    train_tokens: int
    val_tokens: int


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> LMData:
    """Text of both splits via the TFDS builder, the workdir's tokenizer (trained on the train
    split on the first run, reloaded after), and the grain pipelines."""
    d = cfg.data
    tfds_dir = os.path.expanduser(d.tfds_dir)
    plays_dir = os.path.expanduser(d.plays_dir) if d.plays_dir else None
    train_text = plays.load_split_text(tfds_dir, "train", plays_dir)
    val_text = plays.load_split_text(tfds_dir, "validation", plays_dir)
    workdir = Path(workdir)
    try:
        tokenizer = load_tokenizer(workdir)
    except FileNotFoundError:
        tokenizer = train_tokenizer(d.tokenizer, train_text, d.bpe_vocab_size)
        if process_index == 0:
            workdir.mkdir(parents=True, exist_ok=True)
            log.info("trained a %s tokenizer (%d tokens), saved to %s", d.tokenizer, tokenizer.vocab_size,
                     tokenizer.save(workdir))
    train_ids = tokenizer.encode_array(train_text)
    val_ids = tokenizer.encode_array(val_text)
    log.info("train split: %d chars -> %d tokens; validation: %d chars -> %d tokens",
             len(train_text), len(train_ids), len(val_text), len(val_ids))
    train = pipeline.train_dataset(train_ids, d.seq_len, cfg.train.batch_size, cfg.seed,
                                   process_index, process_count)
    evals = pipeline.eval_batches(val_ids, d.seq_len, cfg.train.batch_size, cfg.train.eval_batches,
                                  process_index, process_count)
    return LMData(tokenizer, train, evals, len(train_ids), len(val_ids))
