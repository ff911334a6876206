"""What int8 weight-only quantization (bigmodel_jax/quantize.py) costs and saves on SmolLM2-135M:
weight memory, validation loss on the held-out plays, a forward pass and greedy decoding, for
f32, bf16 (weights stored and computed in bf16) and int8 weights (f32 or bf16 compute), the timed
variants alternating in one process.

    python benchmarks/quantize.py [--windows 16] [--repeats 3] [--new-tokens 32]

Loss: mean next-token NLL (nats per SmolLM2 token) over --windows windows of 256 tokens of the
held-out plays (the validation split). Forward: one batch of 4 x 256 tokens, logits included.
Decode: greedy, batch 1, a 32-token prompt, --new-tokens new tokens (prefill included). Greedy
agreement: the share of the f32 model's new tokens each variant reproduces, position by position.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigmodel_jax.data import plays  # noqa: E402
from bigmodel_jax.generate import Sampling, generate  # noqa: E402
from bigmodel_jax.gguf_import import load_smollm2  # noqa: E402
from bigmodel_jax.quantize import quantize_int8, weight_bytes  # noqa: E402

SEQ = 256


@partial(jax.jit, static_argnums=0)
def _nll(graphdef, state, ids_bt):
    logits = nnx.merge(graphdef, state)(ids_bt[:, :-1])[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids_bt[:, 1:]).mean()


def variants() -> dict:
    f32, tokenizer = load_smollm2("float32")
    bf16 = load_smollm2("bfloat16")[0]
    int8_bf16 = quantize_int8(bf16)  # int8 weights from the f32 values, bf16 compute
    nnx.update(bf16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(bf16, nnx.Param)))
    return {"f32": f32, "bf16": bf16, "int8 (f32 compute)": quantize_int8(f32),
            "int8 (bf16 compute)": int8_bf16}, tokenizer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--tfds-dir", default="~/.cache/bigmodel_jax/tfds")
    args = p.parse_args(argv)
    models, tokenizer = variants()
    text = plays.load_split_text(str(Path(args.tfds_dir).expanduser()), "validation", None)
    ids = np.asarray(tokenizer.encode(text[:400_000]), np.int32)
    stride = max(1, (len(ids) - SEQ - 1) // args.windows)
    windows = np.stack([ids[i * stride: i * stride + SEQ + 1] for i in range(args.windows)])
    prompt = [ids[:32].tolist()]
    greedy = Sampling(greedy=True)
    loss, forward, decode, tokens = {}, {k: [] for k in models}, {k: [] for k in models}, {}
    for name, m in models.items():
        graphdef, state = nnx.split(m)
        loss[name] = float(np.mean([_nll(graphdef, state, jnp.asarray(windows[i:i + 4]))
                                    for i in range(0, len(windows), 4)]))
        tokens[name] = generate(m, prompt, args.new_tokens, sampling=greedy)[0]  # also compiles decode
    for _ in range(args.repeats):  # alternating rounds; the fastest of each
        for name, m in models.items():
            graphdef, state = nnx.split(m)
            t = time.perf_counter()
            jax.block_until_ready(_nll(graphdef, state, jnp.asarray(windows[:4])))
            forward[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            generate(m, prompt, args.new_tokens, sampling=greedy)
            decode[name].append(time.perf_counter() - t)
    base = "f32"
    print(f"| weights | weight memory | held-out loss | forward 4 x {SEQ} | decode tok/s | vs f32: memory / "
          "forward time / decode speed | greedy agreement |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, m in models.items():
        mem, fw, dec = weight_bytes(m) / 2**20, min(forward[name]), args.new_tokens / min(decode[name])
        same = np.mean([a == b for a, b in zip(tokens[name], tokens[base])])
        print(f"| {name} | {mem:,.0f} MiB | {loss[name]:.4f} | {1000 * fw:,.0f} ms | {dec:.1f} | "
              f"{mem / (weight_bytes(models[base]) / 2**20):.2f}x / {fw / min(forward[base]):.2f}x / "
              f"{dec / (args.new_tokens / min(decode[base])):.2f}x | {same:.2f} |", flush=True)


if __name__ == "__main__":
    main()
