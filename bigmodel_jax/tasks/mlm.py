"""Masked-LM pretraining (BERT): the WordPiece stream of the plays cut into [CLS] window [SEP]
sequences; in each, 15% of the real tokens are chosen (an exact count, K per sequence, as the
original BERT's max_predictions_per_seq), and of those 80% become [MASK], 10% a random token and
10% stay as they are. The loss and the masked-token accuracy are over the chosen positions only.

Masking happens in the grain pipeline with a generator seeded per element, so batch s is a pure
function of (seed, s) and a resumed run sees the same masks; validation masks are fixed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import pipeline, plays
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.bert import BertMLM, mlm_head_matmul_params
from bigmodel_jax.models.heads import classification_loss
from bigmodel_jax.tasks import encoder
from bigmodel_jax.tasks.encoder import FAMILY, adapt_source, tokens_per_example  # noqa: F401
from bigmodel_jax.tasks.protocol import EvalSet, TaskData

log = logging.getLogger(__name__)

METRICS = ("loss", "accuracy", "perplexity")  # what corpus_metrics reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg)
    plays.check_plays_dir(cfg.data.plays_dir)
    if not 0.0 < cfg.data.mask_rate < 1.0:
        raise ConfigError("data.mask_rate", cfg.data.mask_rate, "a fraction in (0, 1), BERT uses 0.15")
    if cfg.data.seq_len < 8:
        raise ConfigError("data.seq_len", cfg.data.seq_len, "at least 8 (two special tokens + a masked window)")


def num_predictions(seq_len: int, mask_rate: float) -> int:
    return max(1, round(mask_rate * (seq_len - 2)))


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> BertMLM:
    return BertMLM(cfg.model, rngs=rngs)


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    k = num_predictions(cfg.data.seq_len, cfg.data.mask_rate)
    return encoder.matmul_params(cfg) + round(mlm_head_matmul_params(cfg.model) * k / cfg.data.seq_len)


def loss_fn(model: BertMLM, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    """Cross-entropy over every predicted position: a classification of B*K tokens."""
    logits_bkv = model(batch["input_ids"], None, None, batch["masked_positions"], rngs=rngs)
    vocab = logits_bkv.shape[-1]
    return classification_loss(logits_bkv.reshape(-1, vocab), batch["masked_labels"].reshape(-1))


def eval_fn(model: BertMLM, batch: dict) -> dict[str, jax.Array]:
    logits_bkv = model(batch["input_ids"], None, None, batch["masked_positions"])
    labels_bk = batch["masked_labels"]
    nll_bk = optax.softmax_cross_entropy_with_integer_labels(logits_bkv, labels_bk)
    return {"nll": nll_bk.sum(-1), "correct": (logits_bkv.argmax(-1) == labels_bk).sum(-1),
            "tokens": jnp.full(labels_bk.shape[:1], labels_bk.shape[1], jnp.float32)}


def corpus_metrics(outputs: dict[str, np.ndarray], reference: None) -> dict[str, float]:
    """Masked-token loss, perplexity and accuracy over every predicted position of the split."""
    accuracy = float(outputs["correct"].sum()) / max(float(outputs["tokens"].sum()), 1.0)
    return {**eval_metrics.language_model(outputs["nll"], outputs["tokens"]), "accuracy": accuracy}


def mask_tokens(ids_t: np.ndarray, rng: np.random.Generator, k: int, mask_id: int,
                replacement_ids: np.ndarray, special_ids: frozenset[int]) -> dict[str, np.ndarray]:
    """BERT's masking of one sequence: k positions among the non-special tokens, 80/10/10."""
    candidates = np.flatnonzero(~np.isin(ids_t, list(special_ids)))
    positions = np.sort(rng.choice(candidates, size=k, replace=False)).astype(np.int32)
    labels = ids_t[positions]
    inputs = ids_t.copy()
    r = rng.random(k)
    inputs[positions[r < 0.8]] = mask_id
    random_slots = positions[(r >= 0.8) & (r < 0.9)]
    inputs[random_slots] = rng.choice(replacement_ids, size=len(random_slots))
    return {"input_ids": inputs, "masked_positions": positions, "masked_labels": labels.astype(np.int32)}


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d = cfg.data
    tfds_dir, plays_dir = Path(d.tfds_dir).expanduser(), (Path(d.plays_dir).expanduser() if d.plays_dir else None)
    train_text = plays.load_split_text(tfds_dir, "train", plays_dir)
    val_text = plays.load_split_text(tfds_dir, "validation", plays_dir)
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index, lambda: train_text.split("\n"))
    train_ids = np.asarray(tok.encode_plain(train_text), np.int32)
    val_ids = np.asarray(tok.encode_plain(val_text), np.int32)
    t, k = d.seq_len, num_predictions(d.seq_len, d.mask_rate)
    body = t - 2
    specials = tok.special_ids
    replacement = np.setdiff1d(np.arange(tok.vocab_size), list(specials)).astype(np.int32)

    def sequence(ids: np.ndarray, start: int) -> np.ndarray:
        return np.concatenate([[tok.cls_id], ids[start:start + body], [tok.sep_id]]).astype(np.int32)

    def train_example(ex: dict, rng: np.random.Generator) -> dict:
        # window w, moved by a random offset so that over epochs every split point is seen
        start = int(ex["window"]) * body + int(rng.integers(0, body))
        return mask_tokens(sequence(train_ids, start), rng, k, tok.mask_id, replacement, specials)

    num_train = len(train_ids) // body - 1
    if num_train < cfg.train.batch_size:
        raise ValueError(f"the training text has {len(train_ids)} tokens: too few for seq_len={t}")
    train = pipeline.example_dataset({"window": np.arange(num_train)}, cfg.train.batch_size, cfg.seed,
                                     process_index, process_count, transform=train_example)
    num_val = min(len(val_ids) // body, cfg.train.eval_batches * cfg.train.batch_size)
    val = [mask_tokens(sequence(val_ids, w * body), np.random.default_rng([cfg.seed, 7, w]), k, tok.mask_id,
                       replacement, specials) for w in range(num_val)]
    val_arrays = {key: np.stack([v[key] for v in val]) for key in val[0]}
    evals = pipeline.example_eval_batches(val_arrays, cfg.train.batch_size, process_index, process_count)
    log.info("MLM: %d train windows of %d tokens (%d predicted each), %d validation windows", num_train, t, k, num_val)
    return TaskData(tok, train, EvalSet(evals, f"{num_val * t:,} tokens"), f"{len(train_ids):,} tokens",
                    model_overrides=overrides)
