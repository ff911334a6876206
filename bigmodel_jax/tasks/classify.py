"""Sequence classification with cross-entropy: a Dense head on BERT's pooled [CLS] output.

Datasets (data.dataset): "plays_genre" (a speech -> one of the 6 genre folders), "plays_play"
(-> one of 38 plays), both split by scene; "polarity" (gensim's 200 labeled review sentences).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import EncoderWithHead, classification_loss
from bigmodel_jax.tasks import TaskData, encoder

DATASETS = {
    "plays_genre": lambda d: plays_tasks.genre_classification(d.tfds_dir, d.plays_dir or None),
    "plays_play": lambda d: plays_tasks.play_classification(d.tfds_dir, d.plays_dir or None),
    "polarity": lambda d: labeled.polarity(d.path or None),
}
matmul_params = encoder.matmul_params

METRICS = ("loss", "accuracy")  # what loss_fn reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS)


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    return EncoderWithHead(cfg.model, per_token=False, rngs=rngs)


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_bc = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)
    return classification_loss(logits_bc, batch["label"], batch.get("weight"))


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer_and_architecture(cfg, Path(workdir), process_index,
                                                        lambda: [text for text, _ in splits.train])
    overrides["num_outputs"] = len(splits.label_names)
    arrays = encoder.text_target_arrays(tok, splits, cfg.data.seq_len, "label", np.int32)
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
