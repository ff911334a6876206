"""Step time and per-device memory of every parallel mode, remat policy and accumulation setting,
for one GPT train step on 8 fake CPU devices, in one process.

    python benchmarks/parallel_modes.py [--size small|d256] [--steps 10]

Columns:
- step ms: the fastest of --steps steps (after a compile and a warm-up step; the minimum is the
  figure least moved by other load on a shared machine). Eight fake devices
  share this machine's cores, so a mesh row measures the partitioned program plus its
  collectives, not a speed-up; on real chips each device has its own compute.
- state MB/device: params + AdamW state actually held by the busiest device (its shards).
- XLA peak MB/device: arguments + outputs + temporaries of the compiled per-device program, from
  XLA's memory analysis. XLA:CPU schedules without a memory budget, so its temporaries do not
  shrink with remat here the way they do on GPU/TPU; the next column is what remat controls.
- kept MB: the activations autodiff keeps for the backward pass (the arrays jax.vjp's backward
  function closes over, less the params, for the loss on the whole batch; per device, divide by
  data x fsdp).
Synthetic token batches (timing does not depend on the values).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bigmodel_jax import config as config_lib, sharding, tasks, train  # noqa: E402
from bigmodel_jax.config import load_config_file  # noqa: E402

# name: (layers, width, heads, mlp, seq_len, batch, vocab)
SIZES = {"small": (4, 128, 8, 512, 128, 16, 512), "d256": (4, 256, 8, 1024, 256, 16, 2048)}

ROWS = [  # (group, label, overrides, devices)
    ("mode", "1 device", {"parallel.data": 1}, 1),
    ("mode", "jit data 8", {"parallel.data": 8}, 8),
    ("mode", "jit data 2 x fsdp 4", {"parallel.data": 2, "parallel.fsdp": 4}, 8),
    ("mode", "jit fsdp 8", {"parallel.data": 1, "parallel.fsdp": 8}, 8),
    ("mode", "jit data 2 x fsdp 2 x tensor 2", {"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2}, 8),
    ("mode", "jit tensor 8", {"parallel.data": 1, "parallel.tensor": 8}, 8),
    ("mode", "pmap 8", {"parallel.mode": "pmap", "parallel.data": -1}, 8),
    ("remat", "1 device, remat none", {"parallel.data": 1, "model.remat": "none"}, 1),
    ("remat", "1 device, remat dots_saveable", {"parallel.data": 1, "model.remat": "dots_saveable"}, 1),
    ("remat", "1 device, remat full", {"parallel.data": 1, "model.remat": "full"}, 1),
    ("accum", "1 device, accum 1", {"parallel.data": 1, "train.grad_accum_steps": 1}, 1),
    ("accum", "1 device, accum 2", {"parallel.data": 1, "train.grad_accum_steps": 2}, 1),
    ("accum", "1 device, accum 4", {"parallel.data": 1, "train.grad_accum_steps": 4}, 1),
    ("accum", "jit 2 x 2 x 2, accum 2", {"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2,
                                         "train.grad_accum_steps": 2}, 8),
]


def make_config(size: str, overrides: dict):
    layers, width, heads, mlp, seq, batch, vocab = SIZES[size]
    cfg = load_config_file(str(ROOT / "configs" / "gpt_char.py"))
    base = {"model.num_layers": layers, "model.width": width, "model.num_heads": heads, "model.mlp_dim": mlp,
            "model.max_len": seq, "model.vocab_size": vocab, "model.dtype": "float32", "data.seq_len": seq,
            "train.batch_size": batch, "train.grad_accum_steps": 1, "compilation_cache_dir": ""}
    base.update(overrides)
    return config_lib.apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


def kept_bytes(cfg) -> int:
    task = tasks.get(cfg.task)
    graphdef, abstract, _ = tasks.abstract_model(cfg)
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)
    b, t = cfg.train.batch_size // cfg.train.grad_accum_steps, cfg.data.seq_len
    batch = {"inputs": jnp.zeros((b, t), jnp.int32), "targets": jnp.zeros((b, t), jnp.int32)}

    def loss(p):
        return task.loss_fn(nnx.merge(graphdef, p), batch, nnx.Rngs(dropout=jax.random.PRNGKey(0)))[0]

    n_params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    _, backward = jax.vjp(loss, params)  # the backward function closes over what the forward kept
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(backward)) - n_params


def measure(size: str, overrides: dict, num_devices: int, steps: int) -> dict:
    cfg = make_config(size, overrides)
    config_lib.validate(cfg, num_devices)
    task = tasks.get(cfg.task)
    devices = jax.devices()[:num_devices]
    mesh = sharding.make_mesh(sharding.mesh_shape(cfg, num_devices), devices)
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = train.init_state(cfg, task, mesh)
    state_mb = (sharding.bytes_per_device(params) + sharding.bytes_per_device(opt_state)) / 1e6
    step = train.make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.data.seq_len + 1)).astype(np.int32)
    batch = sharding.put_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, mesh,
                               per_device=cfg.parallel.mode == "pmap")
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, batch, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak_mb = None
    if mem is not None:
        peak_mb = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                   - mem.alias_size_in_bytes) / 1e6
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        params, opt_state, m = step(params, opt_state, batch, jnp.int32(i))
        jax.block_until_ready(m["loss"])
        if i:  # the first call pays for dispatch setup
            times.append(time.perf_counter() - t0)
    ms = 1000 * min(times)
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    return {"ms": ms, "tok_s": tokens_per_step / (ms / 1000), "state_mb": state_mb, "peak_mb": peak_mb,
            "kept_mb": kept_bytes(cfg) / 1e6, "compile_s": compile_s, "loss": float(m["loss"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small", choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    layers, width, heads, mlp, seq, batch, vocab = SIZES[args.size]
    print(f"GPT {layers} layers x width {width} ({heads} heads, MLP {mlp}), seq {seq}, batch {batch}, vocab {vocab}, "
          f"f32; {jax.device_count()} fake CPU devices on {os.cpu_count()} cores; jax {jax.__version__}\n")
    print("| group | setting | step ms | tokens/s | state MB/device | XLA peak MB/device | kept MB | compile s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for group, label, overrides, n in ROWS:
        r = measure(args.size, overrides, n, args.steps)
        base = base or r
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        print(f"| {group} | {label} | {r['ms']:.0f} | {r['tok_s']:,.0f} | {r['state_mb']:.2f} | {peak} | "
              f"{r['kept_mb']:.1f} | {r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
