"""Batched autoregressive generation under jit: one prefill, then a decode loop over a preallocated
KV cache; and beam search.

Prompts of different lengths are left-padded into one [B, P] block. Each row counts its positions
from its own first real token, and a key mask hides the padding: transformers' `generate` does the
same with an attention mask, so batched results equal one-prompt-at-a-time results.

Compiled shapes are bucketed, so a new prompt length does not recompile: P is the prompt length
rounded up to a power of two (at least 16), and a row may hold S = the power of two covering P + the
new tokens, at most the model's context. The KV cache itself grows: it starts with room for P plus
min(new tokens, P) (rounded up to a sixteenth of a power of two), and doubles, up to S, when
decoding fills it; each decode step attends over the cache as it is, so a step's cost follows the
tokens written, not the longest generation the context allows. Sampling knobs that are plain
numbers (temperature, top-p mass, repetition penalty, stop ids) are traced arguments; only
switching a filter on or off, or top-k's k, compiles another program.

The decode loop is a `lax.while_loop` that stops once every row has emitted a stop token. It runs
in chunks of steps (`stream`), so a caller can print tokens as they come; random draws are keyed by
the token's index, so chunking never changes a sample. When a row needs more tokens than the
context holds, generation continues in windows: the cache is rebuilt from the last max_len // 2
tokens (nanoGPT crops its context the same way, without a cache).

An encoder-decoder generates the same way from its decoder's start token: `source` (the encoder's
token lists, right-padded here into one block, or a ready (features, mask) pair for an audio
encoder) is encoded once in the prefill, and each decoder layer's cross-attention keys and values
ride in the cache beside its self-attention KV cache.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Source = Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray] | None  # stream's and beam_search's `source`
NEG = -1.0e9  # "impossible" beam score, as in transformers' beam search


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. greedy ignores temperature, top-k and top-p; the repetition
    penalty (CTRL, Keskar et al. 2019, as transformers applies it) divides the positive logits and
    multiplies the negative ones of every token already in the row (prompt included)."""
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off

    def __post_init__(self):
        if not self.greedy and self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (use greedy=True for argmax decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty}: must be > 0 (1.0 = off)")

    @property
    def program(self) -> tuple[bool, int, bool, bool]:
        """The static part (what the compiled step does): greedy, k, top-p on, penalty on."""
        return self.greedy, self.top_k, self.top_p < 1.0, self.repetition_penalty != 1.0

    @property
    def knobs(self) -> jax.Array:
        """The traced part: [temperature, top_p, repetition_penalty]."""
        return jnp.asarray([self.temperature, self.top_p, self.repetition_penalty], jnp.float32)


def process_logits(logits_bv: jax.Array, seen_bv: jax.Array | None, program: tuple, knobs: jax.Array) -> jax.Array:
    """transformers' order: repetition penalty, temperature, top-k, top-p. Filtered tokens get NEG."""
    greedy, top_k, use_top_p, use_penalty = program
    logits = logits_bv.astype(jnp.float32)
    if use_penalty:
        p = knobs[2]
        logits = jnp.where(seen_bv, jnp.where(logits > 0, logits / p, logits * p), logits)
    if greedy:
        return logits
    logits = logits / knobs[0]
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, NEG, logits)
    if use_top_p:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < knobs[1]
        cutoff = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, NEG, logits)
    return logits


def sample_logits(logits_bv: jax.Array, key: jax.Array, sampling: Sampling,
                  seen_bv: jax.Array | None = None) -> jax.Array:
    """One token id per row."""
    return _choose(logits_bv, key, seen_bv, sampling.program, sampling.knobs)


def _choose(logits_bv, key, seen_bv, program, knobs):
    logits = process_logits(logits_bv, seen_bv, program, knobs)
    if program[0]:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------- shapes
def bucket(n: int, cap: int) -> int:
    """The compiled length for n: the next power of two, at least 16, at most cap."""
    return min(cap, max(16, 1 << (max(n, 1) - 1).bit_length()))


