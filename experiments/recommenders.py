"""Sequential recommenders on MovieLens-100k side by side (issue 21; seed §3.4).

    pip install --no-deps recbole==1.2.1
    python -m experiments.recommenders                  # SASRec and BERT4Rec, seeds 0-2, and popularity

Every model is ranked against the same thing: leave-one-out (the last item tests, the one before
validates), all 943 users, HR@10 and NDCG@10 by full ranking over the items a user has not seen,
and among 100 negatives drawn uniformly or by popularity (the negatives fixed by data.negative_seed,
the same for every model). Each model trains with its config's budget (configs/sasrec_ml100k.py,
configs/bert4rec_ml100k.py) and is tested with its best checkpoint by validation NDCG@10.
RecBole's own SASRec and BERT4Rec on the same split are not in this table yet.
"""

from __future__ import annotations

from pathlib import Path

from bigmodel_jax.config import load_config_file
from bigmodel_jax.tasks import recsys
from experiments import arms, report, runs

MODELS = {"sasrec": "sasrec_ml100k.py", "bert4rec": "bert4rec_ml100k.py"}
COLUMNS = [("hr10", "full HR@10"), ("ndcg10", "full NDCG@10"), ("hr10_uniform", "HR@10 (100 uniform)"),
           ("ndcg10_uniform", "NDCG@10 (100 uniform)"), ("hr10_popular", "HR@10 (100 popular)"),
           ("ndcg10_popular", "NDCG@10 (100 popular)")]


def model_row(folder: Path) -> dict:
    done = [r for r in runs.find_runs([folder]) if r.status == "done"]
    row = {name: report.mean_std([runs.metric_values(r, f"test/{name}")[0] for r in done]) for name, _ in COLUMNS}
    row["n"] = len(done)
    row["steps"] = [r.summary.get("step", 0) for r in done]
    row["minutes"] = report.mean_std([r.summary.get("seconds", 0) / 60 for r in done])
    return row


def table(rows: dict[str, dict]) -> str:
    out = ["| model | n | " + " | ".join(title for _, title in COLUMNS) + " |",
           "|---|---:|" + "---:|" * len(COLUMNS)]
    for model, row in rows.items():
        cells = [report.fmt(*row[name]) if isinstance(row[name], tuple) else f"{row[name]:.4f}" for name, _ in COLUMNS]
        out.append(f"| {model} | {row.get('n', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = arms.parser("python -m experiments.recommenders", __doc__, "runs/ablations/recommenders")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {sorted(MODELS)}")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in chosen if m not in MODELS]:
        p.error(f"unknown model(s) {unknown}; valid: {sorted(MODELS)}")
    workdir = Path(args.workdir)
    rows: dict[str, dict] = {}
    for model in chosen:
        config = str(arms.ROOT / "configs" / MODELS[model])
        arms.run_arm(workdir / model, config, {}, {}, seeds, args.jobs, "val/ndcg10")
        rows[model] = model_row(workdir / model)
    cfg = load_config_file(str(arms.ROOT / "configs" / MODELS["sasrec"]))
    rows["popularity"] = recsys.popularity(cfg)["test"]
    text = ("Test split, mean ± std over seeds (popularity is deterministic).\n\n" + table(rows) + "\n\n"
            + "\n".join(f"{m}: stopped at steps {r['steps']}, {r['minutes'][0]:.1f} ± {r['minutes'][1]:.1f} min a run"
                        for m, r in rows.items() if "steps" in r) + "\n\n")
    arms.write_summary(workdir, "Sequential recommenders on MovieLens-100k", text, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
