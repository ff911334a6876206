"""T5's span-corruption objective (Raffel et al. 2020, §3.1.4): about 15% of a window's tokens, in
spans of mean length 3, are cut out of the input; each span leaves one sentinel behind, and the
target lists the spans, each behind its sentinel:

    tokens:  Thank you for inviting me to your party last week .
    source:  Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target:  <extra_id_0> for inviting <extra_id_1> last </s>

The noise mask is drawn as T5's `random_spans_noise_mask`: the counts of noise tokens and spans
are fixed by the window length, both kinds of token are cut into that many non-empty segments at
random, and the window starts with a non-noise segment.
"""

from __future__ import annotations

import numpy as np

SENTINELS = tuple(f"<extra_id_{i}>" for i in range(100))  # T5's names; our vocabulary puts them at ids 3..102


def _segments(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a random split of num_items into num_segments non-empty segments."""
    starts = np.zeros(num_items, bool)
    starts[rng.permutation(num_items - 1)[:num_segments - 1] + 1] = True
    return np.diff(np.flatnonzero(np.r_[True, starts[1:], True]))


def counts(length: int, density: float = 0.15, mean_span: float = 3.0) -> tuple[int, int]:
    """(noise tokens, noise spans) of a window of `length` tokens."""
    noise = min(max(int(round(length * density)), 1), length - 1)
    return noise, max(int(round(noise / mean_span)), 1)


def noise_mask(length: int, rng: np.random.Generator, density: float = 0.15, mean_span: float = 3.0) -> np.ndarray:
    """[length] bool, True on the tokens to cut out."""
    noise, spans = counts(length, density, mean_span)
    kept, cut = _segments(length - noise, spans, rng), _segments(noise, spans, rng)
    mask = np.zeros(length, bool)
    position = 0
    for keep_len, cut_len in zip(kept, cut):
        position += keep_len
        mask[position:position + cut_len] = True
        position += cut_len
    return mask


def corrupt(ids: np.ndarray, sentinel_ids: list[int], eos: int, rng: np.random.Generator,
            density: float = 0.15, mean_span: float = 3.0) -> tuple[list[int], list[int]]:
    """(source, target) token lists of one window, each ended by eos."""
    mask = noise_mask(len(ids), rng, density, mean_span)
    starts = mask & ~np.r_[False, mask[:-1]]
    span = np.cumsum(starts) - 1  # each noise token's span number
    source, target = [], []
    for i, token in enumerate(ids.tolist()):
        if not mask[i]:
            source.append(token)
            continue
        if starts[i]:
            source.append(sentinel_ids[span[i]])
            target.append(sentinel_ids[span[i]])
        target.append(token)
    return source + [eos], target + [eos]


def window_length(source_len: int, target_len: int, density: float = 0.15, mean_span: float = 3.0) -> int:
    """The longest window whose corrupted source and target fit source_len and target_len."""
    length = 2 * source_len
    while length > 2:
        noise, spans = counts(length, density, mean_span)
        if length - noise + spans + 1 <= source_len and noise + spans + 1 <= target_len:
            return length
        length -= 1
    raise ValueError(f"source_len={source_len} and target_len={target_len} fit no span-corruption window")
