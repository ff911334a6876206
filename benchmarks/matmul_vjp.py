"""What the one matmul's custom VJP buys (models/layers.py): the trainer's GPT step with it
against the same step with autodiff's own backward of the same dot (bf16 in, f32 accumulation),
alternating runs in one process.

    python benchmarks/matmul_vjp.py [--sizes char,d512] [--dtypes bfloat16,float32] [--repeats 3] [--steps 5]

The plain variant differs only in the backward: autodiff hands each dot an f32 cotangent, so XLA
runs the backward dots on upcast weights, and it picks the dW layout itself. Prints step tokens/s
of each and the ratio (the fastest step of --repeats alternating windows of --steps steps).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import alternate  # noqa: E402
from benchmarks.train_throughput import SIZES, time_ours  # noqa: E402
from bigmodel_jax.models import layers  # noqa: E402


def _plain_matmul(x, w, w_transposed):
    return jax.lax.dot_general(x, w.astype(x.dtype), (((x.ndim - 1,), (1 if w_transposed else 0,)), ((), ())),
                               preferred_element_type=jnp.float32)


@contextlib.contextmanager
def plain_backward():
    """layers.matmul without its custom VJP while a step is traced and compiled."""
    ours = layers._matmul
    layers._matmul = _plain_matmul
    try:
        yield
    finally:
        layers._matmul = ours


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="char,d512")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    print("| model (L/d/H/T/B/V) | dtype | custom VJP tok/s | autodiff backward tok/s | custom / autodiff |")
    print("|---|---|---:|---:|---:|")
    for name in args.sizes.split(","):
        size = SIZES[name]
        for dtype in args.dtypes.split(","):
            ours, _ = time_ours(size, dtype, args.steps)
            with plain_backward():
                plain, _ = time_ours(size, dtype, args.steps)
            best = alternate({"ours": ours, "plain": plain}, args.repeats)
            tokens = size[3] * size[4]
            shape = "/".join(map(str, size))
            print(f"| {name} {shape} | {dtype} | {tokens / best['ours']:,.0f} | {tokens / best['plain']:,.0f} | "
                  f"{best['plain'] / best['ours']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
