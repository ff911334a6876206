"""Every speed figure of the project in one markdown table, each beside its peer measured in the same run.

    python -m benchmarks.run                    # the full run (about 10 min on the 2-core CPU)
    python -m benchmarks.run --quick            # tiny sizes, 1-2 repeats: a smoke test (~2-3 min)
    python -m benchmarks.run --only peak,train_gpt --out results.md

Sections (--only takes any of them, comma-separated):
  peak        measured matmul FLOP/s: jax (metrics.measure_matmul_peak, bf16 in / f32 out, and f32)
              vs torch.matmul, same size. jax's figures are the MFU denominators of every row.
  train_gpt   training tokens/s: the trainer's own step (train.init_state + make_train_step) vs
              Hugging Face GPT2LMHeadModel + torch AdamW (benchmarks/train_throughput.py).
  train_bert  the same for BERT masked-LM vs BertForMaskedLM (benchmarks/bert_throughput.py).
  pipeline    examples/s of the grain input pipeline the trainer iterates vs examples/s its train
              step consumes, and the training loop fed by the pipeline vs by a fixed batch.
  checkpoint  async Orbax checkpoints (checkpoint.Checkpointer): cost per save and share of step
              time, and the blocking time of save(); peer: the same saves made synchronous.
  compile     XLA compile time of the train step from the persistent compilation cache vs the first
              compile (two subprocesses sharing an empty temporary cache folder).
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

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("peak", "train_gpt", "train_bert", "pipeline", "checkpoint", "compile", "generate")
CONFIGS = ROOT / "configs"


def row(section: str, what: str, ours=None, peer=None, unit: str = "", mfu=None, notes: str = "",
        lower_is_better: bool = False) -> dict:
    return {"section": section, "what": what, "ours": ours, "peer": peer, "unit": unit, "mfu": mfu,
            "lower_is_better": lower_is_better, "notes": notes}


# --------------------------------------------------------------------------------------------- helpers

def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    a = abs(v)
    text = f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3f}"
    return f"{text} {unit}".strip()


def fmt_mfu(mfu) -> str:
    if not mfu:
        return "-"
    o, p = mfu
    parts = [f"ours {100 * o:.1f}%" if o is not None else None, f"peer {100 * p:.1f}%" if p is not None else None]
    return " / ".join(x for x in parts if x)


def table(rows: list[dict]) -> str:
    lines = ["| section | what | ours | peer | ours/peer | MFU | notes |", "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        o, p = r.get("ours"), r.get("peer")
        ratio = "-"
        if o is not None and p:
            ratio = f"{o / p:.2f}x" + (" (lower is better)" if r.get("lower_is_better") else "")
        cells = [r.get("section", ""), r.get("what", ""), fmt(o, r.get("unit", "")), fmt(p, r.get("unit", "")),
                 ratio, fmt_mfu(r.get("mfu")), r.get("notes", "")]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def alternate(fns: dict, repeats: int) -> dict:
    """Calls each fn (-> list of seconds) in turn, `repeats` rounds; the fastest time of each."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k] += fn()
    return {k: min(v) for k, v in times.items()}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Context:
    def __init__(self, quick: bool, tmp: Path):
        self.quick, self.tmp = quick, tmp
        self.peaks: dict[str, float] = {}  # dtype name -> jax's measured FLOP/s (the MFU denominators)

    def peak(self, dtype: str) -> float:
        if dtype not in self.peaks:  # the peak section did not run: measure jax's peak quietly
            import jax.numpy as jnp
            from bigmodel_jax import metrics
            self.peaks[dtype] = metrics.measure_matmul_peak(jnp.bfloat16 if dtype == "bfloat16" else jnp.float32,
                                                            2048, 5)
        return self.peaks[dtype]


