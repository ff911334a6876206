"""Token tagging: a Dense head on every token; each word's tag sits on its first sub-token.

Scores are entity-level precision / recall / F1 (seqeval, CoNLL's counting) over the split's gold
word tags; words cut off by data.seq_len count as predicted "O", so a truncated entity is missed,
not dropped. "accuracy" is the tag accuracy over the words the model sees.

Datasets (data.dataset): "plays_speakers", derived from the real plays because no tagging set
ships offline — scene text as words, the speaker-heading words tagged B-SPK/I-SPK (colons
dropped, so a heading must be told from a name said in dialogue); "conll", the CoNLL-2003 file
format, read from data.train_file / data.validation_file / data.test_file.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import EncoderWithHead, tagging_loss, tagging_nll
from bigmodel_jax.tasks import encoder
from bigmodel_jax.tasks.encoder import FAMILY, adapt_source, matmul_params, tokens_per_example  # noqa: F401
from bigmodel_jax.data.records import BadRecords
from bigmodel_jax.tasks.protocol import TaskData


def _conll(d) -> labeled.LabeledSplits:
    train, val, test = (labeled.read_conll(Path(p).expanduser(), on_bad_record=d.on_bad_record)
                        for p in (d.train_file, d.validation_file, d.test_file))
    tags = sorted({t for _, ts in train for t in ts} - {"O"})
    known = {"O", *tags}

    def seen_tags_only(sentences: list, path: str) -> list:
        """A tag the training file never has cannot be predicted or scored: such a sentence is a
        bad record of its file."""
        bad, kept = BadRecords(Path(path).expanduser(), d.on_bad_record), []
        for i, (words, sentence_tags) in enumerate(sentences, 1):
            if unseen := sorted(set(sentence_tags) - known):
                bad.bad(f"sentence {i}", f"tags {unseen} never occur in the training file {d.train_file}")
            else:
                kept.append((words, sentence_tags))
        bad.report()
        return kept

    val, test = seen_tags_only(val, d.validation_file), seen_tags_only(test, d.test_file)
    return labeled.LabeledSplits(train, val, test, ("O", *tags), f"CoNLL files {d.train_file} ...")


DATASETS = {
    "plays_speakers": lambda d: plays_tasks.speaker_tagging(d.tfds_dir, d.plays_dir or None),
    "conll": _conll,
}

METRICS = ("loss", "accuracy", "precision", "recall", "f1")  # corpus_metrics reports; train.eval_metric picks


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS, {"conll": "a CoNLL-format file (token ... tag per line)"})


build_model = encoder.build_token_model


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    return tagging_loss(encoder.forward(model, batch, rngs), batch["labels"])


def eval_fn(model: EncoderWithHead, batch: dict) -> dict[str, jax.Array]:
    logits_btc = encoder.forward(model, batch)
    nll_b, count_b = tagging_nll(logits_btc, batch["labels"])
    return {"nll": nll_b, "tokens": count_b, "pred": logits_btc.argmax(-1).astype(jnp.int32),
            "labels": batch["labels"]}


def corpus_metrics(outputs: dict[str, np.ndarray], reference: dict) -> dict[str, float]:
    """reference: {"label_names": tag of each class id, "tags": each example's gold word tags}."""
    names, gold = reference["label_names"], reference["tags"]
    pred = []
    for pred_t, labels_t, tags in zip(outputs["pred"], outputs["labels"], gold, strict=True):
        seen = [names[p] for p in pred_t[labels_t >= 0]]  # one per word, in order
        pred.append(seen + ["O"] * (len(tags) - len(seen)))
    first = outputs["labels"] >= 0
    accuracy = float((outputs["pred"][first] == outputs["labels"][first]).mean()) if first.any() else 0.0
    return {"loss": eval_metrics.mean_loss(outputs["nll"], outputs["tokens"]), "accuracy": accuracy,
            **eval_metrics.entities(gold, pred)}


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
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index,
                                       lambda: [" ".join(words) for words, _ in splits.train])
    overrides["num_outputs"] = len(splits.label_names)
    arrays = {name: encode_tagged(tok, getattr(splits, name), splits.label_names, cfg.data.seq_len)
              for name in ("train", "validation", "test")}
    gold = {name: [list(tags) for _, tags in getattr(splits, name)] for name in ("validation", "test")}
    data = encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count, references=gold)
    for split in (data.validation, data.test):
        split.reference = {"label_names": splits.label_names, "tags": split.reference}
    return data
