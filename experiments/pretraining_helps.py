"""Does pretraining help, and how much as labels grow scarce? A learning curve (seed §3.2, §4.4 Q2).

    python -m experiments.pretraining_helps                  # quick: 25, 100, 400, 1,600 labels, seeds 0 and 1
    python -m experiments.pretraining_helps --full           # 25 ... 4,000 labels, seeds 0, 1, 2
    python -m experiments.pretraining_helps --mlm-workdir runs/bert_mlm   # reuse a finished MLM run

Task: word sentiment (configs/bert_cls.py:vader_sign): a VADER lexicon token ("wonderful", "grim",
":-(") -> the sign of its human-rated valence, trained on n of the 6,072 training tokens drawn by
the seed (which also draws the initialization), validated on 128 tokens (512 with --full) and tested
on all 725 test tokens (58% negative). Meaning is what a pretrained vocabulary brings and spelling
cannot, so the curve separates the learners where labels are few. (Genre from a Shakespeare speech,
the first task tried, sits near its majority class for every learner below ~1,000 labels at this
budget: docs/experiments.md.) Quick: 80 steps of 16; --full: 300 steps of 32. Four learners per n:

  minilm  the packaged pretrained MiniLM (all-MiniLM-L6-v2, 22.7 M params), finetuned;
  mlm     our small BERT (configs/bert_mlm.py: 4 layers, width 256) MLM-pretrained on the plays
          (quick: 200 steps into WORKDIR/mlm_pretrain; --full: the config's 1,200 steps), finetuned;
  random  the same small BERT and WordPiece vocabulary (trained on the plays) from random init;
  tfidf   TF-IDF of character 1-4 grams + logistic regression (scikit-learn) on the same subset.

Every finetuning run stops early on validation accuracy (patience 3) and is tested with its best
checkpoint. Writes accuracy_vs_labels.png and summary.md into --workdir.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments import arms, report, runs

CONFIG = str(arms.ROOT / "configs" / "bert_cls.py") + ":vader_sign"
MLM_CONFIG = str(arms.ROOT / "configs" / "bert_mlm.py")
METRIC = "val/accuracy"
SIZES = {"quick": [25, 100, 400, 1600], "full": [25, 50, 100, 200, 400, 1000, 4000]}
FINETUNE = {"quick": {"train.num_steps": 80, "train.batch_size": 16, "train.eval_every": 10,
                      "train.eval_batches": 8, "train.checkpoint_every": 40, "optim.warmup_steps": 8},
            "full": {"train.num_steps": 300, "train.batch_size": 32, "train.eval_every": 25,
                     "train.eval_batches": 16, "train.checkpoint_every": 50, "optim.warmup_steps": 25}}
SHARED = {"train.log_every": 10, "train.patience": 3, "train.restore_best": True}
MLM_STEPS = {"quick": 200, "full": 1200}
# start -> overrides given the MLM workdir (learning rates: ~1e-4 for the pretrained 22 M MiniLM in
# a short run; the small BERT takes more)
STARTS = {"minilm": lambda mlm: {"init_from": "minilm", "optim.lr": 1e-4},
          "mlm": lambda mlm: {"init_from": str(mlm), "optim.lr": 3e-4},
          "random": lambda mlm: {"data.tokenizer_dir": str(mlm / "tokenizer"), "optim.lr": 3e-4}}


def tfidf_accuracy(size: int, seed: int) -> tuple[float, float]:
    """(TF-IDF + logistic regression, majority class) test accuracy on the subset a run of that
    size and seed trains on."""
    from bigmodel_jax import baselines
    from bigmodel_jax.config import apply_overrides, load_config_file
    from bigmodel_jax.tasks import classify, encoder

    cfg = apply_overrides(load_config_file(CONFIG), [f"data.max_train_examples={size}", f"seed={seed}"])
    splits = encoder.load_splits(cfg, classify.DATASETS)
    scores = baselines.tfidf_logreg(splits.train, splits.test, seed=seed, chars=True)
    return scores["accuracy"], scores["majority_accuracy"]


def main(argv: list[str] | None = None) -> int:
    p = arms.parser("python -m experiments.pretraining_helps", __doc__, "runs/ablations/pretraining_helps")
    p.add_argument("--mlm-workdir", default="", help="a finished MLM run to start (mlm) from; default: train one")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    mode = "full" if args.full else "quick"
    seeds = [0, 1, 2] if args.full else [0, 1]
    if args.mlm_workdir:
        mlm = Path(args.mlm_workdir)
        if not (mlm / "tokenizer").is_dir():
            raise SystemExit(f"--mlm-workdir {mlm}: no MLM run there (its tokenizer/ folder is missing)")
    else:
        arms.run_arm(workdir / "mlm_pretrain", MLM_CONFIG, {}, {"train.num_steps": MLM_STEPS[mode]}, [0], 1, "val/loss")
        mlm = (workdir / "mlm_pretrain" / "seed=0").resolve()
    for start, overrides in STARTS.items():
        arms.run_arm(workdir / start, CONFIG, {"data.max_train_examples": SIZES[mode]},
                     {**SHARED, **FINETUNE[mode], **overrides(mlm)}, seeds, args.jobs, METRIC)
    dirs = [workdir / start for start in STARTS]
    report.build(dirs, METRIC, ["data.max_train_examples"], workdir)

    curves: dict[str, dict[int, list[float]]] = {s: {} for s in [*STARTS, "tfidf", "majority"]}
    for r in runs.find_runs(dirs):
        if r.status == "done":
            size = r.config["data.max_train_examples"]
            curves[r.sweep].setdefault(size, []).append(runs.metric_values(r, "test/accuracy")[0])
    for size in SIZES[mode]:
        for seed in seeds:
            tfidf, majority = tfidf_accuracy(size, seed)
            curves["tfidf"].setdefault(size, []).append(tfidf)
            curves["majority"].setdefault(size, []).append(majority)
    plot(curves, workdir / "accuracy_vs_labels.png")
    header = "| labeled tokens | " + " | ".join(curves) + " |"
    rows = [header, "|---:|" + "---:|" * len(curves)]
    for size in SIZES[mode]:
        rows.append(f"| {size:,} | " + " | ".join(
            report.fmt(*report.mean_std(curves[s].get(size, []))) + f" (n={len(curves[s].get(size, []))})"
            for s in curves) + " |")
    mlm_val = runs.metric_values(runs.load_run(mlm, "mlm"), "val/accuracy")[1]
    text = "\n".join(rows) + (
        f"\n\nTest accuracy (725 tokens), mean ± std over seeds {seeds}. The MLM start was pretrained to "
        f"masked-token accuracy {mlm_val:.3f} ({mlm}). Plot: accuracy_vs_labels.png; every run: results.md.\n\n")
    info = {s: {str(k): v for k, v in c.items()} for s, c in curves.items()}
    arms.write_summary(workdir, "Pretraining helps: word-sentiment accuracy against labeled-set size", text, info, args)
    return 0


def plot(curves: dict[str, dict[int, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, by_size in curves.items():
        sizes = sorted(by_size)
        means = [statistics.fmean(by_size[s]) for s in sizes]
        errs = [statistics.stdev(by_size[s]) if len(by_size[s]) > 1 else 0.0 for s in sizes]
        style = dict(linestyle=":", color="gray") if name == "majority" else {}
        ax.errorbar(sizes, means, yerr=errs, marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("labeled training tokens")
    ax.set_ylabel("test accuracy (word sentiment, 2 classes)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
