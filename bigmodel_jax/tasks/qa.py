"""Extractive QA: a Dense head gives each token a start and an end score; the answer is the
best span of the context ([CLS] stands for "not in this window", as in BERT on SQuAD).

Datasets (data.dataset): "plays_speaker_qa", derived from the real plays because no QA set ships
offline — 'Who says "<the opening words of a speech>"?' over a few consecutive speeches of a
scene, the answer being that speech's speaker heading; "squad", SQuAD v1.1/v2.0 JSON files read
from data.train_file / data.validation_file / data.test_file. The question is never truncated;
the context is cut to fit data.seq_len (no document stride: an answer cut off becomes [CLS]).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import EncoderWithHead, span_loss
from bigmodel_jax.tasks import TaskData, encoder

matmul_params = encoder.matmul_params


def _squad(d) -> labeled.LabeledSplits:
    train, val, test = (labeled.read_squad(Path(p).expanduser()) for p in (d.train_file, d.validation_file, d.test_file))
    return labeled.LabeledSplits(train, val, test, None, f"SQuAD files {d.train_file} ...")


DATASETS = {
    "plays_speaker_qa": lambda d: plays_tasks.speaker_qa(d.tfds_dir, d.plays_dir or None),
    "squad": _squad,
}

METRICS = ("loss", "exact_match", "f1")  # what loss_fn reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS, {"squad": "a SQuAD-format JSON file"})


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    return EncoderWithHead(cfg.model, per_token=True, rngs=rngs)


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_bt2 = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)
    context_bt = batch["context_mask"].astype(bool)
    return span_loss(logits_bt2, batch["start"], batch["end"], context_bt, batch.get("weight"))


def encode_qa(tok, records: list[dict], max_len: int) -> dict[str, np.ndarray]:
    """Question + context pairs; the answer's character span -> its first and last context token
    (0, 0 = [CLS] when the context holds no answer or it was cut off)."""
    enc = tok.encode([r["question"] for r in records], pairs=[r["context"] for r in records], max_len=max_len,
                     truncation="only_second")
    seq, offsets = enc["sequence_ids"], enc["offsets"]
    start = np.zeros(len(records), np.int32)
    end = np.zeros(len(records), np.int32)
    for i, r in enumerate(records):
        if not r["answers"]["text"]:
            continue
        a0 = r["answers"]["answer_start"][0]
        a1 = a0 + len(r["answers"]["text"][0])
        in_ctx = seq[i] == 1
        covers_start = np.flatnonzero(in_ctx & (offsets[i, :, 0] <= a0) & (offsets[i, :, 1] > a0))
        covers_end = np.flatnonzero(in_ctx & (offsets[i, :, 0] < a1) & (offsets[i, :, 1] >= a1))
        if len(covers_start) and len(covers_end):
            start[i], end[i] = covers_start[0], covers_end[-1]
    context_mask = (seq == 1)
    context_mask[:, 0] = True  # [CLS]: "no answer here"
    return {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
            "attention_mask": enc["attention_mask"], "context_mask": context_mask.astype(np.int32),
            "start": start, "end": end}


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer_and_architecture(
        cfg, Path(workdir), process_index, lambda: [r["question"] + " " + r["context"] for r in splits.train])
    overrides["num_outputs"] = 2
    arrays = {name: encode_qa(tok, getattr(splits, name), cfg.data.seq_len) for name in ("train", "validation", "test")}
    return encoder.example_data(cfg, tok, overrides, arrays, process_index, process_count)
