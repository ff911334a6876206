"""Sequence classification: a Dense head on BERT's pooled [CLS] output, trained with
cross-entropy or, with train.loss="mse", the squared error of the softmax probabilities (Brier).

Datasets (data.dataset): "plays_genre" (a speech -> one of the 6 genre folders), "plays_play"
(-> one of 38 plays), both split by scene; "polarity" (gensim's 200 labeled review sentences);
"vader_sign" (a VADER lexicon token -> negative or positive valence, 7,506 tokens).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import (EncoderWithHead, classification_loss, classifier_outputs, train_loss_kind,
                                       with_train_loss)
from bigmodel_jax.tasks import encoder
from bigmodel_jax.tasks.encoder import FAMILY, adapt_source, matmul_params, tokens_per_example  # noqa: F401
from bigmodel_jax.tasks.protocol import TaskData

DATASETS = {
    "plays_genre": lambda d: plays_tasks.genre_classification(d.tfds_dir, d.plays_dir or None),
    "plays_play": lambda d: plays_tasks.play_classification(d.tfds_dir, d.plays_dir or None),
    "polarity": lambda d: labeled.polarity(d.path or None),
    "vader_sign": lambda d: labeled.vader_sign(d.path or None),
}
METRICS = ("loss", "accuracy", "macro_f1")  # what corpus_metrics reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS)


corpus_metrics = eval_metrics.classifier


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    """The pooled encoder, carrying train.loss for loss_fn (see heads.with_train_loss)."""
    return with_train_loss(encoder.build_pooled_model(cfg, rngs), cfg)


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    return classification_loss(encoder.forward(model, batch, rngs), batch["label"], kind=train_loss_kind(model))


def eval_fn(model: EncoderWithHead, batch: dict) -> dict[str, jax.Array]:
    """Cross-entropy whatever train.loss is: runs of either training loss share validation numbers."""
    return classifier_outputs(encoder.forward(model, batch), batch["label"])


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index, lambda: [text for text, _ in splits.train])
    overrides["num_outputs"] = len(splits.label_names)
    arrays = encoder.text_target_arrays(tok, splits, cfg.data.seq_len, "label", np.int32)
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
