"""Training objectives. A task module gives the trainer exactly these:

    METRICS                                the evaluation metrics loss_fn reports (train.eval_metric picks one)
    validate(cfg)                          task-specific config checks (raise ConfigError), before compiling
    build_model(cfg, rngs) -> nnx.Module
    loss_fn(model, batch, rngs) -> (loss, metrics)   rngs=None: evaluation (no dropout)
    make_data(cfg, workdir, process_index, process_count) -> TaskData
    matmul_params(cfg) -> int              parameters in matmuls per token (for FLOPs / MFU)

and optionally:

    seq_len(cfg) -> int                    tokens per example when it is not data.seq_len (ViT: patches + [CLS])
    adapt_source(source, target_shapes, cfg) -> source   `init_from` params fitted to this model first
                                           (ViT: position embeddings resampled to a new image size)

Metrics are means over the batch; a metric dict may carry "weight" (the number of real examples
or tokens it averages), which evaluation uses to weight batches (the padded last batch counts for
what it holds). The trainer knows nothing else about a task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TaskData:
    tokenizer: Any
    train: Any  # grain.MapDataset of per-process batches (its iterator state goes in checkpoints)
    eval_batches: list[dict[str, np.ndarray]]
    train_size: str  # for the log: "4.5M tokens", "9,000 examples"
    val_size: str
    test_batches: list[dict[str, np.ndarray]] | None = None  # evaluated once, with the best params, at the end
    model_overrides: dict = field(default_factory=dict)  # config.model values the data decides (vocab_size, ...)
