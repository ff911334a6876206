"""What does example-level differential privacy cost a character model? (DP-SGD, Abadi et al. 2016; seed §8.4)

    python -m experiments.dp_sgd [--full]

The char GPT of configs/gpt_char.py, made small enough for many runs here (2 layers, width 128,
block 64, f32), trained on the plays with the same steps, batch, Adam learning rate and seed in
every arm: without DP; with each example's gradient clipped to norm 1 alone (no privacy: what
clipping costs); and DP-SGD at noise multipliers z (Gaussian noise z * 1 on the batch's sum of
clipped gradients). epsilon at delta = 1 / examples^1.1 comes from dp-accounting's RDP accountant
with sampling rate batch / training windows (the trainer's fixed-size shuffled batches read as
Poisson sampling, the usual approximation, said in docs/federated.md). Scored by validation loss.
Writes summary.md, results.* and loss_vs_epsilon.png.
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments import arms, plots, runs

CONFIG = str(arms.ROOT / "configs" / "gpt_char.py")
METRIC = "val/loss"
CLIP = 1.0
NOISES = [0.0, 0.5, 1.0, 2.0]  # z; 0 = clipping alone
QUICK = {"model.num_layers": 2, "model.width": 128, "model.mlp_dim": 512, "model.dtype": "float32",
         "train.num_steps": 300, "train.batch_size": 64, "train.grad_accum_steps": 4, "train.log_every": 50,
         "train.eval_every": 100, "train.eval_batches": 20, "train.checkpoint_every": 300,
         "optim.lr": 3e-3, "optim.warmup_steps": 20, "optim.clip_norm": 0.0}
FULL = dict(QUICK, **{"train.num_steps": 2000, "train.eval_every": 250, "train.eval_batches": 100,
                      "train.checkpoint_every": 1000})


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.dp_sgd", __doc__, "runs/ablations/dp_sgd").parse_args(argv)
    workdir = Path(args.workdir)
    budget = FULL if args.full else QUICK
    base, by_noise = arms.privacy_arms(workdir, CONFIG, "optim.dp_noise", NOISES, {"optim.dp_clip": CLIP}, budget,
                                       args.jobs, METRIC)

    def final(run):
        return runs.metric_values(run, METRIC)[0]

    base_loss = final(base) if base else math.nan
    rows = ["| setting | noise z | epsilon | final validation loss | tokens/s |", "|---|---:|---:|---:|---:|",
            f"| Adam, no DP | - | - | {base_loss:.4f} | {base.speed if base else math.nan:,.0f} |"]
    points, info = [], {"no_dp": base_loss, "clip": CLIP, "budget": budget}
    for z in NOISES:
        r = by_noise.get(z)
        if r is None:
            rows.append(f"| DP-SGD (Adam), clip {CLIP} | {z:g} | - | failed (see results.md) | - |")
            continue
        eps_curve = r.curves.get("train/epsilon", {})
        eps = eps_curve[max(eps_curve)] if eps_curve else math.inf
        rows.append(f"| {'clipping alone' if z == 0 else 'DP-SGD (Adam)'}, clip {CLIP} | {z:g} | {eps:.3g} | "
                    f"{final(r):.4f} | {r.speed:,.0f} |")
        points.append((eps, final(r), z))
        info[f"z={z:g}"] = {"epsilon": eps, "val_loss": final(r)}
    clip_only = info.get("z=0", {}).get("val_loss", math.nan)
    plots.plot_against_epsilon([p for p in points if p[2] > 0], {"no DP": base_loss, "clipping alone": clip_only},
                               "validation loss (nats/char)", workdir / "loss_vs_epsilon.png")
    text = "\n".join(rows) + "\n\nBudget: " + ", ".join(f"{k}={v}" for k, v in budget.items())
    text += ". Every run: results.md; loss_vs_epsilon.png.\n\n"
    arms.write_summary(workdir, "DP-SGD on the plays: validation loss against epsilon", text, info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
