"""Every speed figure of the project in one markdown table, each beside its peer measured in the same run.

    python -m benchmarks.run                    # the full run (about 40 min on the 2-core CPU)
    python -m benchmarks.run --quick            # tiny sizes, 1-2 repeats: a smoke test (~2-3 min)
    python -m benchmarks.run --only peak,train_gpt --out results.md

Sections (--only takes any of them, comma-separated):
  peak        measured matmul FLOP/s: jax (metrics.measure_matmul_peak, bf16 in / f32 out, and f32)
              vs torch.matmul, same size. jax's figures are the MFU denominators of every row.
  train_gpt   training tokens/s: the trainer's own step (train.init_state + make_train_step) vs
              Hugging Face GPT2LMHeadModel + torch AdamW, eager and through torch.compile (two rows;
              benchmarks/train_throughput.py).
  train_bert  the same for BERT masked-LM vs BertForMaskedLM (benchmarks/bert_throughput.py).
  train_t5    the same for the T5 encoder-decoder vs T5ForConditionalGeneration (benchmarks/t5_throughput.py).
  train_vit   the same for ViT image classification vs ViTForImageClassification (benchmarks/vit_throughput.py).
  pipeline    examples/s of the grain input pipeline the trainer iterates vs examples/s its train
              step consumes, and the training loop fed by the pipeline vs by a fixed batch.
  checkpoint  async Orbax checkpoints (checkpoint.Checkpointer): cost per save and share of step
              time, and the blocking time of save(); peer: the same saves made synchronous.
  compile     XLA compile time of the train step from the persistent compilation cache vs the first
              compile (two subprocesses sharing an empty temporary cache folder); a 30-layer step's
              first compile with model.scan_layers vs unrolled, and the scan's step time at d512.
  generate    benchmarks/generation.py's generation_rows(quick), when that module is there.

Method: every timed thing gets a warm-up (compile included) first; ours and the peer then run in
alternating windows and the fastest step (or window, where said) is kept: the host is noisy and
the minimum is the figure least moved by other load. torch uses as many threads as cores.

Row format (every section returns a list of these dicts; benchmarks/generation.py returns the same):

    {"section": str,            # the section name, e.g. "generate"
     "what": str,               # what was measured, with the shape / config
     "ours": float | None,      # our figure, in `unit`
     "peer": float | None,      # the peer's figure, in `unit` (None: no peer)
     "unit": str,               # "tok/s", "GFLOP/s", "ex/s", "ms", "s", "%" ...
     "mfu": (float | None, float | None) | None,   # optional: (ours, peer) MFU as fractions of 1
     "lower_is_better": bool,   # optional, default False: times, overheads
     "notes": str}              # optional

`row(...)` below builds one. The table's ours/peer column is ours / peer whatever the unit
(marked "lower is better" for times).
"""

from __future__ import annotations

if __name__ == "__main__":  # the same allocator as `python -m bigmodel_jax.train` (fixed when a process starts)
    from bigmodel_jax import allocator

    allocator.reexec()

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("peak", "train_gpt", "train_bert", "train_t5", "train_vit", "pipeline", "checkpoint", "compile",
            "generate")

from benchmarks.common import CONFIGS, Context, row, say, short, table  # noqa: E402
from benchmarks.system import compile_child, section_checkpoint, section_compile, section_pipeline  # noqa: E402


# --------------------------------------------------------------------------------------------- sections

def torch_matmul_flops(dtype: str, n: int, repeats: int) -> float:
    import torch

    g = torch.Generator().manual_seed(0)
    td = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a, b = torch.randn(n, n, generator=g).to(td), torch.randn(n, n, generator=g).to(td)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def section_peak(ctx: Context) -> list[dict]:
    import jax.numpy as jnp
    from bigmodel_jax import metrics

    sizes = (2048,) if ctx.quick else (2048, 4096)
    rounds, inner = (2, 2) if ctx.quick else (3, 3)
    found = {}  # (dtype, n) -> (jax, torch)
    for n in sizes:
        for dtype in ("bfloat16", "float32"):
            j = t = 0.0
            for _ in range(rounds):  # alternate jax / torch
                j = max(j, metrics.measure_matmul_peak(jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, n, inner))
                t = max(t, torch_matmul_flops(dtype, n, inner))
            found[dtype, n] = (j, t)
    rows = []
    for dtype in ("bfloat16", "float32"):
        best_n = max(sizes, key=lambda n: found[dtype, n][0])
        ctx.peaks[dtype] = found[dtype, best_n][0]
        for n in sizes:
            j, t = found[dtype, n]
            kind = "bf16 in, f32 accumulate" if dtype == "bfloat16" else "f32"
            peer_kind = "torch.matmul bf16 (bf16 out)" if dtype == "bfloat16" else "torch.matmul f32"
            note = f"peer: {peer_kind}"
            if n == best_n:
                note += f"; the MFU denominator of {short(dtype)} rows" + (
                    f" (n={n} was the faster of {', '.join(map(str, sizes))})" if len(sizes) > 1 else "")
            rows.append(row("peak", f"matmul {n}x{n}, {kind}", j / 1e9, t / 1e9, "GFLOP/s", notes=note))
    return rows


