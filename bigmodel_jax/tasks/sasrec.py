"""SASRec (Kang & McAuley 2018): next-item prediction with a causal Transformer over a user's item
history. The model is our GPT with items as its vocabulary (id 0 pads), learned positions and the
item embeddings tied to the output, trained as RecBole's SASRec is by default: a full softmax over
all items at every position (cross-entropy), not the paper's one sampled negative per position.

Histories are right padded: causal attention keeps the padding out of every real position, so no
mask is needed, and the prediction for a user's next item is read at their last real position.
Data, the split and the metrics: tasks/recsys.py. The task protocol is in tasks/protocol.py.
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
from bigmodel_jax.models.gpt import GPT, count_params
from bigmodel_jax.tasks import recsys
from bigmodel_jax.tasks.protocol import TaskData
from bigmodel_jax.tasks.recsys import METRICS, adapt_source, corpus_metrics, tokens_per_example  # noqa: F401

FAMILY = "gpt"


def validate(cfg: ml_collections.ConfigDict) -> None:
    recsys.validate(cfg)
    if not cfg.model.tie_embeddings:
        raise ConfigError("model.tie_embeddings", cfg.model.tie_embeddings,
                          "True (SASRec scores items with their embeddings)")


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> GPT:
    return GPT(cfg.model, rngs=rngs)


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    m = cfg.model
    return count_params(m, include_embeddings=False) + m.vocab_size * m.width  # the tied output


def loss_fn(model: GPT, batch: dict[str, jax.Array], rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    """Mean cross-entropy over the positions that have a next item."""
    logits_btv, _ = model(batch["inputs"], rngs=rngs)
    return recsys.item_loss(logits_btv, batch["targets"])


def history_inputs(histories: list[np.ndarray], seq_len: int, num_items: int) -> list[np.ndarray]:
    """What a prediction reads: the history itself (right_padded keeps its last seq_len items)."""
    return histories


def scores(model: GPT, inputs_bt: jax.Array, length_b: jax.Array) -> jax.Array:
    """[B, V] every item's score as the next one after each row's last real item."""
    x_btd, _ = model.hidden(inputs_bt)
    last_bd = jnp.take_along_axis(x_btd, (length_b - 1)[:, None, None], axis=1)
    return model.logits(last_bd)[:, 0]


def eval_fn(model: GPT, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return recsys.ranked_outputs(scores(model, batch["inputs"], batch["length"]), batch["target"])


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d, b = cfg.data, cfg.train.batch_size
    h, split = recsys.load(cfg)
    train = recsys.next_item_windows(split.train, d.seq_len)
    evals = recsys.eval_sets(cfg, h, split, history_inputs, process_index, process_count)
    targets = int(np.count_nonzero(train["targets"]))
    return TaskData(None, pipeline.example_dataset(train, b, cfg.seed, process_index, process_count),
                    evals["validation"], f"{len(train['inputs']):,} windows, {targets:,} next-item targets",
                    evals["test"], model_overrides={"vocab_size": h.num_items + 1},
                    train_examples=len(train["inputs"]))
