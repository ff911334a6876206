"""How many rounds do FedSGD and FedAvg need on Shakespeare, by speaking role and IID? (seed §8.3)

    python -m experiments.federated            # quick: the budget in QUICK below
    python -m experiments.federated --full     # longer runs, the paper's E = 5

McMahan et al. (2017, Table 2) train a 2-layer LSTM on 1,146 Shakespeare roles: FedAvg (E = 5,
B = 10, C = 0.1) reaches 54% next-character test accuracy in 41 rounds on the role (non-IID) split
against 3,906 for FedSGD, and 192 vs 2,488 on the IID control. Here our small character GPT
(configs/fed_shakespeare.py) runs the same four arms on our 1,273 roles with a fraction C of the
clients per round; each algorithm's client learning rate is tuned on seed 0 over a small grid on the
role split (the paper tunes it too; the quick IID control reuses that rate, --full tunes it again),
the best rate then runs every seed. The table gives the rounds to target test
accuracies that this budget can reach (the first evaluation at or above it; '>R' when it never does),
the final accuracy, and seconds per round on this machine (two runs at a time, a core each).

Writes into --workdir: one sweep folder per arm, results.* of all runs, curves.png (test accuracy
against rounds, the arms at their best rate) and summary.md.
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments import arms, plots, report, runs

CONFIG = str(arms.ROOT / "configs" / "fed_shakespeare.py")
METRIC = "val/accuracy"
ARMS = {  # name -> overrides
    "fedsgd_role": {"fed.algorithm": "fedsgd", "fed.local_batch": 0, "data.partition": "role"},
    "fedavg_role": {"fed.algorithm": "fedavg", "fed.local_batch": 10, "data.partition": "role"},
    "fedsgd_iid": {"fed.algorithm": "fedsgd", "fed.local_batch": 0, "data.partition": "iid"},
    "fedavg_iid": {"fed.algorithm": "fedavg", "fed.local_batch": 10, "data.partition": "iid"},
}
LRS = {"fedsgd": [0.03, 0.1, 0.3, 1.0], "fedavg": [0.1, 0.3, 0.6]}  # client learning rates tuned on seed 0
QUICK = {"budget": {"fed.rounds": 60, "fed.client_fraction": 0.02, "fed.local_epochs": 1, "fed.eval_every": 5,
                    "fed.eval_examples": 4096, "fed.checkpoint_every": 20},
         "targets": [0.25, 0.30, 0.35, 0.40], "seeds": [0]}
FULL = {"budget": {"fed.rounds": 200, "fed.client_fraction": 0.05, "fed.local_epochs": 5, "fed.eval_every": 5,
                   "fed.eval_examples": 8192, "fed.checkpoint_every": 20},
        "targets": [0.35, 0.40, 0.45, 0.50], "seeds": [0, 1]}


def rounds_to(run: runs.Run, target: float) -> int | None:
    """The first evaluated round at or above the target accuracy."""
    curve = run.curves.get("validation/accuracy", {})
    return next((r for r in sorted(curve) if curve[r] >= target), None)


def compare(args, config: str, arm_overrides: dict[str, dict], lrs: dict[str, list[float]], setup: dict,
            title: str, notes: str = "") -> dict:
    """Runs the arms ("<algorithm>_<partition>": overrides), each algorithm's client rate tuned on
    the role split; writes the report, curves.png and summary.md (title, the rounds-to-target table,
    notes); returns summary.json's numbers."""
    workdir = Path(args.workdir)
    budget, targets, seeds = setup["budget"], setup["targets"], setup["seeds"]
    best = {}
    for name, overrides in arm_overrides.items():
        algorithm, partition = name.split("_")
        # the IID control reuses its algorithm's rate tuned on the role split (--full tunes it again)
        grid = lrs[algorithm] if partition == "role" or args.full else [best[f"{algorithm}_role"]]
        best[name] = arms.tuned_arm(workdir / name, config, "fed.client_lr", grid, {**overrides, **budget}, seeds,
                                    args.jobs, METRIC)
    dirs = [workdir / name for name in arm_overrides]
    report.build(dirs, METRIC, ["fed.client_lr"], workdir)
    best_runs = [r for r in runs.find_runs(dirs) if r.config.get("fed.client_lr") == best[r.sweep]]
    plots.plot_curves(best_runs, [], METRIC, workdir / "curves.png")
    rounds = budget["fed.rounds"]
    rows = ["| arm | client lr (grid) | " + " | ".join(f"rounds to {t:.0%}" for t in targets)
            + " | final test accuracy | s / round |", "|---|---|" + "---:|" * (len(targets) + 2)]
    info = {"targets": targets, "budget": budget}
    for name in arm_overrides:
        mine = [r for r in best_runs if r.sweep == name and r.status == "done"]
        reached = {t: [rounds_to(r, t) for r in mine] for t in targets}
        shown = [", ".join(str(x) if x is not None else f">{rounds}" for x in reached[t]) or "-" for t in targets]
        acc = report.mean_std([r.summary.get("test", {}).get("accuracy", math.nan) for r in mine])
        speed = report.mean_std([r.summary.get("seconds", math.nan) / rounds for r in mine])
        grid = ", ".join(f"{x:g}" for x in lrs[name.split("_")[0]]) if "role" in name or args.full else "from role"
        rows.append(f"| {name} | {best[name]:g} ({grid}) | " + " | ".join(shown)
                    + f" | {report.fmt(*acc)} (n={len(mine)}) | {speed[0]:.1f} |")
        info[name] = {"client_lr": best[name], "rounds_to": {str(t): reached[t] for t in targets}, "accuracy": acc,
                      "seconds_per_round": speed}
    text = "\n".join(rows) + "\n\n" + notes
    text += ("Budget: " + ", ".join(f"{k.removeprefix('fed.')}={v}" for k, v in budget.items())
             + ". Every run: results.md; curves.png (test accuracy against rounds).\n\n")
    arms.write_summary(workdir, title, text, info, args)
    return info


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.federated", __doc__, "runs/ablations/federated").parse_args(argv)
    compare(args, CONFIG, ARMS, LRS, FULL if args.full else QUICK, "FedSGD vs FedAvg on Shakespeare, by role and IID")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
