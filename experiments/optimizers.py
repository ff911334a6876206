"""Which optimizer trains the character GPT best, each at its own best learning rate? (seed §4.2.3)

    python -m experiments.optimizers            # quick: 400 steps, 3-4 learning rates each
    python -m experiments.optimizers --full     # nanoGPT's baby GPT budget (2,000 steps), 4 learning rates each

SGD, SGD with momentum 0.9, Adam and AdamW (decoupled weight decay 0.1 on matrices) train the same
model (configs/gpt_char.py:baby: 4 layers, width 128, 64 characters of context, batch 12) on the
same batches with the same schedule (100 warmup steps, cosine to 10%) and gradient clipping at 1.
A fair comparison tunes each one's learning rate: a grid of three or four per optimizer
(four each with --full), seed 0; then the best rate of each runs with seeds 0, 1, 2. The table reports the
validation loss (nats per character) as mean ± std over those seeds; a best rate at the edge of its
grid is flagged, since the optimum may lie beyond it.

Writes into --workdir: one sweep folder per optimizer, results.* and plots of all runs (loss against
the learning rate, one line per optimizer), curves_best.png (each optimizer at its best rate), and
summary.md.
"""

from __future__ import annotations

from pathlib import Path

from experiments import arms, plots, report, runs

CONFIG = str(arms.ROOT / "configs" / "gpt_char.py") + ":baby"
METRIC = "val/loss"
# name -> (overrides, learning-rate grid quick, full): plain SGD needs rates ~100x Adam's
OPTIMIZERS = {
    "sgd": ({"optim.name": "sgd", "optim.momentum": 0.0, "optim.weight_decay": 0.0},
            [0.1, 0.3, 1.0], [0.1, 0.3, 1.0, 3.0]),
    "sgd_momentum": ({"optim.name": "sgd", "optim.momentum": 0.9, "optim.weight_decay": 0.0},
                     [0.01, 0.03, 0.1, 0.3], [0.01, 0.03, 0.1, 0.3]),
    "adam": ({"optim.name": "adam", "optim.weight_decay": 0.0}, [1e-3, 3e-3, 1e-2], [3e-4, 1e-3, 3e-3, 1e-2]),
    "adamw": ({"optim.name": "adamw", "optim.weight_decay": 0.1}, [1e-3, 3e-3, 1e-2], [3e-4, 1e-3, 3e-3, 1e-2]),
}
QUICK = {"train.num_steps": 400, "train.eval_every": 50, "train.eval_batches": 20, "train.log_every": 25,
         "train.checkpoint_every": 200}
FULL = {"train.eval_every": 250, "train.checkpoint_every": 500}


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.optimizers", __doc__, "runs/ablations/optimizers").parse_args(argv)
    workdir = Path(args.workdir)
    budget = FULL if args.full else QUICK
    seeds = [0, 1, 2]
    best, edges = {}, []
    for name, (overrides, quick_lrs, full_lrs) in OPTIMIZERS.items():
        lrs = full_lrs if args.full else quick_lrs
        best[name] = arms.tuned_arm(workdir / name, CONFIG, "optim.lr", lrs, {**overrides, **budget}, seeds,
                                    args.jobs, METRIC)
        if best[name] in (lrs[0], lrs[-1]):
            edges.append(f"{name}'s best rate {best[name]:g} is at the edge of its grid {lrs}")

    dirs = [workdir / name for name in OPTIMIZERS]
    report.build(dirs, METRIC, ["optim.lr"], workdir)
    best_runs = [r for r in runs.find_runs(dirs) if r.config.get("optim.lr") == best[r.sweep]]
    plots.plot_curves(best_runs, [], METRIC, workdir / "curves_best.png")
    rows = ["| optimizer | best lr (grid) | validation loss, best lr (mean ± std, n) | final train loss |",
            "|---|---|---:|---:|"]
    info = {}
    for name, (_, quick_lrs, full_lrs) in OPTIMIZERS.items():
        mine = [r for r in best_runs if r.sweep == name and r.status == "done"]
        val = report.mean_std([runs.metric_values(r, METRIC)[1] for r in mine])
        train = report.mean_std([runs.metric_values(r, "train/loss")[0] for r in mine])
        grid = full_lrs if args.full else quick_lrs
        rows.append(f"| {name} | {best[name]:g} ({', '.join(f'{x:g}' for x in grid)}) | "
                    f"{report.fmt(*val)} (n={len(mine)}) | {report.fmt(*train)} |")
        info[name] = {"best_lr": best[name], "val_loss": val, "train_loss": train, "n": len(mine)}
    text = "\n".join(rows) + "\n\n" + "".join(f"Note: {e}.\n" for e in edges)
    text += "\nEvery run (each learning rate): results.md; plots: val_loss_vs_optim.lr.png, curves_best.png.\n\n"
    arms.write_summary(workdir, "Optimizers at their best learning rates (character GPT)", text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
