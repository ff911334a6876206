"""Masked-LM train-step throughput: our BERT (the trainer's own jitted step: configs/bert_mlm.py,
train.init_state + make_train_step, tasks/mlm.py) against Hugging Face transformers'
BertForMaskedLM + torch.optim.AdamW on PyTorch CPU, same shape, batch, optimizer and dropout,
f32 and bf16 (torch: autocast), alternating runs in one process.

    python benchmarks/bert_throughput.py [--sizes default,mini] [--repeats 3] [--steps 10] [--dropout 0.1]
    python benchmarks/bert_throughput.py --quick      # a tiny smoke run

Both frameworks train on the same batch: real WordPiece windows of the plays, masked as the trainer
does (mlm.make_data; it trains a tokenizer first, ~10 s, in a temporary folder).

Ours predicts only the K = 15% masked positions (the vocab projection runs on [B, K, D], as the
original BERT's max_predictions_per_seq); HF's BertForMaskedLM runs its head on all T positions
(labels -100 elsewhere). That is an algorithmic advantage of ours, so the table also times ours with
the head on all T positions (masked_positions = every position, same step function), which does
the same work as HF. MFU uses one FLOP count per row for all three (metrics.flops_per_token with
mlm.matmul_params: the head counted at K positions), so MFU ratios equal speed ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import alternate, torch_step_timer, trainer_step_timer  # noqa: E402
from bigmodel_jax import metrics  # noqa: E402
from bigmodel_jax.config import apply_overrides, load_config_file  # noqa: E402
from bigmodel_jax.tasks import mlm  # noqa: E402
from bigmodel_jax.train import enable_compilation_cache  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bert_mlm.py"
# name: overrides of configs/bert_mlm.py
SIZES = {
    "default": [],  # 4 layers, width 256, 4 heads, mlp 1024, T=128, B=32
    "mini": ["model.num_layers=6", "model.width=384", "model.num_heads=12", "model.mlp_dim=1536",
             "train.batch_size=16"],  # BERT-mini / MiniLM-L6-ish
    "quick": ["model.num_layers=2", "model.width=64", "model.num_heads=2", "model.mlp_dim=256",
              "model.max_len=32", "data.seq_len=32", "train.batch_size=8", "data.vocab_size=1024"],
}


def bert_config(size: str, dtype: str, dropout: float, workdir: Path):
    """The trainer's config for one row, and a batch from the trainer's data path (numpy)."""
    cfg = apply_overrides(load_config_file(str(CONFIG)), SIZES[size] + [
        f"model.dtype={dtype}", f"model.dropout={dropout}", "parallel.data=1"])
    # one tokenizer per vocabulary size, trained once per run (make_data reuses <workdir>/tokenizer)
    data = mlm.make_data(cfg, workdir / f"vocab{cfg.data.vocab_size}")
    cfg.model.vocab_size = data.model_overrides["vocab_size"]
    batch = {k: np.asarray(v) for k, v in next(iter(data.train)).items()}
    return cfg, batch


def head_on_all_positions(batch: dict) -> dict:
    """The same masked inputs, but predict the original token at every position: the head then
    runs on [B, T, D] as HF's does (same compute as HF's all-position logits + cross-entropy)."""
    b, t = batch["input_ids"].shape
    original = batch["input_ids"].copy()
    np.put_along_axis(original, batch["masked_positions"], batch["masked_labels"], axis=1)
    return {"input_ids": batch["input_ids"], "masked_positions": np.tile(np.arange(t, dtype=np.int32), (b, 1)),
            "masked_labels": original}


def time_ours(cfg, batch: dict, steps: int, warmup: int):
    return trainer_step_timer(cfg, mlm, batch, steps, warmup)


def time_torch(cfg, batch: dict, steps: int, warmup: int):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    m = cfg.model
    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(
        vocab_size=m.vocab_size, hidden_size=m.width, num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
        intermediate_size=m.mlp_dim, max_position_embeddings=m.max_len, type_vocab_size=m.type_vocab_size,
        hidden_act={"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[m.activation], layer_norm_eps=m.norm_eps,
        hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.dropout))
    ids = torch.from_numpy(batch["input_ids"]).long()
    labels = torch.full_like(ids, -100)
    labels.scatter_(1, torch.from_numpy(batch["masked_positions"]).long(),
                    torch.from_numpy(batch["masked_labels"]).long())
    return torch_step_timer(hf, cfg.optim, lambda: hf(input_ids=ids, labels=labels).loss, m.dtype == "bfloat16",
                            steps, warmup)


def measure(cfg, batch: dict, steps: int, repeats: int, warmup: int, all_positions: bool = True) -> dict:
    """Best-step tokens/s of ours, ours with the head on all T positions (all_positions) and HF
    BertForMaskedLM, timed in alternating windows of `steps` steps after `warmup` steps; also the
    FLOPs per token of the row (metrics.flops_per_token with mlm.matmul_params) and the shape."""
    ours = time_ours(cfg, batch, steps, warmup)
    ours_all = time_ours(cfg, head_on_all_positions(batch), steps, warmup) if all_positions else None
    theirs = time_torch(cfg, batch, steps, warmup)
    fns = {"ours": ours, **({"all": ours_all} if ours_all is not None else {}), "torch": theirs}
    best = alternate(fns, repeats)  # alternate so all see the same machine noise
    m, (b, t) = cfg.model, batch["input_ids"].shape
    return {"ours": b * t / best["ours"], "ours_all": b * t / best["all"] if "all" in best else None,
            "torch": b * t / best["torch"], "tokens_per_step": b * t, "k": batch["masked_positions"].shape[1],
            "flops_per_token": metrics.flops_per_token(m.num_layers, m.width, t, mlm.matmul_params(cfg)),
            "shape": f"{m.num_layers}/{m.width}/{m.num_heads}/{m.mlp_dim}/{t}/{b}/{m.vocab_size}"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="default,mini", help=f"comma-separated, of {list(SIZES)}")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=3, help="timing windows per framework (best is kept)")
    p.add_argument("--steps", type=int, default=10, help="steps per timing window")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile included)")
    p.add_argument("--dropout", type=float, default=0.1, help="in both (BERT's 0.1, the config's default)")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (on a busy host, fewer threads than cores avoids ~1 s stalls)")
    p.add_argument("--quick", action="store_true", help="smoke run: the 'quick' size, 2 windows of 2 steps")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.steps, args.warmup = "quick", 2, 2, 1
    import torch

    torch.set_num_threads(args.torch_threads)
    enable_compilation_cache(load_config_file(str(CONFIG)).compilation_cache_dir)  # as train() does
    rows = []
    with tempfile.TemporaryDirectory(prefix="bert_throughput_") as tmp:
        for name in args.sizes.split(","):
            for dtype in args.dtypes.split(","):
                cfg, batch = bert_config(name, dtype, args.dropout, Path(tmp))
                r = measure(cfg, batch, args.steps, args.repeats, args.warmup)
                peak = metrics.peak_flops_per_device(dtype)
                o, a, h = r["ours"], r["ours_all"], r["torch"]
                rows.append((name, r["shape"], r["k"], dtype, o, a, h, r["flops_per_token"] / peak))
                print(f"  {name} {dtype}: ours {o:,.0f} tok/s, head on all T {a:,.0f}, HF {h:,.0f} tok/s",
                      file=sys.stderr)
    print(f"\njax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__}, "
          f"{os.cpu_count()} cores, {args.torch_threads} torch threads; "
          f"fastest step of {args.repeats} x {args.steps} steps "
          f"after {args.warmup} warm-up; dropout {args.dropout} in both\n")
    print("| model (L/d/H/mlp/T/B/V) | K | dtype | ours tok/s | ours, head on all T | HF BERT tok/s "
          "| ours / HF | ours all-T / HF | ours MFU | ours all-T MFU | HF MFU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, shape, k, dtype, o, a, h, mfu_per_tok in rows:
        print(f"| {name} {shape} | {k} | {dtype} | {o:,.0f} | {a:,.0f} | {h:,.0f} | {o / h:.2f}x | {a / h:.2f}x | "
              f"{100 * o * mfu_per_tok:.1f}% | {100 * a * mfu_per_tok:.1f}% | {100 * h * mfu_per_tok:.1f}% |")
    print("\nK: predicted positions per sequence. Ours runs the MLM head (dense + vocab projection) on the K "
          "masked positions only, as the original BERT; HF BertForMaskedLM runs it on all T, as does "
          "'ours, head on all T' (same work as HF). MFU counts the head at K positions for all three "
          "(torch: autocast bf16; HF attention: its default implementation).")


if __name__ == "__main__":
    main()
