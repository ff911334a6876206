"""Cross-entropy or mean squared error for classification? (seed §4.2.2)

    python -m experiments.losses            # quick: 600 steps per run
    python -m experiments.losses --full     # the config's 3,000 steps, 4 learning rates each

The same ViT (configs/vit_digits.py: 4 layers, width 128, 2x2 patches of scikit-learn's 8x8 digits,
mixup and label smoothing) trains with train.loss=cross_entropy or train.loss=mse (the squared
error between the softmax probabilities and the target vector, summed over classes: the Brier
score, the seed's (y - y_hat)^2 with y_hat the predicted probabilities). Same model, data, batches
and budget; each loss at its own best learning rate from a small grid (seed 0), then that rate with
seeds 0, 1, 2. Validation is scored with cross-entropy and accuracy whichever loss trained; the test
split is scored once, with the params of the best validation accuracy.
"""

from __future__ import annotations

from pathlib import Path

from experiments import arms, plots, report, runs

CONFIG = str(arms.ROOT / "configs" / "vit_digits.py")
METRIC = "val/accuracy"
LOSSES = ("cross_entropy", "mse")
LRS = {"quick": [3e-4, 1e-3, 3e-3], "full": [3e-4, 1e-3, 3e-3, 1e-2]}
QUICK = {"train.num_steps": 600, "train.eval_every": 50, "train.log_every": 50, "train.checkpoint_every": 300,
         "train.patience": 0, "optim.warmup_steps": 50}
FULL = {"train.patience": 0}  # every run the whole budget: the same budget for both losses


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.losses", __doc__, "runs/ablations/losses").parse_args(argv)
    workdir = Path(args.workdir)
    budget, lrs = (FULL, LRS["full"]) if args.full else (QUICK, LRS["quick"])
    best = {loss: arms.tuned_arm(workdir / loss, CONFIG, "optim.lr", lrs, {"train.loss": loss, **budget}, [0, 1, 2],
                                 args.jobs, METRIC) for loss in LOSSES}

    dirs = [workdir / loss for loss in LOSSES]
    report.build(dirs, METRIC, ["optim.lr"], workdir)
    best_runs = [r for r in runs.find_runs(dirs) if r.config.get("optim.lr") == best[r.sweep]]
    plots.plot_curves(best_runs, [], METRIC, workdir / "curves_best.png")
    rows = ["| training loss | best lr (grid) | test accuracy | best validation accuracy | validation cross-entropy "
            "(final) | n |", "|---|---|---:|---:|---:|---:|"]
    info = {}
    for loss in LOSSES:
        mine = [r for r in best_runs if r.sweep == loss and r.status == "done"]
        test = report.mean_std([runs.metric_values(r, "test/accuracy")[0] for r in mine])
        val = report.mean_std([runs.metric_values(r, METRIC)[1] for r in mine])
        ce = report.mean_std([runs.metric_values(r, "val/loss")[0] for r in mine])
        rows.append(f"| {loss} | {best[loss]:g} ({', '.join(f'{x:g}' for x in lrs)}) | {report.fmt(*test)} | "
                    f"{report.fmt(*val)} | {report.fmt(*ce)} | {len(mine)} |")
        info[loss] = {"best_lr": best[loss], "test_accuracy": test, "val_accuracy": val, "val_cross_entropy": ce}
    text = "\n".join(rows) + "\n\nmean ± std over seeds 0, 1, 2 at each loss's best learning rate; the test " \
        "split (360 digits) scored with the params of the best validation accuracy.\n"
    text += "Every run: results.md; plots: val_accuracy_vs_optim.lr.png, curves_best.png.\n\n"
    arms.write_summary(workdir, "Cross-entropy vs MSE for classification (ViT on 8x8 digits)", text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
