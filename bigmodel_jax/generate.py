"""Autoregressive generation with a KV cache under jit: prefill the prompt, then one token per step.

The decode loop is a `lax.scan` inside one jitted call. When prompt + new tokens exceed the
model's context, generation continues in windows: the cache is rebuilt from the last
max_len // 2 tokens (nanoGPT crops its context the same way, without a cache).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx


def sample_logits(logits_bv: jax.Array, key: jax.Array, *, greedy: bool, temperature: float,
                  top_k: int, top_p: float) -> jax.Array:
    """One token id per row. top_k=0 and top_p=1.0 disable those filters."""
    if greedy:
        return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    logits = logits_bv.astype(jnp.float32) / max(temperature, 1e-6)
    neg = jnp.finfo(jnp.float32).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        keep_sorted = (cum - jax.nn.softmax(sorted_logits, axis=-1)) < top_p
        cutoff = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("graphdef", "num_new", "cache_len", "greedy", "temperature", "top_k", "top_p"))
def _generate_window(graphdef, params, prompt_bt, key, *, num_new: int, cache_len: int, greedy: bool,
                     temperature: float, top_k: int, top_p: float):
    model = nnx.merge(graphdef, params)
    b, t = prompt_bt.shape
    cache = model.init_cache(b, cache_len)
    logits, cache = model(prompt_bt, cache=cache, cache_index=jnp.asarray(0, jnp.int32))
    opts = dict(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
    first = sample_logits(logits[:, -1], jax.random.fold_in(key, 0), **opts)

    def step(carry, i):
        token, cache = carry
        logits, cache = model(token[:, None], cache=cache, cache_index=t + i)
        nxt = sample_logits(logits[:, -1], jax.random.fold_in(key, i + 1), **opts)
        return (nxt, cache), token

    (last, _), tokens = jax.lax.scan(step, (first, cache), jnp.arange(num_new - 1, dtype=jnp.int32))
    return jnp.concatenate([tokens.T, last[:, None]], axis=1)  # [B, num_new]


def generate(model: nnx.Module, prompt_bt: jax.Array, max_new_tokens: int, key: jax.Array, *,
             greedy: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Returns prompt + generated ids, [B, T + max_new_tokens]. All prompts have the same length."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    max_len = model.cfg.max_len
    tokens = jnp.asarray(prompt_bt, jnp.int32)
    if tokens.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    opts = dict(greedy=greedy, temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
    remaining, window = max_new_tokens, 0
    while remaining > 0:
        context = tokens[:, -(max_len // 2):] if tokens.shape[1] >= max_len else tokens
        num_new = min(remaining, max_len - context.shape[1])
        new = _generate_window(graphdef, params, context, jax.random.fold_in(key, window),
                               num_new=num_new, cache_len=context.shape[1] + num_new, **opts)
        tokens = jnp.concatenate([tokens, new], axis=1)
        remaining, window = remaining - num_new, window + 1
    return tokens
