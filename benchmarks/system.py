"""The training system's own costs, each beside its peer: the input pipeline against the train step
it feeds, async checkpoints against synchronous ones, and compiles from the persistent cache
against first compiles. Sections of `python -m benchmarks.run` (see its docstring)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import CONFIGS, ROOT, Context, alternate, row, say  # noqa: E402


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
        row("checkpoint", f"overhead, % of step time, saving every {every} steps",
            100 * cost["async"] / (every * step_s), 100 * cost["sync"] / (every * step_s), "%", lower_is_better=True,
            notes="cost per save / (every x step)"),
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
    size, _, variant = size.partition(":")  # "deep30:scan": with model.scan_layers
    if size == "default":
        cfg = load_config_file(str(CONFIGS / "gpt_char.py"))
        cfg.model.vocab_size = 65
        cfg.parallel.data = 1
    else:
        from benchmarks import train_throughput as tt
        cfg = tt.our_config(tt.SIZES[size], "bfloat16", scan=variant == "scan")
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


def _compile_in_child(size: str, cache: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--compile-child", size, "--cache-dir", cache],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    line = [x for x in p.stdout.splitlines() if x.startswith("COMPILE_RESULT ")]
    if p.returncode or not line:
        raise RuntimeError(f"compile child failed (rc {p.returncode}): {p.stderr[-800:]}")
    return json.loads(line[0].split(" ", 1)[1])


def section_compile(ctx: Context) -> list[dict]:
    plan = ["default"] if ctx.quick else ["default", "d512", "gpt2s"]
    rows = []
    for size in plan:
        say(f"compile {size}")
        with tempfile.TemporaryDirectory(prefix="jax_cache_", dir=ctx.tmp) as cache:
            out = [_compile_in_child(size, cache) for _ in range(2)]  # first: empty cache; second: the same
            files = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
        first, cached = out
        name = "gpt_char default" if size == "default" else f"GPT {size}"
        rows.append(row("compile", f"train step XLA compile, {name} ({first['shape']})", cached["compile_s"],
                        first["compile_s"], "s", lower_is_better=True,
                        notes=f"ours: from the persistent cache (train.enable_compilation_cache, threshold 0; "
                              f"{files} cache files); peer: first compile into an empty cache; trace+lower, "
                              f"not cached: {cached['lower_s']:.2f} s / {first['lower_s']:.2f} s"))
    rows += scan_rows(ctx)
    return rows


def scan_rows(ctx: Context) -> list[dict]:
    """model.scan_layers: the first compile of a 30-layer train step scanned vs unrolled (fresh
    processes, empty caches), and what the scan costs per step at d512 (alternating windows)."""
    from benchmarks import train_throughput as tt
    rows = []
    for size in ([] if ctx.quick else ["deep30"]):
        say(f"compile {size} scanned and unrolled")
        got = {}
        for variant in ("scan", "unrolled"):
            with tempfile.TemporaryDirectory(prefix="jax_cache_", dir=ctx.tmp) as cache:
                got[variant] = _compile_in_child(f"{size}:{variant}", cache)
        total = {k: v["lower_s"] + v["compile_s"] for k, v in got.items()}
        rows.append(row("compile", f"train step trace+lower+compile, GPT {size} ({got['scan']['shape']}): "
                        "model.scan_layers vs unrolled", total["scan"], total["unrolled"], "s", lower_is_better=True,
                        notes=f"compile alone {got['scan']['compile_s']:.1f} s vs "
                              f"{got['unrolled']['compile_s']:.1f} s"))
    size, steps, repeats = (tt.SIZES["baby"], 3, 1) if ctx.quick else (tt.SIZES["d512"], 5, 3)
    say("step time scanned vs unrolled")
    best = alternate({"scan": tt.time_ours(size, "bfloat16", steps, scan=True)[0],
                      "unrolled": tt.time_ours(size, "bfloat16", steps)[0]}, repeats)
    rows.append(row("compile", f"train step time, GPT {size[0]}x{size[1]} bf16 B={size[4]} T={size[3]}: "
                    "model.scan_layers vs unrolled", 1000 * best["scan"], 1000 * best["unrolled"], "ms",
                    lower_is_better=True, notes="the price of the scan: parameters stacked, gradients unstacked"))
    return rows

