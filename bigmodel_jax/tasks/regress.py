"""Regression with MSE: one output on BERT's pooled [CLS] output.

Dataset (data.dataset): "vader", the VADER lexicon's words and emoticons with their
human-rated mean valence (-4 .. 4), split by token.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import labeled
from bigmodel_jax.models.heads import EncoderWithHead, regression_loss
from bigmodel_jax.tasks import encoder
from bigmodel_jax.tasks.encoder import FAMILY, adapt_source, matmul_params, tokens_per_example  # noqa: F401
from bigmodel_jax.tasks.protocol import TaskData

DATASETS = {"vader": lambda d: labeled.vader_valence(d.path or None)}

METRICS = ("loss", "mse", "mae")  # what corpus_metrics reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS)


build_model = encoder.build_pooled_model


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    return regression_loss(encoder.forward(model, batch, rngs)[:, 0], batch["target"])


def eval_fn(model: EncoderWithHead, batch: dict) -> dict[str, jax.Array]:
    return {"pred": encoder.forward(model, batch)[:, 0], "target": batch["target"]}


def corpus_metrics(outputs: dict[str, np.ndarray], reference: None) -> dict[str, float]:
    scores = eval_metrics.regression(outputs["pred"], outputs["target"])
    return {"loss": scores["mse"], **scores}


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index, lambda: [text for text, _ in splits.train])
    overrides["num_outputs"] = 1
    arrays = encoder.text_target_arrays(tok, splits, cfg.data.seq_len, "target", np.float32)
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
