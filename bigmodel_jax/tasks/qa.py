"""Extractive QA: a Dense head gives each token a start and an end score; the answer is the
best span of the context ([CLS] stands for "not in this window", as in BERT on SQuAD).

Datasets (data.dataset): "plays_speaker_qa", derived from the real plays because no QA set ships
offline — 'Who says "<the opening words of a speech>"?' over a few consecutive speeches of a
scene, the answer being that speech's speaker heading; "squad", SQuAD v1.1/v2.0 JSON files read
from data.train_file / data.validation_file / data.test_file. The question is never truncated;
the context is cut to fit data.seq_len (no document stride: an answer cut off becomes [CLS]).

Evaluation decodes the best span (start <= end, at most MAX_ANSWER_TOKENS long, scored by the sum
of its start and end logits, as BERT on SQuAD), turns it into the context's text through the
tokens' character offsets, and scores it with the official SQuAD exact match and F1 (answer
normalization, the max over every gold answer; [CLS] predicts "no answer", right only for an
unanswerable v2.0 question). An answer cut off by data.seq_len is still a gold answer.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.models.heads import EncoderWithHead, best_spans, span_loss, span_nll
from bigmodel_jax.tasks import encoder
from bigmodel_jax.tasks.encoder import FAMILY, adapt_source, matmul_params, tokens_per_example  # noqa: F401
from bigmodel_jax.tasks.protocol import TaskData

MAX_ANSWER_TOKENS = 30  # the longest span decoded (transformers' question-answering default)


def _squad(d) -> labeled.LabeledSplits:
    train, val, test = (labeled.read_squad(Path(p).expanduser(), on_bad_record=d.on_bad_record)
                        for p in (d.train_file, d.validation_file, d.test_file))
    return labeled.LabeledSplits(train, val, test, None, f"SQuAD files {d.train_file} ...")


DATASETS = {
    "plays_speaker_qa": lambda d: plays_tasks.speaker_qa(d.tfds_dir, d.plays_dir or None),
    "squad": _squad,
}

METRICS = ("loss", "exact_match", "f1")  # what corpus_metrics reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    encoder.validate(cfg, DATASETS, {"squad": "a SQuAD-format JSON file"})


build_model = encoder.build_token_model


def loss_fn(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    return span_loss(encoder.forward(model, batch, rngs), batch["start"], batch["end"],
                     batch["context_mask"].astype(bool))


def eval_fn(model: EncoderWithHead, batch: dict) -> dict[str, jax.Array]:
    logits_bt2 = encoder.forward(model, batch)
    context_bt = batch["context_mask"].astype(bool)
    start_b, end_b = best_spans(logits_bt2, context_bt, MAX_ANSWER_TOKENS)
    return {"loss": span_nll(logits_bt2, batch["start"], batch["end"], context_bt), "start": start_b, "end": end_b}


def corpus_metrics(outputs: dict[str, np.ndarray], reference: list[tuple]) -> dict[str, float]:
    """reference: each example's (context, token character offsets [T, 2], gold answer texts)."""
    predictions = [context[offsets[s, 0]:offsets[e, 1]] if s > 0 else ""
                   for s, e, (context, offsets, _) in zip(outputs["start"], outputs["end"], reference, strict=True)]
    return {"loss": eval_metrics.mean_loss(outputs["loss"]),
            **eval_metrics.squad(predictions, [answers for _, _, answers in reference])}


def encode_qa(tok, records: list[dict], max_len: int) -> tuple[dict[str, np.ndarray], list[tuple]]:
    """(arrays, reference) for question + context pairs. The answer's character span -> its first
    and last context token (0, 0 = [CLS] when the context holds no answer or it was cut off); the
    reference keeps each record's context, its tokens' character offsets (0, 0 outside the
    context) and its gold answer texts, for scoring decoded spans as text."""
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
    ctx_offsets = np.where(context_mask[..., None], offsets, 0).astype(np.int32)
    reference = [(r["context"], ctx_offsets[i], list(r["answers"]["text"])) for i, r in enumerate(records)]
    context_mask[:, 0] = True  # [CLS]: "no answer here"
    arrays = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
              "attention_mask": enc["attention_mask"], "context_mask": context_mask.astype(np.int32),
              "start": start, "end": end}
    return arrays, reference


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    splits = encoder.load_splits(cfg, DATASETS)
    tok, overrides = encoder.tokenizer(cfg, Path(workdir), process_index,
                                       lambda: [r["question"] + " " + r["context"] for r in splits.train])
    overrides["num_outputs"] = 2
    encoded = {name: encode_qa(tok, getattr(splits, name), cfg.data.seq_len)
               for name in ("train", "validation", "test")}
    return encoder.example_data(cfg, tok, overrides, {name: arrays for name, (arrays, _) in encoded.items()},
                                process_index, process_count,
                                references={name: encoded[name][1] for name in ("validation", "test")})
