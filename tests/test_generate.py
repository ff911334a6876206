"""Generation: KV-cache decoding equals recomputation, batching with left padding, bucketed
shapes, streaming, stop tokens, sampling filters (transformers' logits processors as reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from bigmodel_jax import generate as gen
from bigmodel_jax.generate import Sampling, generate, process_logits, sample_logits, stream
from bigmodel_jax.models.gpt import GPT
from tests.test_layers import VARIANTS, gpt_cfg

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return GPT(gpt_cfg(**VARIANTS[request.param], max_len=64), rngs=nnx.Rngs(0))


def recompute_greedy(model, prompt, n):
    """No cache, no padding: the whole sequence through the model for every new token (in a
    fixed 64-token buffer, so one compiled shape; causality hides the unwritten tail)."""
    forward = jax.jit(lambda x: model(x)[0][0])
    seq = np.zeros((1, 64), np.int32)
    seq[0, :len(prompt)] = prompt
    for t in range(len(prompt), len(prompt) + n):
        seq[0, t] = int(jnp.argmax(forward(jnp.asarray(seq))[t - 1]))
    return seq[0, len(prompt):len(prompt) + n].tolist()


def test_batched_kv_cache_greedy_equals_recomputation(model):
    out = generate(model, PROMPTS, 12, sampling=Sampling(greedy=True))
    assert out == [recompute_greedy(model, p, 12) for p in PROMPTS]
    # a bf16 cache (f32 model) keeps the greedy path on this model
    assert generate(model, PROMPTS, 12, sampling=Sampling(greedy=True), cache_dtype=jnp.bfloat16) == out


def test_the_cache_grows_with_the_tokens_and_decodes_the_same(model, monkeypatch):
    """A short prompt's cache starts small and doubles as decoding fills it (each step attends over
    the slots that exist, not the whole context); the tokens still equal recomputation."""
    sizes, grow = [], gen._grow

    def recording_grow(cache, *, size):
        sizes.append((gen._cache_slots(cache), size))
        return grow(cache, size=size)

    monkeypatch.setattr(gen, "_grow", recording_grow)
    prompts = [[1, 2, 3], [4]]
    out = generate(model, prompts, 40, sampling=Sampling(greedy=True))
    assert sizes == [(32, 64)]  # prompt block 16 + room for 16 new tokens, then the whole 64-slot context
    assert out == [recompute_greedy(model, p, 40) for p in prompts]
    assert [gen.slots(n, 1 << 20) for n in (1, 17, 33, 300, 2081)] == [16, 32, 48, 320, 2304]


def test_a_prefill_in_chunks_equals_a_whole_one(model, monkeypatch):
    """A budget of one attention score splits every prompt block into 16-token chunks: the cache
    and the first token equal those of a whole-prompt prefill, and greedy decoding still equals
    recomputation."""
    prompts = [list(range(1, 30)), [7, 8], list(range(20, 45))]  # a 32-token block: 2 chunks, left padding
    assert gen.prefill_chunk(3, 32, 4) == 32
    greedy = Sampling(greedy=True)
    graphdef, params = gen._split(model)
    tokens, mask = gen.left_pad(prompts, 32, 0)

    def prefill():
        return gen._prefill(graphdef, params, tokens, mask, jnp.zeros(3, bool), jnp.asarray(0, jnp.int32),
                            jax.random.PRNGKey(0), greedy.knobs, gen._stop_array(()), jnp.asarray(0, jnp.int32), None,
                            cache_len=64, size=48, cache_dtype=jnp.float32, program=greedy.program)

    whole = prefill()
    monkeypatch.setitem(gen.PREFILL_SCORES, jax.default_backend(), 1)
    jax.clear_caches()  # the chunk is chosen when _prefill is traced
    assert gen.prefill_chunk(3, 32, 4) == 16 and gen.prefill_chunk(1, 24, 4) == 24
    chunked = prefill()
    assert gen._cache_slots(chunked["cache"]) == 48
    np.testing.assert_array_equal(chunked["tokens"], whole["tokens"])
    real = np.zeros((3, 48), bool)
    real[:, :32] = mask  # a padding slot's entry depends on what its (ignored) query saw: not compared
    for a, b in zip(chunked["cache"], whole["cache"]):
        for got, want in ((a["k"].transpose(0, 3, 1, 2), b["k"].transpose(0, 3, 1, 2)),
                          (a["v"].transpose(0, 2, 1, 3), b["v"].transpose(0, 2, 1, 3))):  # [B, S, H, hd]
            np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5, rtol=2e-5)
            assert not np.asarray(got)[:, 32:].any()
    assert generate(model, prompts, 8, sampling=greedy) == [recompute_greedy(model, p, 8) for p in prompts]
    monkeypatch.undo()
    jax.clear_caches()


def test_a_batch_one_decode_step_copies_no_cache():
    """Batch 1 with grouped-query heads (size-1 dims) is the case where XLA:CPU used to copy the
    whole KV cache several times per layer per decoded token; the compiled loop has no such copy."""
    model = GPT(gpt_cfg(**VARIANTS["llama"], max_len=256), rngs=nnx.Rngs(0))
    greedy = Sampling(greedy=True)
    graphdef, params = gen._split(model)
    tokens, mask = gen.left_pad([[5, 6, 7]], 16, 0)
    key, stops, pad = jax.random.PRNGKey(0), gen._stop_array(()), jnp.asarray(0, jnp.int32)
    state = gen._prefill(graphdef, params, tokens, mask, jnp.zeros(1, bool), jnp.asarray(0, jnp.int32), key,
                         greedy.knobs, stops, pad, None, cache_len=256, size=160, cache_dtype=jnp.float32,
                         program=greedy.program)
    hlo = gen._decode.lower(graphdef, params, state, jnp.asarray(100, jnp.int32), key, greedy.knobs, stops, pad,
                            program=greedy.program).compile().as_text()
    cache_shapes = {str(tuple(x.shape)).replace(" ", "")[1:-1] for c in state["cache"] for x in c.values()}
    copies = [line for line in hlo.splitlines() if " copy(" in line and any(f"[{s}]" in line for s in cache_shapes)]
    assert len(cache_shapes) == 2 and not copies, copies[:4]


def test_cached_logits_equal_full_forward(model):
    """Prefill a left-padded batch, then decode step by step: each step's logits equal the full
    forward pass over that row's unpadded sequence."""
    prompts, steps = [[3, 1, 4], [6]], 4
    full = [p + [11, 12, 13, 14] for p in prompts]
    tokens, mask = gen.left_pad(prompts, 8, 0)
    mask_s = np.zeros((2, 16), bool)
    mask_s[:, :8] = mask
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    graphdef, params = nnx.split(model)

    @jax.jit
    def run(tokens, cache, index, positions, mask):
        return nnx.merge(graphdef, params)(tokens, cache=cache, cache_index=index, positions_bt=positions,
                                           mask_bs=mask)

    logits, cache = run(tokens, model.init_cache(2, 16), 0, pos, mask_s)
    got = [logits[:, -1]]
    for j in range(steps):
        mask_s[:, 8 + j] = True
        new = np.asarray([[f[len(p) + j]] for f, p in zip(full, prompts)])
        logits, cache = run(new, cache, 8 + j, pos[:, -1:] + 1 + j, mask_s)
        got.append(logits[:, -1])
    forward = jax.jit(lambda x: model(x)[0])
    for r, (p, f) in enumerate(zip(prompts, full)):
        ref = forward(jnp.asarray([f + [0] * (8 - len(f))]))[0]
        for j in range(steps + 1):
            np.testing.assert_allclose(np.asarray(got[j][r]), np.asarray(ref[len(p) - 1 + j]), atol=2e-5, rtol=2e-5)