def _shapes(longest: int, max_new: int, max_len: int) -> tuple[int, int]:
    """(prompt block, cache length). Padding the prompt to its bucket must not eat context the
    new tokens need: then the block shrinks towards the prompt's own length."""
    plen = min(bucket(longest, max_len), max(longest, max_len - max_new))
    return plen, bucket(plen + max_new, max_len)


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, length], mask [B, length]): each prompt right-aligned, pads on the left."""
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for i, p in enumerate(prompts):
        if len(p):
            tokens[i, length - len(p):] = p
            mask[i, length - len(p):] = True
    return tokens, mask


def _as_prompts(prompts) -> list[list[int]]:
    if isinstance(prompts, (np.ndarray, jax.Array)):
        prompts = np.asarray(prompts).tolist()
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts:
        raise ValueError("no prompts given")
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise ValueError(f"prompt(s) {empty} are empty: give each prompt at least one token")
    return prompts


def source_block(source: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, S], mask [B, S]) of an encoder-decoder's source token lists, right-padded to a
    power of two (at least 16) so a new source length rarely recompiles."""
    source = _as_prompts(source)
    length = bucket(max(map(len, source)), 1 << 30)
    tokens = np.full((len(source), length), pad_id, np.int32)
    mask = np.zeros((len(source), length), bool)
    for i, row in enumerate(source):
        tokens[i, :len(row)], mask[i, :len(row)] = row, True
    return tokens, mask


def slots(n: int, cap: int) -> int:
    """The KV cache length that holds n tokens: n rounded up to a sixteenth of its power of two (at
    least 16), at most cap. A 2,048-token prompt plus 33 new tokens gets 2,304 slots, not 4,096."""
    step = max(16, (1 << (max(n, 1) - 1).bit_length()) // 16)
    return min(cap, -(-n // step) * step)


def _cache_slots(cache: list) -> int:
    return cache[0]["v"].shape[2]


@partial(jax.jit, static_argnames=("size",))
def _grow(cache: list, *, size: int) -> list:
    """The cache with empty slots appended up to `size` (keys are [B, H, D, S], values [B, H, S, D])."""
    def pad(x, axis):
        return jnp.pad(x, [(0, size - x.shape[axis]) if i == axis else (0, 0) for i in range(x.ndim)])
    return [{**c, "k": pad(c["k"], 3), "v": pad(c["v"], 2)} for c in cache]


def _fresh_cache(model: nnx.Module, batch: int, cache_len: int, dtype: Any, source) -> list:
    """An empty KV cache; for an encoder-decoder (source = (tokens, mask)), the source encoded once
    into each layer's cross-attention keys/values too."""
    if source is None:
        return model.init_cache(batch, cache_len, dtype)
    return model.init_cache(batch, cache_len, dtype, source=source)


def _stop_array(stop_tokens: Sequence[int]) -> jax.Array:
    """Stop ids padded with -1 to a multiple of 4, so a new stop set rarely recompiles."""
    ids = list(stop_tokens)
    return jnp.asarray(ids + [-1] * (-len(ids) % 4 or (4 if not ids else 0)), jnp.int32)


# ----------------------------------------------------------------------------- prefill and decode
# The most attention scores (batch x heads x chunk x prompt) one chunk of a prefill may hold, per
# platform. On XLA:CPU a whole 16 x 512 prompt's scores (150 MB a layer for SmolLM2) stream through
# memory several times in the softmax; chunks whose scores stay under 32 MB prefill SmolLM2 1.25x
# faster at 16 x 512 and 1.3-1.4x at 1 x 2,048, and leave 1 x 512 (already under) whole
# (docs/speed.md). Accelerators are not measured: they prefill whole.
PREFILL_SCORES = {"cpu": 1 << 23}


def prefill_chunk(batch: int, prompt: int, heads: int) -> int:
    """Tokens per prefill chunk for a [batch, prompt] block: the prompt halved (at least 16 tokens,
    always dividing it) until a chunk's scores fit PREFILL_SCORES."""
    budget = PREFILL_SCORES.get(jax.default_backend())
    chunk = prompt
    while budget and chunk >= 32 and chunk % 2 == 0 and batch * heads * chunk * prompt > budget:
        chunk //= 2
    return chunk


def _positions(mask_bt: jax.Array) -> jax.Array:
    """Each row's positions counted from its first real token (pads: 0, as they are masked)."""
    return jnp.maximum(jnp.cumsum(mask_bt, axis=1) - 1, 0).astype(jnp.int32)


@partial(jax.jit, static_argnames=("graphdef", "cache_len", "size", "cache_dtype", "program"))
def _prefill(graphdef, params, tokens_bp, mask_bp, done_b, count, key, knobs, stops, pad_id, source, *,
             cache_len: int, size: int, cache_dtype: Any, program: tuple):
    """Runs the prompt block through the model into a fresh cache of `size` slots and samples one
    token per row; the token and mask rows hold cache_len (the most the cache may grow to)."""
    model = _merge(graphdef, params)
    b, p = tokens_bp.shape
    tokens = jnp.zeros((b, cache_len), jnp.int32).at[:, :p].set(tokens_bp)
    mask = jnp.zeros((b, cache_len), bool).at[:, :p].set(mask_bp)
    positions = _positions(mask_bp)
    chunk = prefill_chunk(b, p, model.cfg.num_heads) if source is None else p
    if chunk == p:
        x, cache = model.hidden(tokens_bp, cache=_fresh_cache(model, b, size, cache_dtype, source), prefill=True,
                                positions_bt=positions, mask_bs=mask)
    else:  # chunks of the prompt attend over a cache of exactly p slots, which then grows to `size`
        def one_chunk(i, carry):
            part = partial(jax.lax.dynamic_slice_in_dim, start_index=i * chunk, slice_size=chunk, axis=1)
            return model.hidden(part(tokens_bp), cache=carry[1], cache_index=i * chunk, positions_bt=part(positions),
                                mask_bs=mask)
        x, cache = jax.lax.fori_loop(0, p // chunk, one_chunk, (jnp.zeros((b, chunk, model.cfg.width), jnp.float32),
                                                                  _fresh_cache(model, b, p, cache_dtype, None)))
        cache = _grow(cache, size=size)
    seen = None
    if program[3]:
        vocab = model.cfg.vocab_size
        seen = jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], jnp.where(mask_bp, tokens_bp, vocab)].set(
            True, mode="drop")
    nxt = _choose(model.logits(x[:, -1:])[:, 0], jax.random.fold_in(key, count), seen, program, knobs)
    nxt = jnp.where(done_b, pad_id, nxt)
    state = dict(tokens=tokens.at[:, p].set(nxt), mask=mask, pos=positions[:, -1] + 1, cache=cache,
                 index=jnp.asarray(p, jnp.int32), count=count + 1, done=done_b | jnp.isin(nxt, stops))
    if seen is not None:
        state["seen"] = seen.at[jnp.arange(b), nxt].set(True)
    return state


