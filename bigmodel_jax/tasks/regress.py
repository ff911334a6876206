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

from bigmodel_jax.data import labeled
from bigmodel_jax.models.heads import EncoderWithHead, regression_loss
from bigmodel_jax.tasks import TaskData, encoder

DATASETS = {"vader": lambda d: labeled.vader_valence(d.path or None)}
matmul_params = encoder.matmul_params

METRICS = ("loss", "mse")  # what loss_fn reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS)


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    return EncoderWithHead(cfg.model, per_token=False, rngs=rngs)


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    pred_b = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)[:, 0]
    return regression_loss(pred_b, batch["target"], batch.get("weight"))


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer_and_architecture(cfg, Path(workdir), process_index,
                                                        lambda: [text for text, _ in splits.train])
    overrides["num_outputs"] = 1
    arrays = encoder.text_target_arrays(tok, splits, cfg.data.seq_len, "target", np.float32)
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
