"""A federated round two ways: the round's clients in vmapped groups (what python -m bigmodel_jax.federated
runs) against a sequential loop over the same clients, one compiled call per client (padded to its own
power-of-two bucket, so neither side recompiles per client).

    python benchmarks/federated.py [--config FILE] [--fraction 0.05] [--epochs 1] [--batch 10] [--repeats 3]
        [--set KEY=VALUE ...]

The default model and data are configs/fed_shakespeare.py's (1,273 clients); --config configs/fed_genre.py
times the genre classifier's rounds. Prints clients/s and
rounds/s of each, the fastest of --repeats alternating rounds after a warm-up round each, and checks
that both give the same summed update.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bigmodel_jax import allocator  # noqa: E402

allocator.reexec()  # the allocator python -m bigmodel_jax.federated runs under (before jax loads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from bigmodel_jax import tasks  # noqa: E402
from bigmodel_jax.config import apply_overrides, load_config_file  # noqa: E402
from bigmodel_jax.federated import algorithms, clients, run  # noqa: E402
from bigmodel_jax.federated import tasks as fed_tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--config", default=str(ROOT / "configs" / "fed_shakespeare.py"), help="configs/fed_genre.py: "
                   "the classifier")
    p.add_argument("--set", action="append", default=[], help="a config override, e.g. model.width=64")
    args = p.parse_args()
    cfg = apply_overrides(load_config_file(args.config),
                          [f"fed.client_fraction={args.fraction}", f"fed.local_epochs={args.epochs}",
                           f"fed.local_batch={args.batch}", "fed.client_lr=0.1", *args.set])
    with tempfile.TemporaryDirectory() as tmp:
        data = fed_tasks.CLIENTS[cfg.task](cfg, Path(tmp))
    train = data.train
    cfg.model.update(data.model_overrides)
    graphdef, state = nnx.split(tasks.get(cfg.task).build_model(cfg, nnx.Rngs(params=0)), nnx.Param)
    params = nnx.to_pure_dict(state)
    stats = run.make_stats(cfg.task, graphdef)
    f = cfg.fed
    members = clients.sample_round(len(train.ids), f.client_fraction, False, cfg.seed, 0)
    key = jax.random.PRNGKey(0)
    fns: dict = {}

    def call(g):
        shape = (len(g.clients), g.n_pad)
        if shape not in fns:
            fns[shape] = jax.jit(algorithms.make_group_update(stats, f, 0.0, g.n_pad))
        return fns[shape](params, key, g.clients, g.arrays, g.num_examples, g.weights)

    def one_round(groups):
        total = None
        for g in groups:
            t = call(g)[0]
            total = t if total is None else jax.tree.map(jnp.add, total, t)
        return jax.block_until_ready(total)

    ways = {"vmapped groups": clients.round_groups(train, members, f.group_size, f.group_examples, f.min_examples),
            "sequential loop": [g for k in members for g in clients.round_groups(train, np.array([k]), 1, 1 << 30,
                                                                                   f.min_examples)]}
    totals = {name: one_round(groups) for name, groups in ways.items()}  # compiles
    a, b = (jax.tree.leaves(t) for t in totals.values())
    err = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b)) / max(float(jnp.max(jnp.abs(y))) for y in b)
    best = {name: float("inf") for name in ways}
    for _ in range(args.repeats):
        for name, groups in ways.items():
            t0 = time.perf_counter()
            one_round(groups)
            best[name] = min(best[name], time.perf_counter() - t0)
    examples = sum(train.num_examples(k) for k in members)
    print(f"{len(members)} clients, {examples:,} {data.unit} of {cfg.data.seq_len} tokens, E={f.local_epochs} "
          f"B={f.local_batch}; {len(ways['vmapped groups'])} groups vs {len(members)} calls; "
          f"summed updates agree to {err:.1e} (relative to the largest)\n")
    print("| way | s / round | clients / s | rounds / s | speed-up |\n|---|---:|---:|---:|---:|")
    for name, s in best.items():
        print(f"| {name} | {s:.2f} | {len(members) / s:.1f} | {1 / s:.3f} | {best['sequential loop'] / s:.2f}x |")


if __name__ == "__main__":
    main()
