"""Metrics: FLOPs per token and MFU, TensorBoard + metrics.jsonl writer, and the rich progress bar.

MFU = achieved model FLOP/s / peak FLOP/s. Model FLOPs per token count the training matmuls only
(6 x matmul parameters, which includes the output head but not the embedding lookup, plus
12 x layers x seq_len x width for attention scores and values, PaLM's formula; causal masking
is not subtracted). The peak comes from a table for known accelerators; on a CPU it is *measured*
once (a large matmul in the compute dtype with f32 accumulation) and cached, so CPU MFU says how
close the step runs to what this machine's XLA dot kernel can do.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Dense peak FLOP/s per chip: (bf16, f32). f32 on GPUs is the TF32 tensor-core rate.
PEAK_FLOPS = {
    "TPU v4": (275e12, 275e12 / 2), "TPU v5 lite": (197e12, 197e12 / 2), "TPU v5e": (197e12, 197e12 / 2),
    "TPU v5p": (459e12, 459e12 / 2), "TPU v6 lite": (918e12, 918e12 / 2), "TPU v6e": (918e12, 918e12 / 2),
    "NVIDIA A100": (312e12, 156e12), "NVIDIA H100": (989e12, 494e12), "NVIDIA H200": (989e12, 494e12),
    "NVIDIA B200": (2250e12, 1100e12),
}


def flops_per_token(num_layers: int, width: int, seq_len: int, matmul_params: int) -> float:
    """Training FLOPs (forward + backward) per token."""
    return 6.0 * matmul_params + 12.0 * num_layers * seq_len * width


class Throughput:
    """Tokens/s and MFU over the steps since the last reading. A step counts the positions its batch
    ran: a batch padded to a length bucket (tasks/ctc.py) says how many as "padded_positions", any
    other batch runs tokens_per_example."""

    def __init__(self, batch_size: int, num_layers: int, width: int, matmul_params: int, tokens_per_example: int,
                 peak_flops: float):
        self.batch_size, self.num_layers, self.width, self.matmul_params = batch_size, num_layers, width, matmul_params
        self.default, self.peak = self.step_work(tokens_per_example), peak_flops
        self.restart()

    def step_work(self, seq_len: int) -> tuple[int, float]:
        """(tokens, model FLOPs) of one step whose examples run seq_len positions."""
        tokens = self.batch_size * seq_len
        return tokens, tokens * flops_per_token(self.num_layers, self.width, seq_len, self.matmul_params)

    def add(self, host_batch: dict) -> None:
        positions = host_batch.get("padded_positions")
        tokens, flops = self.default if positions is None else self.step_work(int(positions[0]))
        self.tokens, self.flops = self.tokens + tokens, self.flops + flops

    def restart(self) -> None:
        """Counts from now (after an evaluation or a checkpoint: their time is not training time)."""
        self.start, self.tokens, self.flops = time.perf_counter(), 0, 0.0

    def read(self) -> tuple[float, float]:
        """(tokens/s, MFU) since the last restart."""
        dt = time.perf_counter() - self.start
        return self.tokens / dt, self.flops / dt / self.peak


def measure_matmul_peak(dtype: Any, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul on the default device, inputs in dtype, f32 accumulation."""
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def peak_flops_per_device(dtype_name: str, cache_dir: str | None = "~/.cache/bigmodel_jax") -> float:
    kind = jax.devices()[0].device_kind
    for name, (bf16, f32) in PEAK_FLOPS.items():
        if kind.startswith(name):
            return bf16 if dtype_name == "bfloat16" else f32
    cache = Path(os.path.expanduser(cache_dir)) / "peak_flops.json" if cache_dir else None
    key = f"{jax.devices()[0].platform}:{kind}:{os.cpu_count()}:{dtype_name}"
    table = {}
    if cache and cache.exists():
        try:
            table = json.loads(cache.read_text())
        except ValueError:
            table = {}
    if key not in table:
        table[key] = measure_matmul_peak(jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(table, indent=1))
    return table[key]


class MetricsWriter:
    """TensorBoard events + metrics.jsonl in the workdir; a no-op on processes other than 0.

    from_step: the step the run starts (or resumes) at. What an earlier, killed process logged
    after it is dropped (metrics.jsonl rewritten atomically; TensorBoard told to purge those
    events), as are earlier "test" rows, which a finishing run writes again: so a run killed and
    resumed any number of times leaves the same rows as one that never stopped."""

    def __init__(self, workdir: str | Path, enabled: bool = True, from_step: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        path = Path(workdir) / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines(keepends=True) if _keep(line, from_step)]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(kept))
            tmp.replace(path)
        self.tb = SummaryWriter(str(Path(workdir) / "tb"), purge_step=from_step + 1)
        self.jsonl = open(path, "a", buffering=1)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": int(step), "split": split, **clean, "time": time.time()}) + "\n")
        for k, v in clean.items():
            if np.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
            self.jsonl.close()


def _keep(line: str, from_step: int) -> bool:
    try:
        row = json.loads(line)
    except ValueError:  # a line cut short by a kill
        return False
    return row.get("step", 0) <= from_step and row.get("split") != "test"


def make_progress(enabled: bool):
    """A rich progress bar with live loss / tokens/s / MFU fields (None when disabled)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  "
                               "{task.fields[tps]} tok/s  MFU {task.fields[mfu]}"),
                    TimeRemainingColumn(), refresh_per_second=2)


def write_summary(workdir: Path, result: Any, step: int, sizes: dict[str, int], seconds: float) -> None:
    """summary.json (result: train.TrainResult): written once a run has finished (its last step or an
    early stop), so a sweep or a report tells finished runs from interrupted ones; the curves stay in
    metrics.jsonl.
    sizes: parameter counts and bytes (global, all devices); peak_rss_mb is this process's peak
    resident memory (parameters, optimizer, activations, XLA's buffers and the data together)."""
    last_val = result.val_metrics[max(result.val_metrics)] if result.val_metrics else {}
    summary = {"step": step, "finished": True, "stopped_early": result.stopped_early, **sizes,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                    / (2**20 if sys.platform == "darwin" else 1024), 1),  # bytes there, KiB on Linux
               "seconds": round(seconds, 2), "eval_metric": result.metric, "best_metric": result.best_metric,
               "best_step": result.best_step, "validation": last_val, "test": result.test_metrics}
    tmp = workdir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float) + "\n")
    tmp.replace(workdir / "summary.json")  # never half-written