def section_train_gpt(ctx: Context) -> list[dict]:
    from benchmarks import train_throughput as tt

    # (size, steps per window, windows); GPT-2 small's step takes seconds on a CPU: fewer of them
    plan = [("baby", 3, 2)] if ctx.quick else [("d512", 3, 3), ("gpt2s", 2, 2)]
    rows = []
    for name, steps, repeats in plan:
        size = tt.SIZES[name]
        for dtype in ("float32", "bfloat16"):
            say(f"train_gpt {name} {dtype}")
            r = tt.measure(size, dtype, steps, repeats, compiled_peer=True)
            peak = ctx.peak(dtype)
            fpt = r["flops_per_token"]
            what = f"GPT {name} L/d/H/T/B/V={'/'.join(map(str, size))} {short(dtype)}, train"
            autocast = " (autocast bf16)" if dtype == "bfloat16" else ""
            for peer, how in (("torch", "eager"), ("torch_compile", "torch.compile of the model")):
                rows.append(row("train_gpt", what, r["ours"], r[peer], "tok/s",
                                mfu=(r["ours"] * fpt / peak, r[peer] * fpt / peak),
                                notes=f"peer: HF GPT2LMHeadModel {how} + torch AdamW{autocast}; "
                                      f"best step of {repeats}x{steps}"))
    return rows


def section_train_bert(ctx: Context) -> list[dict]:
    from benchmarks import bert_throughput as bt

    # (size, steps per window, windows, also time our head on all T positions)
    plan = [("quick", 2, 2, False)] if ctx.quick else [("default", 3, 3, True), ("mini", 3, 3, False)]
    rows = []
    for name, steps, repeats, all_t in plan:
        for dtype in ("float32", "bfloat16"):
            say(f"train_bert {name} {dtype}")
            cfg, batch = bt.bert_config(name, dtype, 0.1, ctx.tmp / "bert_tokenizers")
            r = bt.measure(cfg, batch, steps, repeats, warmup=2, all_positions=all_t)
            peak, fpt = ctx.peak(dtype), r["flops_per_token"]
            what = f"BERT MLM {name} L/d/H/mlp/T/B/V={r['shape']} {short(dtype)}, train"
            peer_note = f"peer: HF BertForMaskedLM + torch AdamW{' (autocast bf16)' if dtype == 'bfloat16' else ''}"
            rows.append(row("train_bert", what, r["ours"], r["torch"], "tok/s",
                            mfu=(r["ours"] * fpt / peak, r["torch"] * fpt / peak),
                            notes=f"{peer_note}; ours: head on the K={r['k']} masked positions; dropout 0.1; "
                                  f"best step of {repeats}x{steps}"))
            if r["ours_all"] is not None:
                rows.append(row("train_bert", what.replace(", train", ", train, our head on all T"), r["ours_all"],
                                r["torch"], "tok/s", mfu=(r["ours_all"] * fpt / peak, r["torch"] * fpt / peak),
                                notes="the same work as HF (MLM head on every position); MFU counts the head at K"))
    return rows


def section_train_t5(ctx: Context) -> list[dict]:
    from benchmarks import t5_throughput as tt

    name, steps, repeats = ("quick", 2, 2) if ctx.quick else ("default", 3, 3)
    rows = []
    for dtype in ("float32", "bfloat16"):
        say(f"train_t5 {name} {dtype}")
        cfg, batch = tt.t5_config(name, dtype)
        r = tt.measure(cfg, batch, steps, repeats)
        peak, fpt = ctx.peak(dtype), r["flops_per_token"]
        autocast = " (autocast bf16)" if dtype == "bfloat16" else ""
        rows.append(row("train_t5", f"T5 v1.1 L/d/H/mlp/S/T/B/V={r['shape']} {short(dtype)}, train", r["ours"],
                        r["torch"], "tok/s", mfu=(r["ours"] * fpt / peak, r["torch"] * fpt / peak),
                        notes=f"peer: HF T5ForConditionalGeneration + torch AdamW{autocast}; dropout 0.1, label "
                              f"smoothing 0.1; tokens = source + target; best step of {repeats}x{steps}"))
    return rows


