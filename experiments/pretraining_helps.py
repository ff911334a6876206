"""Does pretraining help? The same finetuning run from four starts, scored on held-out test splits:

  (a) the packaged pretrained MiniLM (all-MiniLM-L6-v2, 22.7 M params) finetuned,
  (b) our small BERT (configs/bert_mlm.py: 4 layers, width 256), MLM-pretrained on the plays, finetuned,
  (c) the same small BERT and WordPiece vocabulary from random init,
  (d) TF-IDF (word 1-2 grams) + logistic regression from scikit-learn, on the same splits.

    python -m experiments.pretraining_helps --mlm-workdir runs/bert_mlm --out runs/pretraining_helps

Trains (or resumes) the MLM run first if its workdir is not finished. Every finetuning run ends on
its best validation accuracy (early stopping, restore-best) and is scored once on the test split.
Writes results.json and results.md (a table) under --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import jax

from bigmodel_jax import baselines, train as train_lib
from bigmodel_jax.config import apply_overrides, load_config_file
from bigmodel_jax.tasks import classify, encoder

ROOT = Path(__file__).resolve().parents[1]

# dataset -> (config variant, overrides shared by every start)
DATASETS = {
    "polarity": ("polarity", {"train.num_steps": 200, "train.batch_size": 16, "train.eval_every": 20,
                              "train.checkpoint_every": 20, "train.patience": 5, "optim.warmup_steps": 20}),
    "genre": ("", {"data.max_train_examples": 4000, "train.num_steps": 500, "train.batch_size": 32,
                   "train.eval_every": 50, "train.checkpoint_every": 50, "train.eval_batches": 16,
                   "train.patience": 4, "optim.warmup_steps": 50}),
}
# start -> overrides (learning rates: the usual ~5e-5 for a pretrained 22M BERT; small models take more)
STARTS = {
    "(a) MiniLM pretrained": lambda mlm: {"init_from": "minilm", "optim.lr": 5e-5},
    "(b) small BERT, MLM on the plays": lambda mlm: {"init_from": str(mlm), "optim.lr": 3e-4},
    "(c) small BERT, random init": lambda mlm: {"data.tokenizer_dir": str(Path(mlm) / "tokenizer"), "optim.lr": 3e-4},
}


def config(file: str, variant: str, overrides: dict):
    cfg = load_config_file(str(ROOT / "configs" / file) + (f":{variant}" if variant else ""))
    return apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.pretraining_helps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mlm-workdir", default="runs/bert_mlm")
    p.add_argument("--out", default="runs/pretraining_helps")
    p.add_argument("--datasets", default="polarity,genre")
    p.add_argument("--starts", default="abc", help="which of the finetuning starts (a) (b) (c) to run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out, mlm = Path(args.out), Path(args.mlm_workdir)
    out.mkdir(parents=True, exist_ok=True)

    mlm_result = train_lib.train(config("bert_mlm.py", "", {}), mlm, progress=False)
    rows = [json.loads(line) for line in (mlm / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in rows if r["split"] == "validation"][-1]  # also when the run was already done
    results = {"mlm": {"workdir": str(mlm), "step": mlm_result.step, "val_loss": last_val["loss"],
                       "val_accuracy": last_val["accuracy"]}}
    for name in args.datasets.split(","):
        variant, shared = DATASETS[name]
        rows = {}
        for start, overrides in STARTS.items():
            if start[1] not in args.starts:
                continue
            workdir = out / f"{name}_{start[1]}"
            t0 = time.time()
            r = train_lib.train(config("bert_cls.py", variant, {**shared, **overrides(mlm)}), workdir, progress=False)
            rows[start] = {"test_accuracy": r.test_metrics["accuracy"], "best_val_accuracy": r.best_metric,
                           "best_step": r.best_step, "steps": r.step, "seconds": round(time.time() - t0)}
        splits = encoder.load_splits(config("bert_cls.py", variant, shared), classify.DATASETS)
        tfidf = baselines.tfidf_logreg(splits.train, splits.test)
        rows["(d) TF-IDF + logistic regression"] = {"test_accuracy": tfidf["accuracy"]}
        rows["majority class"] = {"test_accuracy": tfidf["majority_accuracy"]}
        results[name] = {"sizes": [len(splits.train), len(splits.validation), len(splits.test)], "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = []
    for name in args.datasets.split(","):
        n = results[name]["sizes"]
        lines += [f"\n**{name}** (train / validation / test = {n[0]:,} / {n[1]:,} / {n[2]:,})\n",
                  "| start | test accuracy | best val accuracy (step) | time |", "|---|---:|---:|---:|"]
        for start, row in results[name]["rows"].items():
            val = f"{row['best_val_accuracy']:.3f} ({row['best_step']})" if "best_val_accuracy" in row else ""
            secs = f"{row['seconds']} s" if "seconds" in row else ""
            lines.append(f"| {start} | {row['test_accuracy']:.3f} | {val} | {secs} |")
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(f"MLM pretraining: step {mlm_result.step}, validation masked-token loss {last_val['loss']:.4f}, "
          f"accuracy {last_val['accuracy']:.4f}")
    print(table)
    print(f"devices: {jax.devices()[0].device_kind} x {jax.device_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
