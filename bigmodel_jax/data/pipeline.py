"""grain pipelines that pack a token stream into fixed-length training sequences.

Training: the stream is cut into windows of seq_len+1 tokens (inputs and shifted targets); each
epoch visits every window once in a seeded order, and each window is moved by a seeded random
offset in [0, seq_len) so that over epochs the model sees every split point (nanoGPT draws random
offsets; this keeps that variety while making batch i a pure function of (seed, i)). Batches are
sharded by process: process p of n takes elements p, p+n, p+2n, ... of the stream, so the union
over processes is the same global batch whatever n is (tested).
"""

from __future__ import annotations

import grain
import numpy as np


class _Windows:
    """Random-access source: window k -> tokens[k*T : k*T + T + 1] (evaluation uses it as is;
    training shifts each window by a random offset, hence one window of headroom)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        if len(tokens) < 2 * (seq_len + 1):
            raise ValueError(f"token stream of {len(tokens)} tokens is too short for seq_len={seq_len}")
        self.tokens, self.seq_len = tokens, seq_len
        self.num_windows = (len(tokens) - 1) // seq_len - 1  # leaves room for the offset

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, k: int) -> np.ndarray:
        start = int(k) * self.seq_len
        return self.tokens[start: start + self.seq_len + 1]


def num_train_windows(tokens: np.ndarray, seq_len: int) -> int:
    """The windows an epoch of train_dataset visits: its examples (DP-SGD's records)."""
    return len(_Windows(np.asarray(tokens), seq_len))


def train_dataset(tokens: np.ndarray, seq_len: int, global_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """Infinite MapDataset of per-process batches {"inputs", "targets"}: int32 [b, seq_len].

    Element i of the stream is window perm_epoch(i)[...] shifted by a seeded offset; process p
    takes elements p, p+n, p+2n, ... so global batch s is elements s*B .. s*B+B-1 for any n.
    """
    if global_batch % process_count:
        raise ValueError(f"batch {global_batch} does not divide over {process_count} processes")
    src = _Windows(np.asarray(tokens, np.int32), seq_len)

    def shifted_window(k: int, rng: np.random.Generator) -> np.ndarray:
        start = int(k) * seq_len + int(rng.integers(0, seq_len))
        return src.tokens[start: start + seq_len + 1]

    ds = (grain.MapDataset.range(len(src))
          .shuffle(seed=seed)          # a new permutation each epoch (grain reseeds per repeat)
          .repeat(None)
          .random_map(shifted_window, seed=seed))
    ds = ds[process_index::process_count].batch(global_batch // process_count)
    return ds.map(lambda w: {"inputs": w[:, :-1], "targets": w[:, 1:]})


def eval_batches(tokens: np.ndarray, seq_len: int, global_batch: int, num_batches: int,
                 process_index: int = 0, process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """Fixed, non-overlapping validation windows from the start of the stream (the same every eval)."""
    src = _Windows(np.asarray(tokens, np.int32), seq_len)
    per_process = global_batch // process_count
    num_batches = max(1, min(num_batches, len(src) // global_batch))
    out = []
    for b in range(num_batches):
        first = b * global_batch + process_index * per_process
        w = np.stack([src[first + r] for r in range(per_process)])
        out.append({"inputs": w[:, :-1], "targets": w[:, 1:]})
    return out


def example_dataset(arrays: dict[str, np.ndarray], global_batch: int, seed: int, process_index: int = 0,
                    process_count: int = 1, transform=None) -> grain.MapDataset:
    """Infinite MapDataset of per-process batches of whole examples (row i of every array), a new
    seeded order each epoch. transform(example, rng) -> example runs per element with a seeded
    numpy Generator (MLM masking), so batch s is a pure function of (seed, s)."""
    if global_batch % process_count:
        raise ValueError(f"batch {global_batch} does not divide over {process_count} processes")
    n = len(next(iter(arrays.values())))
    ds = grain.MapDataset.range(n).shuffle(seed=seed).repeat(None)
    if transform is None:
        ds = ds.map(lambda i: {k: v[i] for k, v in arrays.items()})
    else:
        ds = ds.random_map(lambda i, rng: transform({k: v[i] for k, v in arrays.items()}, rng), seed=seed)
    return ds[process_index::process_count].batch(global_batch // process_count)


def example_eval_batches(arrays: dict[str, np.ndarray], global_batch: int, process_index: int = 0,
                         process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """Every example once, in order. The last batch is filled up with copies of example 0 whose
    "weight" is 0, so shapes stay fixed (one compile) and the padding counts for nothing in the
    metrics; "index" is each row's example number, so the trainer puts the split back in order
    whatever the process count."""
    n = len(next(iter(arrays.values())))
    num_batches = -(-n // global_batch)
    per_process = global_batch // process_count
    out = []
    for b in range(num_batches):
        rows = b * global_batch + process_index * per_process + np.arange(per_process)
        real = rows < n
        rows = np.where(real, rows, 0)
        batch = {k: v[rows] for k, v in arrays.items()}
        batch["weight"] = real.astype(np.float32)
        batch["index"] = rows.astype(np.int32)
        out.append(batch)
    return out
