"""What a task module gives the trainer, and the data it hands over.

A task is a module (tasks/causal_lm.py, classify.py, ...) registered in `tasks/__init__.py`. It
defines every name below; the trainer calls nothing else and never asks which task it runs. A
test checks that every registered task has them all.

    FAMILY                  'gpt', 'bert', 'vit', 't5' or 'audio': the model family (which init_from sources fit)
    METRICS                 what corpus_metrics reports that train.eval_metric may pick
    validate(cfg)           task-specific config checks, before anything compiles (raise ConfigError)
    build_model(cfg, rngs) -> nnx.Module
    loss_fn(model, batch, rngs) -> (loss, metrics)
                            training: a mean over the batch; metrics hold "loss" and may hold
                            "weight" (the examples or tokens the mean is over), which gradient
                            accumulation and the pmap mode weigh micro-batches and devices by
    eval_fn(model, batch) -> {name: [B, ...] array}
                            evaluation (no dropout): each example's outputs (its loss, its
                            prediction, what it is scored against), never a batch mean
    corpus_metrics(outputs, reference) -> {metric: float}
                            the split's metrics from the outputs of all its real examples, in
                            order (numpy, padding rows dropped): ratios from corpus counts
    make_data(cfg, workdir, process_index, process_count) -> TaskData
    matmul_params(cfg) -> int           parameters in matmuls per token (FLOPs / MFU)
    tokens_per_example(cfg) -> int      sequence length the model runs on (tokens/s, MFU)
    adapt_source(source, target_shapes, cfg) -> source
                            `init_from` params fitted to this model before they are taken by
                            path (ViT: position embeddings resampled to a new image size)

`data_seq_len` and `keep_source` below are the plain choices for the last two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ml_collections
import numpy as np

PROTOCOL = ("FAMILY", "METRICS", "validate", "build_model", "loss_fn", "eval_fn", "corpus_metrics", "make_data",
            "matmul_params", "tokens_per_example", "adapt_source")


@dataclass
class EvalSet:
    """A split to evaluate: this process's rows of each global batch. Example batches carry
    "weight" (0 for the rows that pad the last batch) and "index" (the example's position in the
    split), which the trainer uses to drop padding and restore order before corpus_metrics."""
    batches: list[dict[str, np.ndarray]]
    size: str  # for the log: "4,096 tokens", "359 of 359 examples"
    reference: Any = None  # what corpus_metrics needs beyond the outputs (gold tags, answer texts), by index


@dataclass
class TaskData:
    tokenizer: Any
    train: Any  # grain.MapDataset of per-process batches (its iterator state goes in checkpoints)
    validation: EvalSet
    train_size: str  # for the log: "4.5M tokens", "9,000 examples"
    test: EvalSet | None = None  # evaluated once at the end (with the best params under train.restore_best)
    model_overrides: dict = field(default_factory=dict)  # config.model values the data decides (vocab_size, ...)
    train_examples: int = 0  # the records a batch samples from (DP-SGD's sampling rate); 0 = not counted


def data_seq_len(cfg: ml_collections.ConfigDict) -> int:
    """tokens_per_example for tasks whose model runs on data.seq_len tokens."""
    return cfg.data.seq_len


def keep_source(source: dict[str, Any], target_shapes: dict[str, tuple], cfg: ml_collections.ConfigDict
                ) -> dict[str, Any]:
    """adapt_source for tasks that take init_from parameters as they are."""
    return source
