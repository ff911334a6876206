"""Train-step throughput: our GPT (jax.jit, flax.nnx, optax AdamW) against Hugging Face
transformers' GPT2LMHeadModel + torch.optim.AdamW on PyTorch CPU, same width/depth/heads/
sequence/batch/vocab, f32 and bf16 (torch: autocast), alternating runs in one process.

    python benchmarks/train_throughput.py [--sizes baby,char,d512] [--repeats 3] [--steps 10]

Prints one table: tokens/s of each (the fastest single step of --repeats alternating windows of
--steps steps, after a warm-up step: the figure least moved by other load on a shared machine), the
ratio ours/theirs, and MFU (model FLOPs from metrics.flops_per_token over the measured matmul peak
of this machine, the same for both). `measure` returns the figures (benchmarks/run.py uses it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import alternate, trainer_step_timer  # noqa: E402
from bigmodel_jax import metrics  # noqa: E402
from bigmodel_jax.config import load_config_file  # noqa: E402
from bigmodel_jax.tasks import causal_lm  # noqa: E402

# name: (layers, width, heads, seq_len, batch, vocab)
SIZES = {
    "baby": (4, 128, 4, 64, 12, 80),     # nanoGPT's CPU baby GPT on characters
    "char": (6, 192, 6, 128, 32, 80),    # configs/gpt_char.py
    "d512": (6, 512, 8, 256, 8, 8192),   # a small BPE-sized GPT
    "gpt2s": (12, 768, 12, 256, 4, 50257),  # GPT-2 small's shape (shorter sequences, small batch)
    "deep30": (30, 256, 4, 128, 4, 8192),  # deep and narrow: what model.scan_layers is for (compile time)
}


def our_config(size, dtype, accum=1, scan=False):
    layers, width, heads, seq, batch, vocab = size
    cfg = load_config_file(str(Path(__file__).resolve().parents[1] / "configs" / "gpt_char.py"))
    cfg.model.update(num_layers=layers, width=width, num_heads=heads, mlp_dim=4 * width, max_len=seq,
                     vocab_size=vocab, dtype=dtype, activation="gelu_tanh", dropout=0.0)
    cfg.data.seq_len = seq
    cfg.train.batch_size = batch
    cfg.train.grad_accum_steps = accum
    cfg.model.scan_layers = scan
    cfg.parallel.update(data=1, fsdp=1, tensor=1)
    return cfg


def time_ours(size, dtype, steps, accum=1, scan=False):
    cfg = our_config(size, dtype, accum, scan)
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, size[5], (size[4], size[3])).astype(np.int32)}
    batch["targets"] = np.roll(batch["inputs"], -1, axis=1)
    return trainer_step_timer(cfg, causal_lm, batch, steps, warmup=1), causal_lm.matmul_params(cfg)


def time_torch(size, dtype, steps, compiled: bool = False):
    """compiled: the same model through torch.compile (inductor), the optimizer step eager as in
    most training scripts; its compile runs in the warm-up step."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    layers, width, heads, seq, batch, vocab = size
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=seq, n_embd=width, n_layer=layers, n_head=heads,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, vocab, (batch, seq))
    model = torch.compile(hf) if compiled else hf

    def one_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    one_step()

    def run():  # -> seconds of each step
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            one_step()
            times.append(time.perf_counter() - t0)
        return times

    return run


def measure(size, dtype: str, steps: int, repeats: int, accum: int = 1, compiled_peer: bool = False) -> dict:
    """Best-step tokens/s of ours, ours with the batch in `accum` micro-batches (when accum > 1 and
    it divides the batch) and HF GPT-2 (torch; with compiled_peer also through torch.compile), timed
    in alternating windows of `steps` steps; also the FLOPs per token (metrics.flops_per_token) and
    the accumulation actually used."""
    ours, n_matmul = time_ours(size, dtype, steps)
    accum = accum if accum > 1 and size[4] % accum == 0 else 1
    ours_acc = time_ours(size, dtype, steps, accum)[0] if accum > 1 else None
    theirs = time_torch(size, dtype, steps)
    fns = {"ours": ours, **({"accum": ours_acc} if ours_acc is not None else {}), "torch": theirs}
    if compiled_peer:
        fns["torch_compile"] = time_torch(size, dtype, steps, compiled=True)
    best = alternate(fns, repeats)  # alternate so all see the same machine noise
    tokens = size[3] * size[4]
    return {"ours": tokens / best["ours"], "ours_accum": tokens / best["accum"] if "accum" in best else None,
            "accum": accum, "torch": tokens / best["torch"], "tokens_per_step": tokens,
            "torch_compile": tokens / best["torch_compile"] if "torch_compile" in best else None,
            "flops_per_token": metrics.flops_per_token(size[0], size[1], size[3], n_matmul)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="baby,char,d512")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--accum", type=int, default=4,
                   help="also time ours with the batch split into this many micro-batches (same math)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    rows = []
    for name in args.sizes.split(","):
        size = SIZES[name]
        for dtype in args.dtypes.split(","):
            r = measure(size, dtype, args.steps, args.repeats, args.accum)
            peak = metrics.peak_flops_per_device(dtype)
            o, t, accum = r["ours"], r["torch"], r["accum"]
            a = r["ours_accum"] or o
            fpt = r["flops_per_token"]
            rows.append((name, size, dtype, o, a, accum, t, o * fpt / peak, t * fpt / peak))
            print(f"  {name} {dtype}: ours {o:,.0f} tok/s, accum {a:,.0f}, torch {t:,.0f} tok/s", file=sys.stderr)
    print(f"\njax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__}, "
          f"{os.cpu_count()} cores; fastest step of {args.repeats} x {args.steps} steps\n")
    print("| model (L/d/H/T/B/V) | dtype | ours tok/s | ours, B in micro-batches | HF GPT-2 tok/s "
          "| ours / HF | best ours / HF | ours MFU | HF MFU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, dtype, o, a, accum, t, mo, mt in rows:
        acc = f"{a:,.0f} ({accum}x{size[4] // accum})" if accum > 1 else "-"
        print(f"| {name} {'/'.join(map(str, size))} | {dtype} | {o:,.0f} | {acc} | {t:,.0f} | {o / t:.2f}x | "
              f"{max(o, a) / t:.2f}x | {100 * mo:.1f}% | {100 * mt:.1f}% |")


if __name__ == "__main__":
    main()
