"""Token tagging: a Dense head on every token; each word's tag sits on its first sub-token.

Datasets (data.dataset): "plays_speakers", derived from the real plays because no tagging set
ships offline — scene text as words, the speaker-heading words tagged B-SPK/I-SPK (colons
dropped, so a heading must be told from a name said in dialogue); "conll", the CoNLL-2003 file
format, read from data.train_file / data.validation_file / data.test_file.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import EncoderWithHead, tagging_loss
from bigmodel_jax.tasks import TaskData, encoder

matmul_params = encoder.matmul_params


def _conll(d) -> labeled.LabeledSplits:
    train, val, test = (labeled.read_conll(Path(p).expanduser()) for p in (d.train_file, d.validation_file, d.test_file))
    tags = sorted({t for _, ts in train for t in ts} - {"O"})
    return labeled.LabeledSplits(train, val, test, ("O", *tags), f"CoNLL files {d.train_file} ...")


DATASETS = {
    "plays_speakers": lambda d: plays_tasks.speaker_tagging(d.tfds_dir, d.plays_dir or None),
    "conll": _conll,
}

METRICS = ("loss", "accuracy", "f1")  # what loss_fn reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS, {"conll": "a CoNLL-format file (token ... tag per line)"})


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    return EncoderWithHead(cfg.model, per_token=True, rngs=rngs)


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_btc = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)
    return tagging_loss(logits_btc, batch["labels"], batch.get("weight"))


def encode_tagged(tok, records: list[tuple[list[str], list[str]]], label_names: tuple[str, ...],
                  max_len: int) -> dict[str, np.ndarray]:
    """Word-level tags -> sub-token labels: the first sub-token of a word gets its tag, the others
    and the special tokens -1 (ignored). Tags unseen in training count as "O"."""
    index = {t: i for i, t in enumerate(label_names)}
    rows = []
    for words, tags in records:
        enc, word_ids = tok.tokenize_words(words, max_len)
        labels = np.full(max_len, -1, np.int32)
        prev = -1
        for pos, w in enumerate(word_ids):
            if w >= 0 and w != prev:
                labels[pos] = index.get(tags[w], 0)
            prev = w
        rows.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                     "attention_mask": enc["attention_mask"], "labels": labels})
    return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer_and_architecture(cfg, Path(workdir), process_index,
                                                        lambda: [" ".join(words) for words, _ in splits.train])
    overrides["num_outputs"] = len(splits.label_names)
    arrays = {name: encode_tagged(tok, getattr(splits, name), splits.label_names, cfg.data.seq_len)
              for name in ("train", "validation", "test")}
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
