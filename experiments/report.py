"""Tables and plots from finished runs: a sweep's, or any runs made by hand with bigmodel_jax.train.

    python -m experiments.report runs/sweeps/dropout
    python -m experiments.report runs/sgd runs/adamw --metric val/loss --out runs/optimizers
    python -m experiments.report runs/a runs/b runs/c --keys optim.lr    # group by these keys only

A run is any folder holding the trainer's metrics.jsonl (or a sweep's point.json). What tells runs
apart is read from their train_config.json: a sweep's grid keys, or else every config key whose value
differs between the runs (the seed aside: seeds of one setting are averaged). Several DIRs are
compared side by side, each a "sweep" (its folder name) in the tables and one line in the plots.

Writes into --out (default: the first DIR): results.csv (one row per run), results.md (one row per
setting: mean +- std over seeds, and n), curves.png (train loss and the validation metric against
steps, a line per setting, the seeds' spread as a band), <metric>_vs_<key>.png for each key (error
bars: std over seeds), and tb_hparams/ (TensorBoard's HParams dashboard: each run's settings and
final metrics; `tensorboard --logdir DIR`).

The metric is split/name: val/loss, val/accuracy, train/loss, test/accuracy, ... "best" is its
best value over the run's evaluations (the lowest loss, the highest accuracy), "final" the last.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import Any, Sequence

from experiments.plots import plot_curves, plot_metric_vs_key, show, sortable
from experiments.runs import (Run, column, find_runs, higher_is_better, metric_values, parse_metric,
                              setting_keys)


def run_rows(runs: list[Run], keys: list[str], metric: str, root: Path) -> list[dict]:
    rows = []
    several = len({r.sweep for r in runs}) > 1
    for r in runs:
        final, best, best_step = metric_values(r, metric)
        row = {"run": _relative(r.path, root)} | ({"sweep": r.sweep} if several else {})
        row |= {k: _scalar(r.config.get(k, "")) for k in keys} | {"seed": r.seed, "status": r.status}
        row |= {"steps": max((max(c) for c in r.curves.values() if c), default=0), "best_step": best_step,
                f"final_{column(metric)}": final, f"best_{column(metric)}": best}
        for other in ("train/loss", "val/loss"):
            if other != metric:
                row[f"final_{column(other)}"] = metric_values(r, other)[0]
        row |= {f"test_{k}": v for k, v in sorted(r.summary.get("test", {}).items()) if k != "step"}
        row |= {"wall_s": r.summary.get("seconds", math.nan), "tokens_per_s": round(r.speed, 1),
                "params": r.summary.get("params", ""), "reason": r.reason}
        rows.append(row)
    return rows


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def group_key(row: dict, keys: list[str]) -> tuple:
    return tuple(row.get(k, "") for k in ["sweep", *keys] if k in row)


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    digits = 4 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if not math.isnan(std) else "")


def summary_table(rows: list[dict], keys: list[str], metric: str) -> tuple[str, list[dict]]:
    """The markdown table (one row per setting, mean ± std over its finished seeds) and its rows."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_key(row, keys), []).append(row)
    value_cols = [f"best_{column(metric)}", f"final_{column(metric)}"]
    value_cols += sorted({c for r in rows for c in r if c.startswith("test_")})
    if metric != "val/loss" and any("final_val_loss" in r for r in rows):
        value_cols.append("final_val_loss")
    label_cols = (["sweep"] if any("sweep" in r for r in rows) else []) + keys
    out = []
    for gk, members in sorted(groups.items(), key=lambda kv: [sortable(v) for v in kv[0]]):
        done = [m for m in members if m["status"] == "done"]
        entry = dict(zip(label_cols, gk)) | {"n": len(done), "runs": len(members)}
        for c in value_cols:
            entry[c] = mean_std([m.get(c, math.nan) for m in done])
        entry["wall_s"] = mean_std([m["wall_s"] for m in done])[0]
        entry["failed"] = [m["reason"] or m["status"] for m in members if m["status"] != "done"]
        out.append(entry)
    best_col = f"best_{column(metric)}"
    finite = [e for e in out if not math.isnan(e[best_col][0])]
    best = (max if higher_is_better(metric) else min)(finite, key=lambda e: e[best_col][0]) if finite else None
    header = label_cols + ["n"] + [c.replace("_", " ", 1) for c in value_cols] + ["wall s"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(label_cols) + "---:|" * (len(header) - len(label_cols))]
    for e in out:
        cells = [show(e[c]) for c in label_cols] + [f"{e['n']}" + (f" of {e['runs']}" if e["runs"] != e["n"] else "")]
        for c in value_cols:
            text = fmt(*e[c])
            cells.append(f"**{text}**" if e is best and c == best_col else text)
        cells.append("-" if math.isnan(e["wall_s"]) else f"{e['wall_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {', '.join(f'{c}={show(e[c])}' for c in label_cols)}: {why}" for e in out for why in e["failed"]]
    direction = "highest" if higher_is_better(metric) else "lowest"
    text = "\n".join(lines) + f"\n\nmean ± std over seeds; best = the {direction} {metric} over the run's evaluations"
    if notes:
        text += "\n\nRuns that did not finish:\n" + "\n".join(notes)
    return text + "\n", out


