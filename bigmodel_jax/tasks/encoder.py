"""What every BERT-family task shares: config checks, the tokenizer and architecture a run uses,
and turning encoded example arrays into train / eval / test batches.

Where the tokenizer comes from, in order: the workdir's own `tokenizer/` (a resumed run), then
`data.tokenizer_dir`, then the `init_from` source (a Hugging Face directory, a workdir of ours, or
"minilm" for the packaged all-MiniLM-L6-v2),
else a WordPiece vocabulary trained on the task's training text. It is saved in
`<workdir>/tokenizer/` so `embed` and later finetuning use the same one. With `init_from`, the
architecture (layers, width, heads, ...) is the source's, whatever the config says: a finetuned
model can only have the shape of what it starts from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

import ml_collections
import numpy as np

from bigmodel_jax import pretrained
from bigmodel_jax.config import ConfigError
from bigmodel_jax.data import labeled, pipeline
from bigmodel_jax.data.wordpiece import WordPieceTokenizer
from bigmodel_jax.models.bert import count_params
from bigmodel_jax.tasks import TaskData

log = logging.getLogger(__name__)

ARCH_KEYS = ("num_layers", "width", "num_heads", "mlp_dim", "max_len", "type_vocab_size", "activation", "norm_eps")


def validate(cfg: ml_collections.ConfigDict, datasets: dict | None = None, file_formats: dict | None = None) -> None:
    """The shared checks, plus data.dataset one of `datasets`; for the datasets in
    `file_formats` ({name: what the files are}) the three split files must exist."""
    if datasets is not None and cfg.data.dataset not in datasets:
        raise ConfigError("data.dataset", cfg.data.dataset, f"one of {sorted(datasets)}")
    if file_formats and cfg.data.dataset in file_formats:
        for key in ("train_file", "validation_file", "test_file"):
            if not Path(cfg.data[key]).expanduser().is_file():
                raise ConfigError(f"data.{key}", cfg.data[key], file_formats[cfg.data.dataset])
    m = cfg.model
    if m.activation not in ("gelu", "gelu_tanh"):
        raise ConfigError("model.activation", m.activation, "one of ['gelu', 'gelu_tanh'] for BERT")
    if cfg.data.seq_len > m.max_len and not cfg.init_from:
        raise ConfigError("data.seq_len", cfg.data.seq_len, f"at most model.max_len={m.max_len}")
    if cfg.init_from:
        try:
            src = pretrained.resolve(cfg.init_from)
        except FileNotFoundError as e:
            raise ConfigError("init_from", cfg.init_from, str(e)) from None
        if not (src / "config.json").is_file() and not (src / "checkpoints").is_dir():
            raise ConfigError("init_from", cfg.init_from, "a Hugging Face directory (config.json + model.safetensors) "
                                                          f"or a workdir of ours with checkpoints/; {src} is neither")
    if cfg.data.tokenizer_dir and not Path(cfg.data.tokenizer_dir).expanduser().is_dir():
        raise ConfigError("data.tokenizer_dir", cfg.data.tokenizer_dir, "a folder with vocab.txt or tokenizer.json")


def _bert_config(hf_cfg: dict) -> dict:
    from bigmodel_jax import hf

    return hf.bert_config(hf_cfg)


def source_architecture(init_from: str) -> dict:
    """The model section values that fix the shape of an `init_from` source."""
    return pretrained.source_architecture(init_from, ARCH_KEYS, _bert_config, "BERT")


def tokenizer_and_architecture(cfg: ml_collections.ConfigDict, workdir: Path, process_index: int,
                               train_texts: Callable[[], Iterable[str]]) -> tuple[WordPieceTokenizer, dict]:
    """(tokenizer, model overrides): see the module docstring for the order."""
    own = workdir / "tokenizer"
    src = pretrained.resolve(cfg.init_from) if cfg.init_from else None
    if own.is_dir():
        tok = WordPieceTokenizer.from_dir(own)
    elif cfg.data.tokenizer_dir:
        tok = WordPieceTokenizer.from_dir(Path(cfg.data.tokenizer_dir).expanduser())
    elif src is not None:
        tok = WordPieceTokenizer.from_dir(src if (src / "config.json").is_file() else src / "tokenizer")
    else:
        tok = WordPieceTokenizer.train(train_texts(), cfg.data.vocab_size)
        log.info("trained a WordPiece vocabulary of %d tokens", tok.vocab_size)
    if not own.is_dir() and process_index == 0:
        tok.save(own)
    overrides = {"vocab_size": tok.vocab_size}
    if src is not None:
        overrides.update(pretrained.shape_from_source(cfg, ARCH_KEYS, _bert_config, "BERT"))
    max_len = overrides.get("max_len", cfg.model.max_len)
    if cfg.data.seq_len > max_len:
        raise ConfigError("data.seq_len", cfg.data.seq_len, f"at most the model's max_len={max_len}")
    return tok, overrides


def example_data(cfg: ml_collections.ConfigDict, tok: WordPieceTokenizer | None, overrides: dict,
                 splits: dict[str, dict[str, np.ndarray]], process_index: int, process_count: int,
                 transform=None) -> TaskData:
    """splits: {"train"|"validation"|"test": {name: array with one row per example}} -> TaskData.
    Validation is evaluated on at most train.eval_batches batches (a seeded sample: the records
    come grouped by play or label); test in full. transform(example, rng) runs on training
    examples only (image augmentation)."""
    b = cfg.train.batch_size
    n = {k: len(next(iter(v.values()))) for k, v in splits.items()}
    train = pipeline.example_dataset(splits["train"], b, cfg.seed, process_index, process_count, transform)
    keep = seeded_subset(n["validation"], b * cfg.train.eval_batches, cfg.seed)
    val = {k: v[keep] for k, v in splits["validation"].items()}
    evals = pipeline.example_eval_batches(val, b, process_index, process_count)
    test = (pipeline.example_eval_batches(splits["test"], b, process_index, process_count)
            if "test" in splits else None)
    return TaskData(tok, train, evals, f"{n['train']:,} examples", f"{len(keep):,} of {n['validation']:,} examples",
                    test_batches=test, model_overrides=overrides)


def seeded_subset(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of k of n records (all n when k <= 0 or k >= n): records
    come grouped by play or label, so a prefix would be a biased sample."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def load_splits(cfg: ml_collections.ConfigDict, datasets: dict) -> labeled.LabeledSplits:
    """cfg.data.dataset read through `datasets` ({name: fn(data config)}), with data.tfds_dir
    expanded and the training split cut to data.max_train_examples (0 = all)."""
    d = ml_collections.ConfigDict(cfg.data.to_dict())
    d.tfds_dir = str(Path(d.tfds_dir).expanduser())
    splits = datasets[d.dataset](d)
    splits.train = [splits.train[i] for i in seeded_subset(len(splits.train), d.max_train_examples, cfg.seed)]
    return splits


def text_target_arrays(tok: WordPieceTokenizer, splits, max_len: int, target: str,
                       dtype: type) -> dict[str, dict[str, np.ndarray]]:
    """(text, target) records of each split -> encoded texts plus the target column."""
    arrays = {}
    for name in ("train", "validation", "test"):
        records = getattr(splits, name)
        enc = tok.encode([text for text, _ in records], max_len=max_len)
        arrays[name] = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        arrays[name][target] = np.asarray([value for _, value in records], dtype)
    return arrays


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    """Encoder matmul parameters per token (the pooler and head run once per example: ignored)."""
    m = cfg.model
    return count_params(m, include_embeddings=False) - (m.width * m.width + m.width)
