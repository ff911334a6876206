"""What does user-level differential privacy cost FedAvg on Shakespeare? (McMahan et al. 2018; seed §8.4)

    python -m experiments.federated_dp [--full]

DP-FedAvg (configs/fed_shakespeare.py:dp): each round samples every client with probability C
(Poisson), clips each client's update to L2 norm S, adds Gaussian noise of standard deviation z * S
to the sum and divides by the expected number of clients C * N. One run per noise multiplier z, the
same rounds, learning rate and seed; plus FedAvg without DP and with clipping alone (z = 0, no
privacy: it isolates what clipping costs). epsilon at delta = 1 / N^1.1 comes from dp-accounting's
RDP accountant over the rounds run. Writes summary.md, results.* and accuracy_vs_epsilon.png.
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments import arms, plots

CONFIG = str(arms.ROOT / "configs" / "fed_shakespeare.py")
METRIC = "val/accuracy"
CLIP = 0.5
NOISES = [0.0, 0.1, 0.3, 1.0]  # z; 0 = clipping alone
# client_lr 0.1: the best FedAvg learning rate of experiments/federated.py's sweep on the same clients
QUICK = {"fed.rounds": 30, "fed.client_fraction": 0.02, "fed.local_epochs": 1, "fed.local_batch": 10,
         "fed.client_lr": 0.1, "fed.eval_every": 10, "fed.eval_examples": 4096, "fed.checkpoint_every": 10}
FULL = dict(QUICK, **{"fed.rounds": 200, "fed.client_fraction": 0.05, "fed.eval_examples": 8192})


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.federated_dp", __doc__, "runs/ablations/federated_dp").parse_args(argv)
    workdir = Path(args.workdir)
    budget = FULL if args.full else QUICK
    base, by_noise = arms.privacy_arms(workdir, CONFIG, "dp.noise_multiplier", NOISES, {"dp.clip": CLIP}, budget,
                                       args.jobs, METRIC)
    base_acc = base.summary["test"]["accuracy"] if base else math.nan
    rows = ["| setting | noise z | epsilon | final test accuracy |", "|---|---:|---:|---:|",
            f"| FedAvg, no DP | - | - | {base_acc:.4f} |"]
    points, info = [], {"no_dp": base_acc, "clip": CLIP, "budget": budget}
    for z in NOISES:
        r = by_noise.get(z)
        if r is None:
            rows.append(f"| DP-FedAvg, clip {CLIP} | {z:g} | - | failed (see results.md) |")
            continue
        eps, acc = r.summary.get("epsilon", math.inf), r.summary["test"]["accuracy"]
        rows.append(f"| {'clipping alone' if z == 0 else 'DP-FedAvg'}, clip {CLIP} | {z:g} | "
                    f"{eps:.3g} | {acc:.4f} |")
        points.append((eps, acc, z))
        info[f"z={z:g}"] = {"epsilon": eps, "accuracy": acc, "delta": r.summary.get("delta")}
    clip_only = info.get("z=0", {}).get("accuracy", math.nan)
    plots.plot_against_epsilon([p for p in points if p[2] > 0], {"FedAvg, no DP": base_acc,
                                                                 "clipping alone": clip_only},
                               "test accuracy", workdir / "accuracy_vs_epsilon.png")
    text = "\n".join(rows) + "\n\nBudget: " + ", ".join(f"{k.removeprefix('fed.')}={v}" for k, v in budget.items())
    text += ". Every run: results.md; accuracy_vs_epsilon.png.\n\n"
    arms.write_summary(workdir, "DP-FedAvg on Shakespeare: accuracy against epsilon", text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
