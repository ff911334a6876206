"""What closes the gap when a finetuned model overfits a few labels? (seed §4.4 Q3)

    python -m experiments.overfitting            # quick: fixed strengths, seeds 0 and 1
    python -m experiments.overfitting --full     # 3 strengths per method (seed 0), the best with seeds 0, 1, 2

MiniLM (all-MiniLM-L6-v2, 22.7 M params) finetuned to tell a Shakespeare speech's genre (6 classes)
from only 200 labeled speeches (their first 32 WordPiece tokens): 16 per batch for 80 steps (6.4
passes over them; 200 steps with --full) with Adam at a constant 1e-4 after 8 warmup steps: enough
to fit the 200 labels nearly perfectly, while the validation loss turns up after ~50 steps. Arms:

- none: dropout 0, no penalty, no early stopping (the overfitting baseline);
- dropout: model.dropout (BERT's own 0.1 in the quick version);
- L2: optim.l2, a coupled penalty (strength/2) * sum(w^2) on every matrix, added to the loss gradient;
- L1: optim.l1, strength * sum|w| on every matrix (its subgradient);
- early stopping: patience 3 evaluations on validation loss, ending on the best checkpoint (the
  accuracy of 128 validation speeches moves in steps of 0.8 points: stopping on it, a first run
  stopped at the first evaluation).

Each is scored by the test split (2,481 speeches of plays' scenes none of the training speeches
comes from) and by the generalization gap: validation cross-entropy minus training cross-entropy
(its last logged value, dropout on). The curves plot shows train and validation loss per arm.
"""

from __future__ import annotations

from pathlib import Path

from experiments import arms, plots, report, runs

CONFIG = str(arms.ROOT / "configs" / "bert_cls.py")
METRIC = "val/accuracy"
NOTHING = {"model.dropout": 0.0, "optim.l1": 0.0, "optim.l2": 0.0, "train.patience": 0, "train.restore_best": False}
# arm -> (its settings, the tuned key, its values quick, full)
ARMS = {
    "none": ({}, None, [], []),
    "dropout": ({}, "model.dropout", [0.1], [0.1, 0.2, 0.3]),
    "l2": ({}, "optim.l2", [0.1], [0.01, 0.1, 1.0]),
    "l1": ({}, "optim.l1", [1e-3], [1e-4, 1e-3, 1e-2]),
    "early_stopping": ({"train.patience": 3, "train.restore_best": True, "train.eval_metric": "loss"}, None, [], []),
}
SETUP = {"init_from": "minilm", "data.max_train_examples": 200, "data.seq_len": 32, "train.batch_size": 16,
         "train.eval_every": 8, "train.eval_batches": 8, "train.log_every": 8, "train.checkpoint_every": 40,
         "optim.name": "adam", "optim.lr": 1e-4, "optim.schedule": "constant", "optim.warmup_steps": 8,
         "optim.weight_decay": 0.0}
STEPS = {"quick": 80, "full": 200}


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.overfitting", __doc__, "runs/ablations/overfitting").parse_args(argv)
    workdir = Path(args.workdir)
    mode = "full" if args.full else "quick"
    base = {**SETUP, **NOTHING, "train.num_steps": STEPS[mode]}
    seeds = [0, 1, 2] if args.full else [0, 1]
    chosen = {}
    for arm, (sets, key, quick_values, full_values) in ARMS.items():
        if key:  # the strength tuned on seed 0 (when there is a choice), then run with every seed
            values = full_values if args.full else quick_values
            chosen[arm] = (key, arms.tuned_arm(workdir / arm, CONFIG, key, values, {**base, **sets}, seeds,
                                               args.jobs, METRIC))
        else:
            arms.run_arm(workdir / arm, CONFIG, {}, {**base, **sets}, seeds, args.jobs, METRIC)
            chosen[arm] = None

    dirs = [workdir / arm for arm in ARMS]
    report.build(dirs, METRIC, [key for _, key, _, _ in ARMS.values() if key], workdir)
    chosen_runs = [r for r in runs.find_runs(dirs) if r.status == "done"
            and (chosen[r.sweep] is None or r.config.get(chosen[r.sweep][0]) == chosen[r.sweep][1])]
    plots.plot_curves(chosen_runs, [], "val/loss", workdir / "curves_chosen.png")
    rows = ["| method (strength) | test accuracy | best val accuracy | final train loss | final val loss | "
            "gap (val - train) | n |", "|---|---:|---:|---:|---:|---:|---:|"]
    info = {}
    for arm in ARMS:
        mine = [r for r in chosen_runs if r.sweep == arm]
        train = [runs.metric_values(r, "train/loss")[0] for r in mine]
        val = [runs.metric_values(r, "val/loss")[0] for r in mine]
        cols = {"test": report.mean_std([runs.metric_values(r, "test/accuracy")[0] for r in mine]),
                "val_acc": report.mean_std([runs.metric_values(r, METRIC)[1] for r in mine]),
                "train_loss": report.mean_std(train), "val_loss": report.mean_std(val),
                "gap": report.mean_std([v - t for v, t in zip(val, train)])}
        label = arm + (f" ({chosen[arm][0]}={chosen[arm][1]:g})" if chosen[arm] else "")
        rows.append(f"| {label} | " + " | ".join(report.fmt(*cols[c]) for c in cols) + f" | {len(mine)} |")
        info[arm] = {"setting": chosen[arm], **cols}
    text = "\n".join(rows) + (
        "\n\nmean ± std over seeds (a seed draws both the 200 labeled speeches and the head's init). Final = the "
        "run's last evaluation (for early stopping: the step it stopped at; its test accuracy uses the best "
        "checkpoint). Validation: 128 speeches; test: 2,481.\n\nPlots: curves_chosen.png (train and validation "
        "loss per method), curves.png (every run).\n\n")
    arms.write_summary(workdir, "Overfitting a few labels: dropout, L2, L1, early stopping (MiniLM, 200 labels)",
                       text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
