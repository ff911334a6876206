"""Clients as arrays: each client's text cut into windows, a round's clients into padded groups.

A window is seq_len + 1 token ids (inputs and next-token targets) with `length` real targets; a
client's last window is padded. A round's sampled clients go by size into buckets of a power of
two windows (at least min_windows), each bucket cut into groups of a size fixed per bucket (about
the same number of windows per group); a shorter last group is padded with empty clients (no
windows, weight 0) to a power of two. The compiled group update is built once per (power of two
of windows, power of two of clients), never per client, and a client never runs more than twice the
local steps its data needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClientSet:
    """All clients' windows in one array: client k owns rows offsets[k]:offsets[k + 1]."""
    ids: list[str]
    windows: np.ndarray  # [total, seq_len + 1] int32
    lengths: np.ndarray  # [total] int32: real targets in each window
    offsets: np.ndarray  # [num_clients + 1] int64

    def num_windows(self, k: int) -> int:
        return int(self.offsets[k + 1] - self.offsets[k])

    def tokens(self, k: int) -> int:
        return int(self.lengths[self.offsets[k]:self.offsets[k + 1]].sum())


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of next-token targets: ([n, seq_len + 1], [n] lengths)."""
    n_targets = len(ids) - 1
    n = max(1, -(-n_targets // seq_len))
    padded = np.zeros(n * seq_len + 1, np.int32)
    padded[:len(ids)] = ids
    rows = np.stack([padded[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)])
    lengths = np.clip(n_targets - seq_len * np.arange(n), 0, seq_len).astype(np.int32)
    return rows, lengths


def client_set(ids: list[str], texts: list[str], encode, seq_len: int) -> ClientSet:
    """encode: text -> int array (a tokenizer's encode_array). Each text ends with a newline, so a
    client's last line predicts its line break as every other line does."""
    rows, lengths, offsets = [], [], [0]
    for text in texts:
        w, n = windows(encode(text + "\n"), seq_len)
        rows.append(w)
        lengths.append(n)
        offsets.append(offsets[-1] + len(w))
    return ClientSet(list(ids), np.concatenate(rows), np.concatenate(lengths), np.array(offsets, np.int64))


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
    """One padded group: client index (-1 = padding), windows, lengths, windows per client."""
    clients: np.ndarray  # [G]
    windows: np.ndarray  # [G, N, seq_len + 1]
    lengths: np.ndarray  # [G, N]
    num_windows: np.ndarray  # [G]


def group_size(n_pad: int, max_clients: int, group_windows: int, multiple: int) -> int:
    """Clients per group of a bucket: about group_windows windows in all, at most max_clients, a
    multiple of `multiple` (the devices on the clients axis). Fixed per bucket, so one compile each."""
    return max(multiple, min(max_clients, group_windows // n_pad) // multiple * multiple)


def round_groups(cs: ClientSet, clients: np.ndarray, max_clients: int, group_windows: int, min_windows: int,
                 multiple: int = 1) -> list[Group]:
    """The round's clients by bucket (their window count's power of two), smallest first, each
    bucket cut into groups (see group_size and the module docstring)."""
    by_bucket: dict[int, list[int]] = {}
    for k in sorted(clients.tolist(), key=lambda k: (cs.num_windows(k), k)):
        by_bucket.setdefault(bucket(cs.num_windows(k), min_windows), []).append(k)
    groups = []
    for n_pad, members in sorted(by_bucket.items()):
        size = group_size(n_pad, max_clients, group_windows, multiple)
        for i in range(0, len(members), size):
            chunk = members[i:i + size]  # a short last group shrinks to a power of two: padding clients cost compute
            groups.append(_group(cs, chunk, min(size, -(-bucket(len(chunk), 1) // multiple) * multiple), n_pad))
    return groups


def _group(cs: ClientSet, members: list[int], group_size: int, n_pad: int) -> Group:
    w = np.zeros((group_size, n_pad, cs.windows.shape[1]), np.int32)
    lengths = np.zeros((group_size, n_pad), np.int32)
    counts = np.zeros(group_size, np.int32)
    idx = np.full(group_size, -1, np.int64)
    for g, k in enumerate(members):
        lo, hi = cs.offsets[k], cs.offsets[k + 1]
        w[g, :hi - lo], lengths[g, :hi - lo], counts[g], idx[g] = cs.windows[lo:hi], cs.lengths[lo:hi], hi - lo, k
    return Group(idx, w, lengths, counts)
