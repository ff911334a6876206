"""BERT4Rec (Sun et al. 2019): a bidirectional Transformer over a user's item history, trained to
fill in masked items (the cloze task). The model is our BERT masked LM with items as its vocabulary:
id 0 pads, ids 1..N are items, N + 1 is [MASK]; the output scores are tied to the item embeddings.

Training: each training sequence cut from its end into windows of data.seq_len items; in each
window, every item is masked with probability data.mask_rate (at least one, at most
num_predictions), always replaced by [MASK] (BERT4Rec's rule, not BERT's 80/10/10), and the loss is
the cross-entropy over all items at the masked positions. The masks are drawn in the grain
pipeline from a generator seeded per element, so a resumed run sees the same ones.

Evaluation appends [MASK] to the user's last seq_len - 1 items and ranks every item at that
position. Data, the split and the metrics: tasks/recsys.py.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.data import pipeline
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.bert import BertMLM, mlm_head_matmul_params
from bigmodel_jax.tasks import encoder, recsys
from bigmodel_jax.tasks.protocol import TaskData
from bigmodel_jax.tasks.recsys import METRICS, adapt_source, corpus_metrics, tokens_per_example  # noqa: F401

FAMILY = "bert"


def validate(cfg: ml_collections.ConfigDict) -> None:
    recsys.validate(cfg)
    if not 0.0 < cfg.data.mask_rate < 1.0:
        raise ConfigError("data.mask_rate", cfg.data.mask_rate, "a fraction in (0, 1); BERT4Rec uses 0.2")


def num_predictions(cfg: ml_collections.ConfigDict) -> int:
    """The masked positions a training window holds at most (fixed, so one compile)."""
    return max(1, int(np.ceil(cfg.data.mask_rate * cfg.data.seq_len)))


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> BertMLM:
    return BertMLM(cfg.model, rngs=rngs)


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    share = num_predictions(cfg) / cfg.data.seq_len
    return encoder.matmul_params(cfg) + round(mlm_head_matmul_params(cfg.model) * share)


def loss_fn(model: BertMLM, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_bkv = model(batch["inputs"], None, batch["mask"], batch["positions"], rngs=rngs)
    return recsys.item_loss(logits_bkv, batch["labels"])


def scores(model: BertMLM, inputs_bt: jax.Array, length_b: jax.Array) -> jax.Array:
    """[B, items + 1] every item's score at the [MASK] each row ends with (the last real slot)."""
    mask_bt = (jnp.arange(inputs_bt.shape[1])[None] < length_b[:, None]).astype(jnp.int32)
    logits_bkv = model(inputs_bt, None, mask_bt, (length_b - 1)[:, None])
    return logits_bkv[:, 0, :-1]  # the [MASK] token is not a recommendation


def eval_fn(model: BertMLM, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return recsys.ranked_outputs(scores(model, batch["inputs"], batch["length"]), batch["target"])


def history_inputs(histories: list[np.ndarray], seq_len: int, num_items: int) -> list[np.ndarray]:
    """Each history's last seq_len - 1 items and [MASK] (id num_items + 1) after them: the slot to
    predict."""
    return [np.append(s[-(seq_len - 1):], num_items + 1).astype(np.int32) for s in histories]


def mask_window(items_t: np.ndarray, length: int, rng: np.random.Generator, rate: float, k: int,
                mask_id: int) -> dict[str, np.ndarray]:
    """One training window's cloze: each real item masked with probability `rate` (at least one,
    at most k), the labels and positions padded to k with zeros."""
    chosen = np.flatnonzero(rng.random(length) < rate)
    if len(chosen) == 0:
        chosen = rng.integers(0, length, size=1)
    chosen = np.sort(rng.permutation(chosen)[:k])
    positions = np.zeros(k, np.int32)
    labels = np.zeros(k, np.int32)
    positions[:len(chosen)], labels[:len(chosen)] = chosen, items_t[chosen]
    inputs = items_t.copy()
    inputs[chosen] = mask_id
    return {"inputs": inputs, "mask": (np.arange(len(items_t)) < length).astype(np.int32), "positions": positions,
            "labels": labels}


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d, b = cfg.data, cfg.train.batch_size
    h, split = recsys.load(cfg)
    mask_id, k = h.num_items + 1, num_predictions(cfg)
    windows = recsys.windows(split.train, d.seq_len, d.seq_len)
    items, lengths = recsys.right_padded(windows, d.seq_len)

    def cloze(ex: dict, rng: np.random.Generator) -> dict:
        return mask_window(ex["items"], int(ex["length"]), rng, d.mask_rate, k, mask_id)

    train = pipeline.example_dataset({"items": items, "length": lengths}, b, cfg.seed, process_index, process_count,
                                     transform=cloze)
    evals = recsys.eval_sets(cfg, h, split, history_inputs, process_index, process_count)
    return TaskData(None, train, evals["validation"], f"{len(windows):,} windows of up to {d.seq_len} items",
                    evals["test"], model_overrides={"vocab_size": h.num_items + 2}, train_examples=len(windows))
