"""Decode roofline on this CPU: the memory bandwidth of a plain read, f32 vs bf16 vs int8 matrix-vector
products, and a batch-1 SmolLM2 decode step in bytes of weights per second.

    python benchmarks/decode_roofline.py
"""
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best(f, *a, r=7):
    jax.block_until_ready(f(*a))
    ts = []
    for _ in range(r):
        t = time.perf_counter()
        jax.block_until_ready(f(*a))
        ts.append(time.perf_counter() - t)
    return min(ts)


x = jnp.ones((135_000_000,), jnp.float32)
t = best(jax.jit(jnp.sum), x); print(f"read 540 MB f32 (jnp.sum): {t*1000:.1f} ms -> {0.54/t:.1f} GB/s")
w32 = jnp.ones((4096, 16384), jnp.float32); w16 = w32.astype(jnp.bfloat16); v = jnp.ones((1, 4096), jnp.float32)
mv = jax.jit(lambda v, w: jax.lax.dot_general(v.astype(w.dtype), w, (((1,), (0,)), ((), ())),
                                              preferred_element_type=jnp.float32))
t32 = best(mv, v, w32); t16 = best(mv, v, w16)
print(f"matvec 1x4096 @ 4096x16384: f32 {t32*1000:.1f} ms ({0.268/t32:.1f} GB/s of weights), "
      f"bf16 {t16*1000:.1f} ms ({0.134/t16:.1f} GB/s)")
v16 = jnp.ones((16, 4096), jnp.float32)
print(f"same at batch 16: f32 {best(mv, v16, w32)*1000:.1f} ms, bf16 {best(mv, v16, w16)*1000:.1f} ms")
# Weight-only int8 (per-column scales): dequantize then an f32 dot, or an int8 x int8 -> int32 dot.
w8 = jnp.clip(jnp.round(w32 * 40), -127, 127).astype(jnp.int8)
s8 = jnp.full((16384,), 1 / 40, jnp.float32)
deq = jax.jit(lambda v, w, s: (v @ w.astype(jnp.float32)) * s)
i8 = jax.jit(lambda v, w, s: jax.lax.dot_general(v.astype(jnp.int8), w, (((1,), (0,)), ((), ())),
                                                 preferred_element_type=jnp.int32).astype(jnp.float32) * s)
for b, vb in ((1, v), (16, v16)):
    print(f"int8 weights, batch {b}: dequantize + f32 dot {best(deq, vb, w8, s8)*1000:.1f} ms, "
          f"int8 x int8 -> int32 dot {best(i8, vb, w8, s8)*1000:.1f} ms (f32: {best(mv, vb, w32)*1000:.1f} ms)")
from bigmodel_jax.gguf_import import load_smollm2  # noqa: E402
from bigmodel_jax.generate import generate, Sampling  # noqa: E402
m, tok = load_smollm2("float32")
g = Sampling(greedy=True); pr = [[1] * 20]
t1 = best(lambda: generate(m, pr, 1, sampling=g), r=3); t2 = best(lambda: generate(m, pr, 65, sampling=g), r=3)
step = (t2 - t1) / 64
print(f"SmolLM2 f32 decode step, batch 1: {step*1000:.1f} ms -> {0.538/step:.1f} GB/s of weights "
      "(134.5 M params x 4 B)")