@partial(jax.jit, static_argnames=("graphdef", "program"), donate_argnames=("state",))
def _decode(graphdef, params, state, limit, key, knobs, stops, pad_id, *, program: tuple):
    """Feeds the newest token of each row and samples the next, until `limit` tokens exist in
    total, every row is done, or the cache is full (stream then grows it or starts a window)."""
    model = _merge(graphdef, params)
    b, size = state["tokens"].shape[0], _cache_slots(state["cache"])

    def cond(s):
        return (s["count"] < limit) & ~jnp.all(s["done"]) & (s["index"] + 1 < size)

    def body(s):
        i = s["index"]
        token_b1 = jax.lax.dynamic_slice_in_dim(s["tokens"], i, 1, axis=1)
        mask = jax.lax.dynamic_update_slice_in_dim(s["mask"], jnp.ones((b, 1), bool), i, axis=1)
        x, cache = model.hidden(token_b1, cache=s["cache"], cache_index=i, positions_bt=s["pos"][:, None],
                                mask_bs=mask)
        nxt = _choose(model.logits(x)[:, 0], jax.random.fold_in(key, s["count"]), s.get("seen"), program, knobs)
        nxt = jnp.where(s["done"], pad_id, nxt)
        out = dict(s, mask=mask, cache=cache, pos=s["pos"] + 1, index=i + 1, count=s["count"] + 1,
                   tokens=jax.lax.dynamic_update_slice_in_dim(s["tokens"], nxt[:, None], i + 1, axis=1),
                   done=s["done"] | jnp.isin(nxt, stops))
        if "seen" in s:
            out["seen"] = s["seen"].at[jnp.arange(b), nxt].set(True)
        return out

    return jax.lax.while_loop(cond, body, state)