def write_csv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_hparams(runs: list[Run], keys: list[str], metric: str, out: Path, root: Path) -> None:
    """Each run's settings and final metrics on TensorBoard's HParams dashboard (rebuilt each time)."""
    from tensorboardX import SummaryWriter

    target = out / "tb_hparams"
    shutil.rmtree(target, ignore_errors=True)
    for r in runs:
        if r.status != "done":
            continue
        hparams = {k: _scalar(r.config.get(k, "")) for k in keys} | {"seed": r.seed}
        final, best, _ = metric_values(r, metric)
        metrics = {f"hparam/final_{column(metric)}": final, f"hparam/best_{column(metric)}": best}
        metrics |= {f"hparam/test_{k}": v for k, v in r.summary.get("test", {}).items() if k != "step"}
        with SummaryWriter(str(target / _relative(r.path, root).replace("/", "__"))) as w:
            w.add_hparams(hparams, {k: v for k, v in metrics.items() if math.isfinite(v)}, name=".")


def _scalar(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) else json.dumps(v)


def build(dirs: Sequence[str | Path], metric: str = "val/loss", keys: Sequence[str] | None = None,
          out: str | Path | None = None, hparams: bool = True) -> str:
    """Reads every run under dirs and writes the CSV, the markdown table and the plots into out
    (default dirs[0]). Returns the markdown table."""
    parse_metric(metric)
    runs = find_runs(dirs)
    out = Path(out or dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    if not runs:
        raise FileNotFoundError(f"no runs (folders with metrics.jsonl) under {', '.join(map(str, dirs))}")
    if not any(math.isfinite(metric_values(r, metric)[1]) for r in runs):
        logged = sorted({c.replace("validation/", "val/") for r in runs for c in r.curves})
        logged += sorted({f"test/{k}" for r in runs for k in r.summary.get("test", {}) if k != "step"})
        raise ValueError(f"no run logged {metric}; they logged: {', '.join(logged) or 'nothing yet'}")
    keys = list(keys) if keys is not None else setting_keys(runs)
    root = Path(os.path.commonpath([Path(d).resolve() for d in dirs]))  # run names are relative to it
    rows = run_rows(runs, keys, metric, root)
    write_csv(rows, out / "results.csv")
    text, table = summary_table(rows, keys, metric)
    (out / "results.md").write_text(text)
    plot_curves(runs, keys, metric, out / "curves.png")
    for key in keys:
        plot_metric_vs_key(table, keys, key, metric, out / f"{column(metric)}_vs_{key}.png")
    if hparams:
        write_hparams(runs, keys, metric, out, root)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="folders holding runs (searched recursively)")
    p.add_argument("--metric", default="val/loss", help="split/name: val/loss, val/accuracy, test/accuracy, ...")
    p.add_argument("--keys", default=None, help="comma-separated config keys that define a setting "
                   "(default: the sweep's grid keys, or every key that differs between the runs)")
    p.add_argument("--out", default=None, help="where the tables and plots go (default: the first DIR)")
    args = p.parse_args(argv)
    try:
        text = build(args.dirs, args.metric, args.keys.split(",") if args.keys else None, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"report error: {e}")
        return 2
    print(text)
    print(f"written to {Path(args.out or args.dirs[0])}: results.csv, results.md, curves.png, *_vs_*.png, tb_hparams/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
