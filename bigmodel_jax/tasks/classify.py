"""Sequence classification: a Dense head on BERT's pooled [CLS] output, trained with
cross-entropy or, with train.loss="mse", the squared error of the softmax probabilities (Brier).

Datasets (data.dataset): "plays_genre" (a speech -> one of the 6 genre folders), "plays_play"
(-> one of 38 plays), both split by scene; "polarity" (gensim's 200 labeled review sentences);
"vader_sign" (a VADER lexicon token -> negative or positive valence, 7,506 tokens).

Debiasing (the `debias` config section, docs/bias.md): `debias.counterfactual` adds to the training
split a copy of every text with its gendered words and names swapped (counterfactual data
augmentation); `debias.adversary_weight` > 0 trains an adversary that predicts the text's gender
(words.gender_of) from the pooled features through a gradient-reversal layer of that scale, so the
encoder learns features it cannot read gender from.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.bias import words
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.heads import (Adversary, EncoderWithHead, adversary_loss, classification_loss,
                                       classifier_outputs, reverse_gradient, train_loss_kind, with_train_loss)
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
    weight = _debias(cfg).get("adversary_weight", 0.0)
    if not weight >= 0:
        raise ConfigError("debias.adversary_weight", weight, "a scale >= 0 for the reversed gradient (0: no adversary)")
    if weight and cfg.model.get("lora", {}).get("rank", 0):
        raise ConfigError("debias.adversary_weight", weight, "0 with model.lora (the adversary is not an adapter)")


def _debias(cfg: ml_collections.ConfigDict) -> dict:
    return cfg.get("debias", None) or {}


corpus_metrics = eval_metrics.classifier


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    """The pooled encoder, carrying train.loss for loss_fn (see heads.with_train_loss), and the
    adversary when debias.adversary_weight > 0 (its scale a static attribute, like train.loss)."""
    model = with_train_loss(encoder.build_pooled_model(cfg, rngs), cfg)
    if weight := _debias(cfg).get("adversary_weight", 0.0):
        model.adversary = Adversary(cfg.model.width, 2, rngs=rngs)
        model.adversary_weight = float(weight)
    return model


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    if not hasattr(model, "adversary"):
        return classification_loss(encoder.forward(model, batch, rngs), batch["label"], kind=train_loss_kind(model))
    h = model.features(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)
    loss, metrics = classification_loss(model.read(h, rngs=rngs), batch["label"], kind=train_loss_kind(model))
    adv_loss, adv_acc = adversary_loss(model.adversary(reverse_gradient(h, model.adversary_weight)),
                                       batch["gender"])
    return loss + adv_loss, dict(metrics, adversary_loss=adv_loss, adversary_accuracy=adv_acc)


def eval_fn(model: EncoderWithHead, batch: dict) -> dict[str, jax.Array]:
    """Cross-entropy whatever train.loss is: runs of either training loss share validation numbers."""
    return classifier_outputs(encoder.forward(model, batch), batch["label"])


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    if _debias(cfg).get("counterfactual"):
        splits.train = counterfactual_augment(splits.train)
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index, lambda: [text for text, _ in splits.train])
    overrides["num_outputs"] = len(splits.label_names)
    arrays = encoder.text_target_arrays(tok, splits, cfg.data.seq_len, "label", np.int32)
    if _debias(cfg).get("adversary_weight", 0.0):
        for name in arrays:
            arrays[name]["gender"] = np.asarray([words.gender_of(t) for t, _ in getattr(splits, name)], np.int32)
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)


def counterfactual_augment(records: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The records plus, for each with a gendered word or name, its swapped copy with the same label
    (two-sided counterfactual data augmentation, Lu et al. 2018), each copy after its original."""
    out = []
    for text, label in records:
        out.append((text, label))
        if (swapped := words.swap_gender(text)) != text:
            out.append((swapped, label))
    return out