def test_stream_equals_generate_and_seeds(model):
    s = Sampling(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3)
    whole = generate(model, PROMPTS, 20, sampling=s, seed=3)
    chunks = list(stream(model, PROMPTS, 20, sampling=s, seed=3, chunk=4))
    assert [len(c[0]) for c in chunks] == [1, 4, 4, 4, 4, 3]  # the prefill's token first, then chunks
    assert [sum((c[i] for c in chunks), []) for i in range(3)] == whole
    assert generate(model, PROMPTS, 20, sampling=s, seed=4) != whole
    assert all(len(r) == 20 and max(r) < 50 for r in whole)


def test_stop_tokens_end_rows():
    model = GPT(gpt_cfg(**VARIANTS["llama"], max_len=64), rngs=nnx.Rngs(0))
    free = generate(model, PROMPTS, 12, sampling=Sampling(greedy=True))
    stop = free[0][3]
    out = generate(model, PROMPTS, 12, sampling=Sampling(greedy=True), stop_tokens=[stop])
    for row, ref in zip(out, free):
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert row == ref[:cut]
    chunks = list(stream(model, PROMPTS, 12, sampling=Sampling(greedy=True), stop_tokens=[stop], chunk=2))
    assert chunks[-1][0] == []  # a stopped row yields nothing more