def _merge(graphdef, params) -> nnx.Module:
    """The model inside a jitted function, its float weights cast once to the compute dtype: a
    bf16 model then reads half the bytes per decoded token (the matmuls cast them anyway)."""
    model = nnx.merge(graphdef, params)
    if model.dtype == jnp.float32:
        return model
    return nnx.merge(graphdef, jax.tree.map(
        lambda p: p.astype(model.dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params))


def _split(model: nnx.Module):
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


def stream(model: nnx.Module, prompts, max_new_tokens: int, *, sampling: Sampling = Sampling(), seed: int = 0,
           stop_tokens: Sequence[int] = (), pad_id: int = 0, cache_dtype: Any = None,
           chunk: int | None = 16, source: Source = None) -> Iterator[list[list[int]]]:
    """Yields, every `chunk` decode steps, each row's new tokens since the last yield (a row's list
    is empty once it has stopped). chunk=None decodes everything in one call.

    prompts: token-id lists of any lengths (or a [B, T] array). A row stops after emitting any of
    stop_tokens (the stop token is yielded). cache_dtype: the KV cache's dtype (default: the
    model's compute dtype; jnp.bfloat16 halves the cache's memory and bandwidth). source: an
    encoder-decoder's input token lists, one per prompt (the prompts then start its decoder), or
    (features [B, T, M], mask [B, T]) arrays for an audio encoder (Whisper)."""
    prompts = _as_prompts(prompts)
    source = _source(source, len(prompts), pad_id)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    graphdef, params = _split(model)
    max_len = model.cfg.max_len
    longest = max(map(len, prompts))
    if longest >= max_len:  # keep the last max_len // 2 tokens, as windows do below
        prompts = [p[-(max_len // 2):] for p in prompts]
        longest = max(map(len, prompts))
    plen, cache_len = _shapes(longest, max_new_tokens, max_len)
    tokens, mask = left_pad(prompts, plen, pad_id)
    key, knobs, stops, program = jax.random.PRNGKey(seed), sampling.knobs, _stop_array(stop_tokens), sampling.program
    pad = jnp.asarray(pad_id, jnp.int32)
    cache_dtype = cache_dtype or model.dtype
    size = slots(plen + min(max_new_tokens, plen), cache_len)
    state = _prefill(graphdef, params, tokens, mask, jnp.zeros(len(prompts), bool), jnp.asarray(0, jnp.int32), key,
                     knobs, stops, pad, source, cache_len=cache_len, size=size, cache_dtype=cache_dtype,
                     program=program)
    shown, stopped, stops_set = plen - 1, [False] * len(prompts), set(stop_tokens)
    step = max_new_tokens if chunk is None else chunk
    while True:  # the first yield is the prefill's token alone: time to first token
        index, count = int(state["index"]), int(state["count"])
        new_bn = np.asarray(state["tokens"][:, shown + 1: index + 1])
        shown = index
        rows = []
        for i, row in enumerate(new_bn.tolist()):
            cut = 0 if stopped[i] else next((j + 1 for j, t in enumerate(row) if t in stops_set), None)
            stopped[i] = cut is not None
            rows.append(row[:cut])
        yield rows
        if count >= max_new_tokens or all(stopped):
            return
        if index + 1 >= cache_len:  # the context is full: continue from the last max_len // 2 tokens
            window = max_len // 2
            tokens_w = state["tokens"][:, index + 1 - window: index + 1]
            mask_w = state["mask"].at[:, index].set(True)[:, index + 1 - window: index + 1]
            size = slots(window + min(max_new_tokens - count, window), cache_len)
            state = _prefill(graphdef, params, tokens_w, mask_w, state["done"], state["count"], key, knobs, stops,
                             pad, source, cache_len=cache_len, size=size, cache_dtype=cache_dtype, program=program)
            shown = window - 1
        else:
            size = _cache_slots(state["cache"])
            if index + 1 >= size:  # the cache is full, the context is not
                state["cache"] = _grow(state["cache"], size=min(cache_len, 2 * size))
            state = _decode(graphdef, params, state, jnp.asarray(min(count + step, max_new_tokens), jnp.int32),
                            key, knobs, stops, pad, program=program)


def _source(source, rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Token lists right-padded into a block; a ready (inputs, mask) pair of arrays (an audio
    encoder's features [B, T, M] and frame mask [B, T]) as it is."""
    if source is None:
        return None
    if isinstance(source, tuple) and len(source) == 2 and all(isinstance(a, (np.ndarray, jax.Array)) for a in source):
        tokens, mask = np.asarray(source[0]), np.asarray(source[1], bool)
    else:
        tokens, mask = source_block(source, pad_id)
    if len(tokens) != rows:
        raise ValueError(f"{len(tokens)} sources for {rows} prompts: give one source per prompt")
    return tokens, mask


def generate(model: nnx.Module, prompts, max_new_tokens: int, **kw) -> list[list[int]]:
    """Each row's new tokens (up to and including its stop token). Keywords as `stream`; one
    decode call unless the context fills up."""
    out = None
    for rows in stream(model, prompts, max_new_tokens, **{"chunk": None, **kw}):
        out = rows if out is None else [a + r for a, r in zip(out, rows)]
    return out


# ----------------------------------------------------------------------------- beam search
@partial(jax.jit, static_argnames=("graphdef", "num_beams", "max_new", "cache_len", "cache_dtype", "early_stopping"))
def _beam_search(graphdef, params, tokens_bp, mask_bp, stops, length_penalty, source, *, num_beams: int, max_new: int,
                 cache_len: int, cache_dtype: Any, early_stopping: bool | str):
    """transformers' vectorized beam search (GenerationMixin._beam_search), step for step: keep the
    best num_beams running hypotheses; a candidate that emits a stop token (or reaches max_new)
    joins the finished pool with score sum(log p) / new_len ** length_penalty; stop when no running
    beam can beat the worst finished one (transformers' heuristic for early_stopping)."""
    model = _merge(graphdef, params)
    b, p = tokens_bp.shape
    k, n_max = num_beams, max_new
    keep = max(2, 1 + stops.shape[0]) * k  # enough candidates that k stay running after stops
    mask = jnp.zeros((b, cache_len), bool).at[:, :p].set(mask_bp)
    positions = _positions(mask_bp)
    x, cache = model.hidden(tokens_bp, cache=_fresh_cache(model, b, cache_len, cache_dtype, source), prefill=True,
                            positions_bt=positions, mask_bs=mask)
    beams = lambda a: jnp.repeat(a, k, axis=0)  # noqa: E731  [B, ...] -> [B*K, ...], beams of a row together
    state = dict(
        logits=beams(model.logits(x[:, -1:])[:, 0]), cache=jax.tree.map(beams, cache), mask=beams(mask),
        pos=beams(positions[:, -1] + 1), n=jnp.asarray(0, jnp.int32),
        running=jnp.zeros((b, k, n_max), jnp.int32),
        running_scores=jnp.tile(jnp.asarray([0.0] + [NEG] * (k - 1)), (b, 1)),
        finished=jnp.zeros((b, k, n_max), jnp.int32), scores=jnp.full((b, k), NEG),
        lengths=jnp.zeros((b, k), jnp.int32),
        is_finished=jnp.zeros((b, k), bool), improvable=jnp.ones((b, 1), bool), go=jnp.asarray(True))
    top_k_mask = jnp.arange(keep) < k
    row = jnp.arange(b)[:, None]

    def body(s):
        n = s["n"]
        log_probs = jax.nn.log_softmax(s["logits"], axis=-1).reshape(b, k, -1)
        vocab = log_probs.shape[-1]
        acc = (log_probs + s["running_scores"][:, :, None]).reshape(b, k * vocab)
        top_lp, top_idx = jax.lax.top_k(acc, keep)  # [B, keep]
        src, tok = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        cand = s["running"][row, src].at[:, :, n].set(tok)  # [B, keep, N]
        hits = jnp.isin(tok, stops) | (n + 1 >= n_max)
        # the best k candidates that did not stop keep running
        run_lp = top_lp + hits * NEG
        nxt = jax.lax.top_k(run_lp, k)[1]
        running, running_scores, parent = cand[row, nxt], run_lp[row, nxt], src[row, nxt]
        # candidates among the top k that stopped may enter the finished pool
        just = hits & top_k_mask[None]
        fin_lp = top_lp / ((n + 1).astype(jnp.float32) ** length_penalty)
        if early_stopping is True:
            fin_lp = fin_lp + (jnp.all(s["is_finished"], -1, keepdims=True) * NEG)
        fin_lp = fin_lp + (~s["improvable"]) * NEG + (~just) * NEG
        merged = jnp.concatenate([s["scores"], fin_lp], 1)
        best = jax.lax.top_k(merged, k)[1]
        finished = jnp.concatenate([s["finished"], cand], 1)[row, best]
        scores = merged[row, best]
        lengths = jnp.concatenate([s["lengths"], jnp.full((b, keep), n + 1)], 1)[row, best]
        is_finished = jnp.concatenate([s["is_finished"], just], 1)[row, best]
        # transformers' early-stop heuristic, with the new length
        n1 = n + 1
        best_len = jnp.where(length_penalty > 0, n_max, n1) if early_stopping == "never" else n1
        best_running = running_scores[:, :1] / best_len.astype(jnp.float32) ** length_penalty
        worst = jnp.where(is_finished, jnp.min(scores, 1, keepdims=True), NEG)
        improvable = s["improvable"] & jnp.any(best_running > worst, -1, keepdims=True)
        go = jnp.any(improvable) & ~jnp.all(hits)
        if early_stopping is True:
            go = go & ~jnp.all(is_finished)
        # reorder the cache to the surviving beams' parents, then feed their new tokens
        flat_parent = (parent + row * k).reshape(-1)
        cache = jax.tree.map(lambda c: c[flat_parent], s["cache"])
        slot = p + n
        mask_bk = jax.lax.dynamic_update_slice_in_dim(s["mask"], jnp.ones((b * k, 1), bool), slot, axis=1)
        tokens_bk1 = running[:, :, n].reshape(b * k, 1)
        x, cache = model.hidden(tokens_bk1, cache=cache, cache_index=slot, positions_bt=s["pos"][:, None],
                                mask_bs=mask_bk)
        return dict(logits=model.logits(x)[:, 0], cache=cache, mask=mask_bk, pos=s["pos"] + 1, n=n1,
                    running=running, running_scores=running_scores, finished=finished, scores=scores,
                    lengths=lengths, is_finished=is_finished, improvable=improvable, go=go)

    s = jax.lax.while_loop(lambda s: s["go"] & (s["n"] < n_max), body, state)
    return s["finished"], s["scores"], s["lengths"]


def beam_search(model: nnx.Module, prompts, max_new_tokens: int, *, num_beams: int = 4, length_penalty: float = 1.0,
                early_stopping: bool | str = False, stop_tokens: Sequence[int] = (), pad_id: int = 0,
                cache_dtype: Any = None, source: Source = None
                ) -> tuple[list[list[int]], list[float]]:
    """(each prompt's best hypothesis: new tokens, stop token included; its score).

    The score is sum(log p(new tokens)) / len ** length_penalty: length_penalty > 0 favours longer
    hypotheses, < 0 shorter ones. early_stopping: False (transformers' default heuristic), True
    (stop once num_beams hypotheses are finished) or "never" (the canonical beam search). The
    prompt plus max_new_tokens must fit the context. source: as `stream`'s."""
    prompts = _as_prompts(prompts)
    source = _source(source, len(prompts), pad_id)
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"num_beams={num_beams}, max_new_tokens={max_new_tokens}: both must be >= 1")
    if early_stopping not in (False, True, "never"):
        raise ValueError(f"early_stopping={early_stopping!r}: one of False, True, 'never'")
    max_len = model.cfg.max_len
    longest = max(map(len, prompts))
    if longest + max_new_tokens > max_len:
        raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's "
                         f"context ({max_len}); shorten one (beam search does not slide its window)")
    plen, _ = _shapes(longest, max_new_tokens, max_len)
    cache_len = slots(plen + max_new_tokens, max_len)  # beam search's cache does not grow
    tokens, mask = left_pad(prompts, plen, pad_id)
    graphdef, params = _split(model)
    finished, scores, lengths = _beam_search(
        graphdef, params, tokens, mask, jnp.asarray(list(stop_tokens), jnp.int32).reshape(-1),
        jnp.asarray(length_penalty, jnp.float32), source, num_beams=num_beams, max_new=max_new_tokens,
        cache_len=cache_len, cache_dtype=cache_dtype or model.dtype, early_stopping=early_stopping)
    finished, scores, lengths = jax.device_get((finished, scores, lengths))
    return ([row[0, :n].tolist() for row, n in zip(finished, lengths[:, 0])], [float(s) for s in scores[:, 0]])
