"""Batches of variable-length utterances padded to a few bucket lengths.

Padding every utterance to the longest one would make a batch of 1-second prompts cost as much as
one of 20-second prompts (attention: 400x). Each batch is padded instead to the smallest bucket
(a power of two seconds, up to the cap) that holds its longest utterance, so the step compiles once
per bucket. Training batches group utterances of similar length: each epoch shuffles the examples
with a seeded permutation, sorts runs of 32 batches' worth by length, cuts them into batches and
shuffles the batch order, so batch i is a pure function of (seed, i), as the other pipelines'
(the checkpointed grain iterator state resumes it exactly), and every process builds the same
global batch and takes its rows p, p+n, ...
"""

from __future__ import annotations

from typing import Callable

import grain
import numpy as np

SORT_RUN = 32  # batches per length-sorted run


def buckets(max_samples: int, sample_rate: int) -> np.ndarray:
    """Bucket lengths in samples: 1, 2, 4, ... seconds, the last one max_samples."""
    sizes, s = [], sample_rate
    while s < max_samples:
        sizes.append(s)
        s *= 2
    return np.array(sizes + [max_samples])


def padded_batch(examples: list[dict], bucket_sizes: np.ndarray, label_len: int) -> dict[str, np.ndarray]:
    """Examples {audio int16 [N], labels int32 [L]} -> {audio [B, bucket], length [B], labels [B, label_len],
    label_length [B]}."""
    longest = max(len(e["audio"]) for e in examples)
    size = int(bucket_sizes[np.searchsorted(bucket_sizes, longest)])
    audio = np.zeros((len(examples), size), np.int16)
    labels = np.zeros((len(examples), label_len), np.int32)
    for i, e in enumerate(examples):
        audio[i, :len(e["audio"])] = e["audio"]
        labels[i, :len(e["labels"])] = e["labels"]
    return {"audio": audio, "length": np.array([len(e["audio"]) for e in examples], np.int32),
            "labels": labels, "label_length": np.array([len(e["labels"]) for e in examples], np.int32)}


class _LengthBatches:
    """Random-access source of global batches: batch i of the endless sequence of epochs."""

    def __init__(self, examples: list[dict], batch: int, seed: int, bucket_sizes: np.ndarray, label_len: int,
                 positions: Callable[[int], int]):
        if len(examples) < batch:
            raise ValueError(f"{len(examples)} training utterances are fewer than one batch of {batch}")
        self.examples, self.batch, self.seed = examples, batch, seed
        self.bucket_sizes, self.label_len, self.positions = bucket_sizes, label_len, positions
        self.per_epoch = len(examples) // batch  # the remainder waits for a later epoch's permutation
        self.lengths = np.array([len(e["audio"]) for e in examples])
        self._cached = (-1, [])  # (epoch, its batches): one attribute, so a reader never sees a mixed pair

    def epoch_order(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches as example indices."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.examples))[: self.per_epoch * self.batch]
        run = SORT_RUN * self.batch
        sorted_runs = [chunk[np.argsort(self.lengths[chunk], kind="stable")]
                       for chunk in np.split(perm, range(run, len(perm), run))]
        batches = np.concatenate(sorted_runs).reshape(self.per_epoch, self.batch)
        return list(batches[rng.permutation(self.per_epoch)])

    def __len__(self) -> int:
        return 1 << 40  # endless: the trainer stops at num_steps

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        epoch, j = divmod(int(i), self.per_epoch)
        if self._cached[0] != epoch:
            self._cached = (epoch, self.epoch_order(epoch))
        batch = padded_batch([self.examples[k] for k in self._cached[1][j]], self.bucket_sizes, self.label_len)
        batch["padded_positions"] = np.full(self.batch, self.positions(batch["audio"].shape[1]), np.int32)
        return batch


def train_dataset(examples: list[dict], global_batch: int, seed: int, bucket_sizes: np.ndarray, label_len: int,
                  positions: Callable[[int], int], process_index: int = 0, process_count: int = 1
                  ) -> grain.MapDataset:
    """Endless MapDataset of this process's rows of each length-bucketed global batch. positions(samples):
    the model's positions for a row of that many samples, which each batch carries as "padded_positions" (the
    trainer's throughput and MFU count them)."""
    if global_batch % process_count:
        raise ValueError(f"batch {global_batch} does not divide over {process_count} processes")
    source = _LengthBatches(examples, global_batch, seed, bucket_sizes, label_len, positions)
    return grain.MapDataset.source(source).map(
        lambda b: {k: v[process_index::process_count] for k, v in b.items()})


def eval_batches(examples: list[dict], global_batch: int, bucket_sizes: np.ndarray, label_len: int,
                 process_index: int = 0, process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """Every example once, in batches of similar length (sorted), each padded to its bucket; the last
    batch filled up with copies of its first example of "weight" 0; "index" is the example's
    position in `examples`, so the trainer restores the split's order."""
    order = np.argsort([len(e["audio"]) for e in examples], kind="stable")
    per_process = global_batch // process_count
    out = []
    for start in range(0, len(order), global_batch):
        rows = order[start:start + global_batch]
        real = np.arange(global_batch) < len(rows)
        rows = np.where(real, np.pad(rows, (0, global_batch - len(rows)), constant_values=rows[0]), rows[0])
        mine = slice(process_index * per_process, (process_index + 1) * per_process)
        batch = padded_batch([examples[k] for k in rows], bucket_sizes, label_len)
        batch = {k: v[mine] for k, v in batch.items()}
        batch["weight"] = real[mine].astype(np.float32)
        batch["index"] = rows[mine].astype(np.int32)
        out.append(batch)
    return out