def test_bucketed_shapes_do_not_recompile():
    model = GPT(gpt_cfg(**VARIANTS["llama"], max_len=256), rngs=nnx.Rngs(1))
    greedy = Sampling(greedy=True)
    generate(model, [[1] * 20], 10, sampling=greedy)
    prefill, decode = gen._prefill._cache_size(), gen._decode._cache_size()
    for n_prompt, n_new in ((17, 5), (31, 12), (25, 1)):  # same buckets: prompt 32, cache 64
        generate(model, [[2] * n_prompt], n_new, sampling=greedy)
    assert (gen._prefill._cache_size(), gen._decode._cache_size()) == (prefill, decode)
    generate(model, [[2] * 40], 10, sampling=Sampling(greedy=True, temperature=0.5))  # new prompt bucket
    assert gen._prefill._cache_size() == prefill + 1
    assert [gen.bucket(n, 256) for n in (1, 16, 17, 100, 300)] == [16, 16, 32, 128, 256]


def windowed_greedy(model, prompt, n, first_room):
    """The documented rule past the context, by full recomputation: a row grows until its cache
    is full (first_room real slots the first time, the left padding taking the rest; max_len after
    that), then continues from its last max_len // 2 tokens, positions counted from 0 again."""
    max_len = model.cfg.max_len
    forward = jax.jit(lambda x: model(x)[0][0])  # one max_len buffer: causality hides the unwritten tail
    context = list(prompt)[-(max_len // 2):] if len(prompt) >= max_len else list(prompt)
    room, out = first_room, []
    while len(out) < n:
        buffer = np.zeros((1, max_len), np.int32)
        buffer[0, :len(context)] = context
        out.append(int(jnp.argmax(forward(jnp.asarray(buffer))[len(context) - 1])))
        context.append(out[-1])
        if len(context) == room:
            context, room = context[-(max_len // 2):], max_len
    return out


def test_generation_past_the_context_window():
    """Greedy generation of 40 tokens with a 16-token context, in a left-padded batch, equals the
    window rule computed without a cache; so does a prompt longer than the context."""
    model = GPT(gpt_cfg(max_len=16), rngs=nnx.Rngs(0))
    prompts = [[0, 1, 2], [5]]  # row 1 is left-padded by 2 slots of the 16-slot cache
    out = generate(model, prompts, 40, sampling=Sampling(greedy=True))
    assert out == [windowed_greedy(model, prompts[0], 40, 16), windowed_greedy(model, prompts[1], 40, 14)]
    long = list(range(30))  # longer than the context: it keeps its last max_len // 2 tokens
    assert generate(model, [long], 20, sampling=Sampling(greedy=True))[0] == windowed_greedy(model, long, 20, 16)
    sampled = generate(model, prompts, 40, sampling=Sampling(temperature=0.9, top_k=10))
    assert [len(r) for r in sampled] == [40, 40] and max(max(r) for r in sampled) < 50


def test_processors_match_transformers():
    """Repetition penalty, temperature, top-k and top-p as transformers' logits processors apply
    them (in generate's order) keep the same tokens with the same logits."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 40)).astype(np.float32) * 3
    ids = rng.integers(0, 40, (3, 6))
    seen = np.zeros((3, 40), bool)
    np.put_along_axis(seen, ids, True, 1)
    s = Sampling(temperature=0.7, top_k=12, top_p=0.8, repetition_penalty=1.4)
    ours = np.asarray(process_logits(jnp.asarray(logits), jnp.asarray(seen), s.program, s.knobs))
    t = torch.tensor(logits)
    for proc in (RepetitionPenaltyLogitsProcessor(1.4), TemperatureLogitsWarper(0.7), TopKLogitsWarper(12),
                 TopPLogitsWarper(0.8)):
        t = proc(torch.tensor(ids), t)
    ref = t.numpy()
    kept = np.isfinite(ref)
    np.testing.assert_array_equal(ours > gen.NEG / 2, kept)
    np.testing.assert_allclose(ours[kept], ref[kept], rtol=1e-5)


def test_sampling_frequencies_and_bad_values():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.PRNGKey(0), 400)

    def draw(**kw):
        one = lambda k: sample_logits(logits, k, Sampling(**kw))[0]  # noqa: E731
        return np.asarray(jax.jit(jax.vmap(one))(keys))

    assert set(draw(top_k=2)) == {0, 1}
    assert set(draw(top_p=0.7)) == {0, 1}  # 0.5 < 0.7 needs the second token, not the third
    assert set(draw(top_p=0.4)) == {0}
    all_tokens = draw()
    assert set(all_tokens) == {0, 1, 2, 3} and abs((all_tokens == 0).mean() - 0.5) < 0.08
    assert int(sample_logits(logits, keys[0], Sampling(greedy=True))[0]) == 0
    for bad, match in ((dict(temperature=0.0), "temperature"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
                       (dict(repetition_penalty=0.0), "repetition_penalty")):
        with pytest.raises(ValueError, match=match):
            Sampling(**bad)
    model = GPT(gpt_cfg(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], 3)
    with pytest.raises(ValueError, match="context"):
        gen.beam_search(model, [[1] * 20], 10)