def section_train_vit(ctx: Context) -> list[dict]:
    from benchmarks import vit_throughput as vt

    size, steps, repeats = ("quick", 2, 1) if ctx.quick else ("small", 3, 3)
    rows = []
    for dtype in ("float32", "bfloat16"):
        say(f"train_vit {size} {dtype}")
        r = vt.measure(size, dtype, steps, repeats)
        peak, fpt = ctx.peak(dtype), r["flops_per_token"]
        rows.append(row("train_vit", f"ViT {r['shape']} {short(dtype)}, train", r["ours"], r["torch"], "tok/s",
                        mfu=(r["ours"] * fpt / peak, r["torch"] * fpt / peak),
                        notes=f"peer: HF ViTForImageClassification + torch AdamW"
                              f"{' (autocast bf16)' if dtype == 'bfloat16' else ''}; no dropout; "
                              f"best step of {repeats}x{steps}"))
    return rows


def section_generate(ctx: Context) -> list[dict]:
    # benchmarks/generation.py: generation_rows(quick) -> list of row dicts
    # (the format at the top of this file): generation tokens/s vs transformers generate on SmolLM2,
    # batch 1/16, prompt 32/512, and per-token decode time vs prompt length.
    try:
        from benchmarks.generation import generation_rows
    except Exception as e:  # not written yet, or broken: say so and carry on
        return [row("generate", "generation", notes=f"generation: not available ({type(e).__name__}: {e})")]
    rows = generation_rows(ctx.quick)
    for r in rows:
        r.setdefault("section", "generate")
    return rows


RUNNERS = {"peak": section_peak, "train_gpt": section_train_gpt, "train_bert": section_train_bert,
           "train_t5": section_train_t5, "train_vit": section_train_vit,
           "pipeline": section_pipeline, "checkpoint": section_checkpoint, "compile": section_compile,
           "generate": section_generate}


# --------------------------------------------------------------------------------------------- main

def header(torch_threads: int, quick: bool, load: tuple) -> str:
    import jax
    import torch
    import transformers

    devices = jax.devices()
    return "\n".join([
        f"# bigmodel_jax benchmarks ({'--quick' if quick else 'full'}), "
        f"{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        f"- machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores; jax devices: "
        f"{len(devices)} x {devices[0].platform} ({devices[0].device_kind})",
        f"- python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__} "
        f"({torch_threads} threads{' = cores' if torch_threads == os.cpu_count() else ''}), "
        f"transformers {transformers.__version__}",
        f"- allocator: {os.environ.get('BIGMODEL_ALLOCATOR_APPLIED', 'system')} (bigmodel_jax/allocator.py; "
        "torch runs in the same process, under the same one)",
        f"- load average at the start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"
        + (": the host was busy, figures are noisy (torch stalls badly when its threads outnumber free cores)"
           if load[0] > 0.5 * (os.cpu_count() or 1) else ""),
        "- ours and the peer alternate in one process; each figure is the fastest step (or window) after "
        "warm-up. MFU = model FLOPs (metrics.flops_per_token, one function for every family) / jax's measured "
        "matmul peak of the row's dtype (bf16 in + f32 accumulate for bf16 rows, f32 for f32 rows), the same "
        "FLOPs for ours and the peer.",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 repeats: a smoke test (~2-3 min)")
    p.add_argument("--only", default="", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    p.add_argument("--out", default="", help="also write the header and table to this markdown file")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (default: the core count; on a busy host fewer avoids ~1 s stalls)")
    p.add_argument("--compile-child", default="", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compile_child:
        compile_child(args.compile_child, args.cache_dir)
        return 0
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets", "bigmodel_jax"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.torch_threads)
    load = os.getloadavg()
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.train import enable_compilation_cache

    # the user's persistent cache, as train() enables it: warm-up compiles of a rerun come back faster
    # (nothing timed here is a compile, except the compile section, which uses its own empty cache)
    enable_compilation_cache(load_config_file(str(CONFIGS / "gpt_char.py")).compilation_cache_dir)

    t_start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bigmodel_bench_") as tmp:
        ctx = Context(args.quick, Path(tmp))
        for name in sections:
            t0 = time.perf_counter()
            say(f"section {name} ...")
            try:
                got = RUNNERS[name](ctx)
            except Exception as e:  # one broken section should not lose the others' figures
                traceback.print_exc()
                got = [row(name, f"{name}: failed", notes=f"{type(e).__name__}: {str(e)[:200]}")]
            rows += got
            say(f"section {name} done in {time.perf_counter() - t0:.0f} s")
    elapsed = time.perf_counter() - t_start
    text = f"{header(torch.get_num_threads(), args.quick, load)}\n- run time {elapsed:.0f} s\n\n{table(rows)}\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
