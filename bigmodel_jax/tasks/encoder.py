"""What every BERT-family task shares: config checks, the tokenizer a run uses, and turning
encoded example arrays into train / eval / test batches.

Where the tokenizer comes from, in order: the workdir's own `tokenizer/` (a resumed run), then
`data.tokenizer_dir`, then the `init_from` source (a Hugging Face directory, a workdir of ours, or
"minilm" for the packaged all-MiniLM-L6-v2), else a WordPiece vocabulary trained on the task's
training text. It is saved in `<workdir>/tokenizer/` so `embed` and later finetuning use the same
one. With `init_from`, the architecture is the source's (the trainer reconciles it with the config
before this runs: `transfer.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import pretrained
from bigmodel_jax.data import labeled, pipeline
from bigmodel_jax.data.prepare import save_whole
from bigmodel_jax.data.wordpiece import WordPieceTokenizer
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.bert import count_params
from bigmodel_jax.models.heads import EncoderWithHead
from bigmodel_jax.tasks.protocol import EvalSet, TaskData, data_seq_len, keep_source

log = logging.getLogger(__name__)

# protocol values every BERT-family task shares (each task imports them by name)
FAMILY = "bert"
tokens_per_example = data_seq_len
adapt_source = keep_source


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
    if cfg.data.seq_len > m.max_len:
        raise ConfigError("data.seq_len", cfg.data.seq_len, f"at most model.max_len={m.max_len}")
    if cfg.data.tokenizer_dir and not Path(cfg.data.tokenizer_dir).expanduser().is_dir():
        raise ConfigError("data.tokenizer_dir", cfg.data.tokenizer_dir, "a folder with vocab.txt or tokenizer.json")


def build_pooled_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    """The encoder with a head on its pooled [CLS] output (classification, regression)."""
    return EncoderWithHead(cfg.model, per_token=False, rngs=rngs)


def build_token_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderWithHead:
    """The encoder with a head on every token (tagging, QA spans)."""
    return EncoderWithHead(cfg.model, per_token=True, rngs=rngs)


def forward(model: EncoderWithHead, batch: dict, rngs: nnx.Rngs | None = None) -> jax.Array:
    """The head's f32 outputs for a batch of encoded texts (rngs=None: evaluation)."""
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], rngs=rngs)


def tokenizer(cfg: ml_collections.ConfigDict, workdir: Path, process_index: int,
              train_texts: Callable[[], Iterable[str]]) -> tuple[WordPieceTokenizer, dict]:
    """(tokenizer, model overrides: its vocab_size): see the module docstring for the order."""
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
        save_whole(tok.save, own)  # a folder of 4 files: never half of them
    return tok, {"vocab_size": tok.vocab_size}


def example_data(cfg: ml_collections.ConfigDict, tok: WordPieceTokenizer | None, overrides: dict,
                 splits: dict[str, dict[str, np.ndarray]], process_index: int, process_count: int,
                 transform=None, references: dict[str, list] | None = None) -> TaskData:
    """splits: {"train"|"validation"|"test": {name: array with one row per example}} -> TaskData.
    Validation is evaluated on at most train.eval_batches batches (a seeded sample: the records
    come grouped by play or label); test in full. transform(example, rng) runs on training
    examples only (image augmentation). references: {"validation"|"test": one entry per example}
    for corpus_metrics (gold tags, answer texts), cut to the same sample."""
    b = cfg.train.batch_size
    n = {k: len(next(iter(v.values()))) for k, v in splits.items()}
    references = references or {}
    train = pipeline.example_dataset(splits["train"], b, cfg.seed, process_index, process_count, transform)
    keep = seeded_subset(n["validation"], b * cfg.train.eval_batches, cfg.seed)
    val_ref = references.get("validation")
    validation = EvalSet(
        pipeline.example_eval_batches({k: v[keep] for k, v in splits["validation"].items()}, b, process_index,
                                      process_count),
        f"{len(keep):,} of {n['validation']:,} examples", None if val_ref is None else [val_ref[i] for i in keep])
    test = None
    if "test" in splits:
        test = EvalSet(pipeline.example_eval_batches(splits["test"], b, process_index, process_count),
                       f"{n['test']:,} examples", references.get("test"))
    return TaskData(tok, train, validation, f"{n['train']:,} examples", test, model_overrides=overrides)


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
