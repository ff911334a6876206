"""Causal language modelling: next-token cross-entropy on packed sequences of the plays.

The task protocol is in tasks/protocol.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax import decoder_sources, eval_metrics
from bigmodel_jax.data import pipeline, plays
from bigmodel_jax.data.tokenizers import BPETokenizer, load_tokenizer, train_tokenizer
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.gpt import GPT, count_params
from bigmodel_jax.tasks.protocol import EvalSet, TaskData, data_seq_len, keep_source

log = logging.getLogger(__name__)

FAMILY = "gpt"
METRICS = ("loss", "perplexity")  # what corpus_metrics reports that train.eval_metric may pick
tokens_per_example = data_seq_len
adapt_source = keep_source


def validate(cfg: ml_collections.ConfigDict) -> None:
    m = cfg.model
    if m.width % m.num_heads:
        raise ConfigError("model.num_heads", m.num_heads, f"must divide model.width={m.width}")
    kv = m.num_kv_heads or m.num_heads
    if kv < 0 or m.num_heads % kv:
        raise ConfigError("model.num_kv_heads", m.num_kv_heads,
                          f"must divide model.num_heads={m.num_heads} (0 means = num_heads)")
    if m.positions == "rope" and (m.width // m.num_heads) % 2:
        raise ConfigError("model.positions", m.positions, "rope needs an even head dim (width / num_heads)")
    if cfg.data.seq_len > m.max_len:
        raise ConfigError("data.seq_len", cfg.data.seq_len, f"at most model.max_len={m.max_len}")
    if cfg.data.tokenizer == "bpe" and cfg.data.bpe_vocab_size < 257:
        raise ConfigError("data.bpe_vocab_size", cfg.data.bpe_vocab_size,
                          "at least 257 (byte-level BPE starts from the 256 bytes plus <|endoftext|>)")
    plays.check_plays_dir(cfg.data.plays_dir)


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


def eval_fn(model: GPT, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits_btv, _ = model(batch["inputs"])
    nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, batch["targets"])
    return {"nll": nll_bt.sum(-1), "tokens": jnp.full(nll_bt.shape[:1], nll_bt.shape[1], jnp.float32)}


def corpus_metrics(outputs: dict[str, np.ndarray], reference: None) -> dict[str, float]:
    return eval_metrics.language_model(outputs["nll"], outputs["tokens"])


def source_tokenizer(init_from: str) -> BPETokenizer | None:
    """A pretrained decoder's tokenizer (SmolLM2's, GPT-2's), which its weights need, as the BPE
    tokenizer a workdir keeps; None when init_from is a workdir of ours or has none (then the run
    trains one as usual)."""
    if not init_from or not decoder_sources.is_decoder(init_from):
        return None
    tok = decoder_sources.load_tokenizer(init_from)
    return None if tok is None else BPETokenizer(tok.backend)


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
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
        tokenizer, how = source_tokenizer(cfg.init_from), f"init_from {cfg.init_from}'s"
        if tokenizer is None:
            tokenizer, how = train_tokenizer(d.tokenizer, train_text, d.bpe_vocab_size), f"trained a {d.tokenizer}"
        if process_index == 0:
            workdir.mkdir(parents=True, exist_ok=True)
            log.info("%s tokenizer (%d tokens), saved to %s", how, tokenizer.vocab_size, tokenizer.save(workdir))
    train_ids = tokenizer.encode_array(train_text)
    val_ids = tokenizer.encode_array(val_text)
    log.info("train split: %d chars -> %d tokens; validation: %d chars -> %d tokens",
             len(train_text), len(train_ids), len(val_text), len(val_ids))
    train = pipeline.train_dataset(train_ids, d.seq_len, cfg.train.batch_size, cfg.seed,
                                   process_index, process_count)
    evals = pipeline.eval_batches(val_ids, d.seq_len, cfg.train.batch_size, cfg.train.eval_batches,
                                  process_index, process_count)
    val_tokens = len(evals) * cfg.train.batch_size * d.seq_len
    return TaskData(tokenizer, train, EvalSet(evals, f"{val_tokens:,} of {len(val_ids):,} tokens"),
                    f"{len(train_ids):,} tokens", model_overrides={"vocab_size": tokenizer.vocab_size},
                    train_examples=pipeline.num_train_windows(train_ids, d.seq_len))
