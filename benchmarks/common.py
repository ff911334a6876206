"""What every benchmark section shares: the row format (documented in benchmarks/run.py), the
markdown table, alternating timed runs, and the run context (temporary folder, measured peaks)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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


def step_timer(one_step, steps: int, warmup: int):
    """Runs one_step `warmup` times (compile, warm caches), then returns a function that runs it
    `steps` more times and returns the seconds of each (what `alternate` takes)."""
    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            one_step()
            times.append(time.perf_counter() - t0)
        return times

    run(warmup)
    return lambda: run(steps)


def trainer_step_timer(cfg, task, batch: dict, steps: int, warmup: int):
    """step_timer over the trainer's own jitted step (train.init_state + make_train_step) of `task`
    on one device, the batch fixed."""
    import jax
    import jax.numpy as jnp
    from bigmodel_jax import sharding
    from bigmodel_jax.train import init_state, make_train_step

    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = init_state(cfg, task, mesh)
    step_fn = make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh)
    batch = sharding.put_batch(batch, mesh)
    state = {"params": params, "opt": opt_state, "step": 0}

    def one_step():
        state["params"], state["opt"], m = step_fn(state["params"], state["opt"], batch, jnp.int32(state["step"]))
        jax.block_until_ready(m)
        state["step"] += 1

    return step_timer(one_step, steps, warmup)


def torch_step_timer(model, optim_cfg, loss_fn, bf16: bool, steps: int, warmup: int):
    """step_timer over a transformers model's train step as our trainer takes it: AdamW with weight
    decay on matrices only (optim.decay_mask), loss_fn() under CPU autocast when bf16, gradient
    clipping at optim_cfg.clip_norm."""
    import torch

    o = optim_cfg
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    model.train()

    def one_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step_timer(one_step, steps, warmup)


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