def short(dtype: str) -> str:
    return {"bfloat16": "bf16", "float32": "f32"}.get(dtype, dtype)


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
            r = tt.measure(size, dtype, steps, repeats)
            peak = ctx.peak(dtype)
            fpt = r["flops_per_token"]
            rows.append(row("train_gpt", f"GPT {name} L/d/H/T/B/V={'/'.join(map(str, size))} {short(dtype)}, train",
                            r["ours"], r["torch"], "tok/s", mfu=(r["ours"] * fpt / peak, r["torch"] * fpt / peak),
                            notes=f"peer: HF GPT2LMHeadModel + torch AdamW{' (autocast bf16)' if dtype == 'bfloat16' else ''}; "
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


def _step_timer(cfg, task, batch: dict):
    """The trainer's step for cfg on one device: -> (run(n) -> per-step seconds, step_fn, state)."""
    import jax
    import jax.numpy as jnp
    from bigmodel_jax import sharding
    from bigmodel_jax.train import init_state, make_train_step

    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = init_state(cfg, task, mesh)
    step_fn = make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh)
    state = {"params": params, "opt": opt_state, "step": 0, "mesh": mesh, "fn": step_fn}
    placed = sharding.put_batch(batch, mesh)

    def one(b=None, block=True):
        state["params"], state["opt"], m = step_fn(state["params"], state["opt"], placed if b is None else b,
                                                   jnp.int32(state["step"]))
        state["step"] += 1
        if block:
            jax.block_until_ready(m)
        return m

    def run(n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            one()
            times.append(time.perf_counter() - t0)
        return times

    run(2)  # compile + warm-up
    state["one"] = one
    return run, state


def section_pipeline(ctx: Context) -> list[dict]:
    import jax
    import numpy as np
    from bigmodel_jax import sharding
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.tasks import causal_lm, mlm

    plan = [("gpt_char", causal_lm)] if ctx.quick else [("gpt_char", causal_lm), ("gpt_bpe", causal_lm),
                                                         ("bert_mlm", mlm)]
    n_examples, windows, steps = (2400, 2, 5) if ctx.quick else (6000, 3, 10)
    rows = []
    for name, task in plan:
        say(f"pipeline {name}")
        cfg = load_config_file(str(CONFIGS / f"{name}.py"))
        cfg.parallel.data = 1
        # the BERT tokenizer is the one train_bert trained, when it ran (same folder as bert_throughput uses)
        workdir = (ctx.tmp / "bert_tokenizers" / f"vocab{cfg.data.vocab_size}" if task is mlm
                   else ctx.tmp / f"pipeline_{name}")
        data = task.make_data(cfg, workdir)
        cfg.model.update(data.model_overrides)
        b = cfg.train.batch_size
        n_batches = max(20, n_examples // b)

        def pipeline_window():  # a fresh iterator drained as fast as possible: the sustained rate
            it = iter(data.train)
            for _ in range(10):  # thread start-up
                next(it)
            t0 = time.perf_counter()
            for _ in range(n_batches):
                next(it)
            dt = time.perf_counter() - t0
            it.close()  # its prefetch threads
            return [dt / n_batches]

        first_it = iter(data.train)
        first = {k: np.asarray(v) for k, v in next(first_it).items()}
        first_it.close()
        step_run, state = _step_timer(cfg, task, first)
        mesh, one = state["mesh"], state["one"]
        loop_it = iter(data.train)
        for _ in range(5):
            next(loop_it)

        def loop(fed: bool):  # as train(): next batch, put_batch, step; no blocking until the end
            def run():
                t0 = time.perf_counter()
                for _ in range(steps):
                    m = one(sharding.put_batch(next(loop_it), mesh) if fed else None, block=False)
                jax.block_until_ready(m)
                return [(time.perf_counter() - t0) / steps]
            return run

        try:
            best = alternate({"pipe": pipeline_window, "step": lambda: step_run(steps),
                              "fed": loop(True), "fixed": loop(False)}, windows)
        finally:
            loop_it.close()
        pipe_ex, step_ex = b / best["pipe"], b / best["step"]
        shape = f"B={b}, T={cfg.data.seq_len}, {cfg.model.dtype}, accum {cfg.train.grad_accum_steps}"
        rows.append(row("pipeline", f"{name}: input pipeline vs its train step ({shape})", pipe_ex, step_ex, "ex/s",
                        notes=f"ours: grain iterator as train() builds it, {n_batches} batches drained "
                              f"(best window); peer: examples/s the train step consumes (best step); "
                              f"ratio = pipeline headroom"))
        rows.append(row("pipeline", f"{name}: train loop fed by the pipeline vs by a fixed batch", b / best["fed"],
                        b / best["fixed"], "ex/s",
                        notes=f"next(iter) + put_batch + step, unblocked as in train(); best window mean of "
                              f"{steps} steps; ratio < 1 = time the loop loses to data"))
    return rows


def section_checkpoint(ctx: Context) -> list[dict]:
    import jax
    import numpy as np
    from bigmodel_jax import checkpoint
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.tasks import causal_lm

    cfg = load_config_file(str(CONFIGS / "gpt_char.py"))
    cfg.parallel.data = 1
    cfg.model.vocab_size = 65  # the character vocabulary's size order; no data needed to time saves
    every, saves, windows = (5, 3, 2) if ctx.quick else (10, 5, 3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.data.seq_len + 1)).astype(np.int32)
    say("checkpoint")
    step_run, state = _step_timer(cfg, causal_lm, {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]})
    one = state["one"]
    meta = {"config": cfg.to_json(), "data_state": {}}
    save_no = [0]
    calls = {"async": [], "sync": []}
    managers = {"async": checkpoint.Checkpointer(ctx.tmp / "ckpt_async", keep=cfg.train.keep_checkpoints),
                "sync": checkpoint.Checkpointer(ctx.tmp / "ckpt_sync", keep=cfg.train.keep_checkpoints,
                                                async_save=False)}

    def window(kind):
        def run():
            ckpt = managers.get(kind)
            t0 = time.perf_counter()
            for i in range(every * saves):
                m = one(block=False)
                if ckpt is not None and (i + 1) % every == 0:
                    jax.block_until_ready((m, state["params"], state["opt"]))  # time the call alone
                    save_no[0] += 1
                    c0 = time.perf_counter()
                    ckpt.save(save_no[0], state["params"], state["opt"], dict(meta, step=save_no[0]))
                    calls[kind].append(time.perf_counter() - c0)
            jax.block_until_ready(m)
            if ckpt is not None:
                ckpt.wait()  # the background write is part of the cost
            return [time.perf_counter() - t0]
        return run

    try:
        window("async")(), window("sync")()  # first saves create folders, threads
        best = alternate({"plain": window("plain"), "async": window("async"), "sync": window("sync"),
                          "step": lambda: step_run(every)}, windows)
    finally:
        for mgr in managers.values():
            mgr.wait()
            mgr.close()
    step_s = best["step"]
    cost = {k: max(best[k] - best["plain"], 0.0) / saves for k in ("async", "sync")}
    blocking = {k: min(v) for k, v in calls.items()}
    at = cfg.train.checkpoint_every
    desc = (f"gpt_char default ({cfg.model.num_layers}x{cfg.model.width}, {cfg.model.dtype}, B={cfg.train.batch_size}, "
            f"T={cfg.data.seq_len}); step {1000 * step_s:.1f} ms")
    return [
        row("checkpoint", f"cost per save, saving every {every} steps: {desc}", 1000 * cost["async"],
            1000 * cost["sync"], "ms", lower_is_better=True,
            notes=f"ours: async Orbax (Checkpointer); peer: the same saves synchronous; (window with {saves} saves "
                  f"incl. the final wait - window without) / saves, best of {windows}"),
        row("checkpoint", f"overhead, % of step time, saving every {every} steps", 100 * cost["async"] / (every * step_s),
            100 * cost["sync"] / (every * step_s), "%", lower_is_better=True, notes="cost per save / (every x step)"),
        row("checkpoint", f"overhead, % of step time, at the config's checkpoint_every={at}",
            100 * cost["async"] / (at * step_s), 100 * cost["sync"] / (at * step_s), "%", lower_is_better=True,
            notes="extrapolated from the cost per save"),
        row("checkpoint", "blocking time of the save() call", 1000 * blocking["async"], 1000 * blocking["sync"], "ms",
            lower_is_better=True, notes="fastest call, arrays ready before the call; async returns before writing"),
    ]


def compile_child(size: str, cache_dir: str) -> None:
    """In a fresh process: the persistent cache as train() enables it (threshold 0 so every
    compile is stored), then the train step's lower and compile times, as one JSON line."""
    logging.basicConfig(level=logging.WARNING, force=True)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bigmodel_jax import sharding
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.tasks import causal_lm
    from bigmodel_jax.train import enable_compilation_cache, init_state, make_train_step

    enable_compilation_cache(cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if size == "default":
        cfg = load_config_file(str(CONFIGS / "gpt_char.py"))
        cfg.model.vocab_size = 65
        cfg.parallel.data = 1
    else:
        from benchmarks import train_throughput as tt
        cfg = tt.our_config(tt.SIZES[size], "bfloat16")
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = init_state(cfg, causal_lm, mesh)
    step = make_train_step(graphdef, causal_lm, tx, schedule, cfg, param_sh, opt_sh, mesh)
    tokens = np.zeros((cfg.train.batch_size, cfg.data.seq_len), np.int32)
    batch = sharding.put_batch({"inputs": tokens, "targets": tokens}, mesh)
    t0 = time.perf_counter()
    lowered = step.lower(params, opt_state, batch, jnp.int32(0))
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    shape = f"{cfg.model.num_layers}x{cfg.model.width}, {cfg.model.dtype}, B={cfg.train.batch_size}, " \
            f"T={cfg.data.seq_len}, accum {cfg.train.grad_accum_steps}"
    print("COMPILE_RESULT " + json.dumps({"lower_s": t1 - t0, "compile_s": t2 - t1, "shape": shape}), flush=True)


def section_compile(ctx: Context) -> list[dict]:
    plan = ["default"] if ctx.quick else ["default", "d512", "gpt2s"]
    rows = []
    for size in plan:
        say(f"compile {size}")
        with tempfile.TemporaryDirectory(prefix="jax_cache_", dir=ctx.tmp) as cache:
            out = []
            for _ in range(2):  # first: empty cache; second: the same cache
                p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--compile-child", size, "--cache-dir", cache],
                                   cwd=ROOT, capture_output=True, text=True, timeout=900)
                line = [x for x in p.stdout.splitlines() if x.startswith("COMPILE_RESULT ")]
                if p.returncode or not line:
                    raise RuntimeError(f"compile child failed (rc {p.returncode}): {p.stderr[-800:]}")
                out.append(json.loads(line[0].split(" ", 1)[1]))
            files = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
        first, cached = out
        name = "gpt_char default" if size == "default" else f"GPT {size}"
        rows.append(row("compile", f"train step XLA compile, {name} ({first['shape']})", cached["compile_s"],
                        first["compile_s"], "s", lower_is_better=True,
                        notes=f"ours: from the persistent cache (train.enable_compilation_cache, threshold 0; "
                              f"{files} cache files); peer: first compile into an empty cache; trace+lower, "
                              f"not cached: {cached['lower_s']:.2f} s / {first['lower_s']:.2f} s"))
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
