"""Clients as arrays: each client's examples as rows (a task's batch keys), a round's clients in padded groups.

An example is a row of each array: for next-character prediction a window of seq_len + 1 token ids
(inputs and next-token targets) with `length` real targets, a client's last window padded; for
classification an encoded text and its label. A round's sampled clients go by size into buckets of
a power of two examples (at least min_examples), each bucket cut into groups of a size fixed per
bucket (about the same number of examples per group); a shorter last group is padded with empty
clients (no examples, weight 0) to a power of two. The compiled group update is built once per
(power of two of examples, power of two of clients), never per client, and a client never runs
more than twice the local steps its data needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClientSet:
    """All clients' examples as arrays with one row per example (a task's batch keys): client k owns
    rows offsets[k]:offsets[k + 1]. weights: what each example gives to learn from (a window's real
    next-token targets; 1 per labeled example); FedAvg weighs a client's update by their sum."""
    ids: list[str]
    arrays: dict[str, np.ndarray]
    weights: np.ndarray  # [total] float32
    offsets: np.ndarray  # [num_clients + 1] int64

    def num_examples(self, k: int) -> int:
        return int(self.offsets[k + 1] - self.offsets[k])

    def weight(self, k: int) -> float:
        return float(self.weights[self.offsets[k]:self.offsets[k + 1]].sum())


def from_rows(ids: list[str], arrays: dict[str, np.ndarray], counts: list[int],
              weights: np.ndarray | None = None) -> ClientSet:
    """Clients from rows in client order, counts[k] of them client k's; weights default to 1 per row."""
    total = int(np.sum(counts))
    if any(len(a) != total for a in arrays.values()):
        raise ValueError(f"every array needs one row per example ({total}): {({k: len(a) for k, a in arrays.items()})}")
    weights = np.ones(total, np.float32) if weights is None else weights.astype(np.float32)
    return ClientSet(list(ids), arrays, weights, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of next-token targets: ([n, seq_len + 1], [n] lengths)."""
    n_targets = len(ids) - 1
    n = max(1, -(-n_targets // seq_len))
    padded = np.zeros(n * seq_len + 1, np.int32)
    padded[:len(ids)] = ids
    rows = np.stack([padded[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)])
    lengths = np.clip(n_targets - seq_len * np.arange(n), 0, seq_len).astype(np.int32)
    return rows, lengths


def text_clients(ids: list[str], texts: list[str], encode, seq_len: int) -> ClientSet:
    """Next-token windows ("windows", "lengths"; weight = real targets). encode: text -> int array
    (a tokenizer's encode_array). Each text ends with a newline, so a client's last line predicts its
    line break as every other line does."""
    cut = [windows(encode(text + "\n"), seq_len) for text in texts]
    lengths = np.concatenate([n for _, n in cut])
    return from_rows(ids, {"windows": np.concatenate([w for w, _ in cut]), "lengths": lengths},
                     [len(w) for w, _ in cut], lengths)


def sample_round(num_clients: int, fraction: float, poisson: bool, seed: int, round_index: int) -> np.ndarray:
    """The clients of a round, a function of (seed, round) alone so that a resumed run draws the
    same ones. Fixed size max(1, round(fraction * N)) without replacement; or Poisson (each client
    independently with probability `fraction`, what DP-FedAvg's accountant assumes), maybe none."""
    rng = np.random.default_rng([seed, round_index, 7])
    if poisson:
        return np.flatnonzero(rng.random(num_clients) < fraction)
    m = max(1, round(fraction * num_clients))
    return np.sort(rng.choice(num_clients, size=m, replace=False))


def bucket(n: int, minimum: int) -> int:
    """Windows a group is padded to: the next power of two, at least `minimum`."""
    return max(minimum, 1 << max(0, n - 1).bit_length())


@dataclass
class Group:
    """One padded group: client index (-1 = padding), its examples' arrays, examples and weight per client."""
    clients: np.ndarray  # [G]
    arrays: dict[str, np.ndarray]  # {name: [G, N, ...]}
    num_examples: np.ndarray  # [G]
    weights: np.ndarray  # [G]: the sum of the client's example weights, 0 for padding

    @property
    def n_pad(self) -> int:
        """Examples per client after padding (the compiled group update's size)."""
        return next(iter(self.arrays.values())).shape[1]


def group_size(n_pad: int, max_clients: int, group_examples: int, multiple: int) -> int:
    """Clients per group of a bucket: about group_examples examples in all, at most max_clients, a
    multiple of `multiple` (the devices on the clients axis). Fixed per bucket, so one compile each."""
    return max(multiple, min(max_clients, group_examples // n_pad) // multiple * multiple)


def round_groups(cs: ClientSet, clients: np.ndarray, max_clients: int, group_examples: int, min_examples: int,
                 multiple: int = 1) -> list[Group]:
    """The round's clients by bucket (their example count's power of two), smallest first, each
    bucket cut into groups (see group_size and the module docstring)."""
    by_bucket: dict[int, list[int]] = {}
    for k in sorted(clients.tolist(), key=lambda k: (cs.num_examples(k), k)):
        by_bucket.setdefault(bucket(cs.num_examples(k), min_examples), []).append(k)
    groups = []
    for n_pad, members in sorted(by_bucket.items()):
        size = group_size(n_pad, max_clients, group_examples, multiple)
        for i in range(0, len(members), size):
            chunk = members[i:i + size]  # a short last group shrinks to a power of two: padding clients cost compute
            groups.append(_group(cs, chunk, min(size, -(-bucket(len(chunk), 1) // multiple) * multiple), n_pad))
    return groups


def _group(cs: ClientSet, members: list[int], group_size: int, n_pad: int) -> Group:
    arrays = {k: np.zeros((group_size, n_pad) + a.shape[1:], a.dtype) for k, a in cs.arrays.items()}
    counts = np.zeros(group_size, np.int32)
    weights = np.zeros(group_size, np.float32)
    idx = np.full(group_size, -1, np.int64)
    for g, k in enumerate(members):
        lo, hi = cs.offsets[k], cs.offsets[k + 1]
        for name, a in cs.arrays.items():
            arrays[name][g, :hi - lo] = a[lo:hi]
        counts[g], weights[g], idx[g] = hi - lo, cs.weight(k), k
    return Group(idx, arrays, counts, weights)
