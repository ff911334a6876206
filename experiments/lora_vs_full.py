"""LoRA against full finetuning on the same task, start and step budget (issue 20; seed §8.2).

    python -m experiments.lora_vs_full                      # genre and polarity from MiniLM
    python -m experiments.lora_vs_full --tasks plays        # SmolLM2-135M adapted to the plays (40 steps)

Each task's two arms start from the same pretrained weights and train the same steps of the same
batches; each arm's learning rate is chosen from its own small grid on validation (LoRA wants a
larger one: its B starts at zero and its updates are scaled by alpha / rank), then the chosen
rate runs with every seed. LoRA: rank 8, alpha 16, adapters on the attention's query, key, value
and output and the MLP's up and down (plus gate for Llama); the classifier's fresh head trains in
full beside them. The table: parameters trained, optimizer-state bytes (from the run's state),
peak resident memory of the training process (parameters, optimizer, activations, XLA's buffers
and the data together), training step time (the mean over the logged intervals after the first,
which holds compilation) and the task metric (test accuracy; validation loss on the held-out plays).
Points run two at a time, one core each, so the arms' step times are measured alike (the plays'
one at a time on both cores: one point per arm).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments import arms, report, runs

CLS = str(arms.ROOT / "configs" / "bert_cls.py")
LORA = {"model.lora.rank": 8, "model.lora.alpha": 16}
# task -> (config, shared overrides, {arm: (its overrides, learning rates tried)}, tuning metric, reported metric)
TASKS = {
    "genre": (CLS, {"init_from": "minilm", "data.max_train_examples": 4000, "train.num_steps": 500,
                    "train.batch_size": 32, "train.eval_every": 50, "train.checkpoint_every": 50,
                    "train.eval_batches": 16, "train.patience": 4, "optim.warmup_steps": 50,
                    "train.restore_best": True},
              # LoRA without early stopping: its validation accuracy sits at the majority class for ~200
              # steps before it climbs, and patience 4 stopped both rates there (full never stopped)
              {"full": ({}, [5e-5, 1e-4]), "lora": ({**LORA, "train.patience": 0}, [5e-4, 1e-3])},
              "val/accuracy", "test/accuracy"),
    "polarity": (CLS + ":polarity", {"init_from": "minilm", "train.restore_best": True},
                 {"full": ({}, [3e-5, 1e-4, 3e-4]), "lora": (LORA, [3e-4, 1e-3, 3e-3])}, "val/accuracy",
                 "test/accuracy"),
    # SmolLM2-135M on the plays; "untrained" is one step at the warmup's first learning rate, 0: the
    # pretrained weights evaluated through the same path
    "plays": (str(arms.ROOT / "configs" / "gpt_smollm2_plays.py"),
              {"train.num_steps": 40, "train.eval_every": 20, "train.checkpoint_every": 20, "train.eval_batches": 8,
               "optim.warmup_steps": 5},
              {"untrained": ({"train.num_steps": 1}, [1e-4]), "full": ({}, [1e-4]), "lora": (LORA, [1e-3])},
              "val/loss", "val/loss"),
}
SEEDS = {"genre": [0], "polarity": [0, 1, 2], "plays": [0]}
ONE_AT_A_TIME = {"plays"}  # one point per arm: it gets both cores (and its step time is taken alone)


def arm_rows(workdir: Path, task: str, metric: str) -> list[dict]:
    """One row per arm: the chosen learning rate's runs, their sizes, memory, speed and metric."""
    rows = []
    for arm in TASKS[task][2]:
        folder = workdir / task / arm
        done = [r for r in runs.find_runs([folder]) if r.status == "done"]
        lr = arms.best_value(folder, "optim.lr", TASKS[task][3])
        chosen = [r for r in done if r.config.get("optim.lr") == lr]
        if not chosen:
            continue
        s = chosen[0].summary
        tokens_per_step = chosen[0].config["train.batch_size"] * chosen[0].config["data.seq_len"]
        values = [runs.metric_values(r, metric)[1 if metric.startswith("val") else 0] for r in chosen]
        rows.append({"arm": arm, "lr": lr, "params": s["params"], "trained": s["trained_params"],
                     "optimizer_mb": s["optimizer_bytes"] / 2**20,
                     "peak_rss_mb": statistics.fmean(r.summary["peak_rss_mb"] for r in chosen),
                     "step_ms": statistics.fmean(1000 * tokens_per_step / r.speed for r in chosen),
                     "metric": report.mean_std(values), "n": len(values)})
    return rows


def table(task: str, rows: list[dict], metric: str) -> str:
    out = [f"**{task}** ({metric}, mean ± std over seeds)", "",
           "| arm | lr | params trained | optimizer state | peak RSS | step time (under load) | " + metric + " |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        step = "-" if r["arm"] == "untrained" else f"{r['step_ms']:,.0f} ms"  # one step: compilation
        lr = "-" if r["arm"] == "untrained" else f"{r['lr']:g}"
        out.append(f"| {r['arm']} | {lr} | {r['trained']:,} of {r['params']:,} "
                   f"({100 * r['trained'] / r['params']:.2f}%) | {r['optimizer_mb']:.1f} MiB | "
                   f"{r['peak_rss_mb']:,.0f} MiB | {step} | {report.fmt(*r['metric'])} (n={r['n']}) |")
    by_arm = {r["arm"]: r for r in rows}
    if "full" in by_arm and "lora" in by_arm:
        full, lo = by_arm["full"], by_arm["lora"]
        out.append(f"\nLoRA / full: optimizer state {lo['optimizer_mb'] / full['optimizer_mb']:.4f}x, peak RSS "
                   f"{lo['peak_rss_mb'] / full['peak_rss_mb']:.2f}x, step time {lo['step_ms'] / full['step_ms']:.2f}x.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = arms.parser("python -m experiments.lora_vs_full", __doc__, "runs/ablations/lora_vs_full")
    p.add_argument("--tasks", default="genre,polarity", help=f"comma-separated, of {sorted(TASKS)}")
    args = p.parse_args(argv)
    chosen = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := [t for t in chosen if t not in TASKS]:
        p.error(f"unknown task(s) {unknown}; valid: {sorted(TASKS)}")
    workdir = Path(args.workdir)
    sections, info = [], {}
    for task in chosen:
        config, shared, arm_settings, tune_metric, metric = TASKS[task]
        for arm, (overrides, lrs) in arm_settings.items():
            arms.tuned_arm(workdir / task / arm, config, "optim.lr", lrs, {**shared, **overrides}, SEEDS[task],
                           1 if task in ONE_AT_A_TIME else args.jobs, tune_metric)
        report.build([workdir / task / arm for arm in arm_settings], tune_metric, ["optim.lr"], workdir / task)
    for task, (_, _, _, _, metric) in TASKS.items():  # the summary holds every task run so far
        if (workdir / task).is_dir():
            info[task] = arm_rows(workdir, task, metric)
            sections.append(table(task, info[task], metric))
    text = "\n\n".join(sections) + "\n\nEvery run: results.md in each task's folder.\n\n"
    arms.write_summary(workdir, "LoRA against full finetuning", text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
