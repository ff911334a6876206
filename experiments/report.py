"""Tables and plots from finished runs: a sweep's, or any runs made by hand with bigmodel_jax.train.

    python -m experiments.report runs/sweeps/dropout
    python -m experiments.report runs/sgd runs/adamw --metric val/loss --out runs/optimizers
    python -m experiments.report runs/a runs/b runs/c --keys optim.lr    # group by these keys only

A run is any folder holding the trainer's metrics.jsonl (or a sweep's point.json). What tells runs
apart is read from their config.json: a sweep's grid keys, or else every config key whose value
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

SPLITS = {"val": "validation", "validation": "validation", "train": "train", "test": "test"}
HIGHER_IS_BETTER = {"accuracy", "macro_f1", "precision", "recall", "f1", "exact_match"}
# config keys that differ between runs without being a setting of the experiment
NOT_SETTINGS = {"seed", "compilation_cache_dir", "data.tfds_dir", "data.tokenizer_dir", "data.plays_dir"}


@dataclass
class Run:
    path: Path
    sweep: str  # the name of the DIR it was found under
    config: dict[str, Any]  # flat: {"model.dropout": 0.1, ...}
    status: str  # done, failed, pruned, unfinished
    reason: str = ""  # why it failed, with the log's path
    summary: dict = field(default_factory=dict)  # the trainer's summary.json (finished runs)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # "validation/loss" -> {step: value}
    grid_keys: tuple[str, ...] = ()  # from the sweep's point.json
    speed: float = math.nan  # mean training tokens/s (the first logged interval, compilation, left out)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def parse_metric(metric: str) -> tuple[str, str]:
    """'val/loss' -> ('validation', 'loss')."""
    split, _, name = metric.partition("/")
    if split not in SPLITS or not name:
        raise ValueError(f"--metric {metric!r}: write split/name, split one of val, train, test (e.g. val/loss)")
    return SPLITS[split], name


def higher_is_better(metric: str) -> bool:
    return parse_metric(metric)[1] in HIGHER_IS_BETTER


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_curves(path: Path) -> tuple[dict[str, dict[int, float]], float]:
    """Every split/metric's {step: value} from metrics.jsonl; a step logged again after a resume
    takes the later row. Also the mean training tokens/s."""
    curves: dict[str, dict[int, float]] = {}
    speeds: dict[int, float] = {}
    if not path.exists():
        return curves, math.nan
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            step, split = int(row["step"]), row["split"]
        except (ValueError, KeyError, TypeError):
            if n == len(lines):
                continue  # a last line cut short by a kill
            raise ValueError(f"{path}: line {n} is not a metrics row: {line[:80]!r}") from None
        for k, v in row.items():
            if k not in ("step", "split", "time") and isinstance(v, (int, float)):
                curves.setdefault(f"{split}/{k}", {})[step] = float(v)
        if split == "train" and "tokens_per_s" in row:
            speeds[step] = float(row["tokens_per_s"])
    speed_values = [speeds[s] for s in sorted(speeds)[1:]] or list(speeds.values())
    return curves, (statistics.fmean(speed_values) if speed_values else math.nan)


def load_run(folder: Path, sweep: str) -> Run:
    point = read_json(folder / "point.json") or {}
    config = {k: _literal(v) for k, v in point.get("grid", {}).items()}  # a point that failed before training
    config |= flatten(read_json(folder / "config.json") or {})
    summary = read_json(folder / "summary.json")
    status_file = read_json(folder / "sweep_status.json") or {}
    curves, speed = read_curves(folder / "metrics.jsonl")
    if summary is not None:
        status, reason = "done", ""
    elif status_file.get("state") in ("failed", "pruned"):
        status, reason = status_file["state"], status_file.get("reason", "")
    else:
        status, reason = "unfinished", ""
    return Run(folder, sweep, config, status, reason, summary or {}, curves, tuple(point.get("grid_keys", ())),
               speed)


def _literal(text: str) -> Any:
    """'0.1' -> 0.1, '3' -> 3, 'adamw' -> 'adamw' (a sweep's value as the config would hold it)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def find_runs(dirs: Sequence[str | Path]) -> list[Run]:
    runs = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder of runs")
        folders = {p.parent for name in ("metrics.jsonl", "point.json") for p in d.rglob(name)
                   if "tb_hparams" not in p.parts}
        runs += [load_run(f, d.resolve().name) for f in sorted(folders)]
    return runs


def setting_keys(runs: list[Run]) -> list[str]:
    """The sweeps' grid keys, or else every config key whose value differs between runs."""
    grid = sorted({k for r in runs for k in r.grid_keys})
    if grid:
        return grid
    keys = set().union(*(r.config for r in runs)) if runs else set()
    return sorted(k for k in keys - NOT_SETTINGS if len({json.dumps(r.config.get(k)) for r in runs}) > 1)


def metric_values(run: Run, metric: str) -> tuple[float, float, int]:
    """(final, best, best step) of split/name in one run; NaN when it never logged it."""
    split, name = parse_metric(metric)
    if split == "test":
        v = run.summary.get("test", {}).get(name, math.nan)
        return v, v, run.summary.get("step", 0)
    curve = run.curves.get(f"{split}/{name}", {})
    if not curve:
        return math.nan, math.nan, 0
    steps = sorted(curve)
    finite = [s for s in steps if math.isfinite(curve[s])]
    if not finite:
        return curve[steps[-1]], math.nan, 0
    pick = max if higher_is_better(metric) else min
    best_step = pick(finite, key=lambda s: curve[s])
    return curve[steps[-1]], curve[best_step], best_step


def column(metric: str) -> str:
    return metric.replace("/", "_")


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
    for gk, members in sorted(groups.items(), key=lambda kv: [_sortable(v) for v in kv[0]]):
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
        cells = [_show(e[c]) for c in label_cols] + [f"{e['n']}" + (f" of {e['runs']}" if e["runs"] != e["n"] else "")]
        for c in value_cols:
            text = fmt(*e[c])
            cells.append(f"**{text}**" if e is best and c == best_col else text)
        cells.append("-" if math.isnan(e["wall_s"]) else f"{e['wall_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {', '.join(f'{k}={v}' for k, v in zip(label_cols, _labels(e, label_cols)))}: {why}"
             for e in out for why in e["failed"]]
    direction = "highest" if higher_is_better(metric) else "lowest"
    text = "\n".join(lines) + f"\n\nmean ± std over seeds; best = the {direction} {metric} over the run's evaluations"
    if notes:
        text += "\n\nRuns that did not finish:\n" + "\n".join(notes)
    return text + "\n", out


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _labels(entry: dict, cols: list[str]) -> list:
    return [_show(entry[c]) for c in cols]


def _sortable(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def write_csv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def label(entry_values: dict) -> str:
    return ", ".join(_show(v) if k == "sweep" else f"{k.split('.')[-1]}={_show(v)}"
                     for k, v in entry_values.items()) or "run"


def plot_curves(runs: list[Run], keys: list[str], metric: str, path: Path) -> None:
    """Train loss and the validation metric against steps: a line per setting (mean over its
    seeds at the steps they share), the seeds' min..max as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, name = parse_metric(metric)
    val_curve = f"validation/{name}" if split != "train" else "validation/loss"
    panels = [("train/loss", "train loss"), (val_curve, val_curve.replace("validation/", "validation "))]
    groups: dict[tuple, list[Run]] = {}
    several = len({r.sweep for r in runs}) > 1
    for r in runs:
        if r.curves:
            gk = ((("sweep", r.sweep),) if several else ()) + tuple((k, r.config.get(k, "")) for k in keys)
            groups.setdefault(gk, []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    for i, (gk, members) in enumerate(sorted(groups.items(), key=lambda kv: [_sortable(v) for _, v in kv[0]])):
        for ax, (curve, _) in zip(axes, panels):
            series = [r.curves.get(curve, {}) for r in members]
            steps = sorted(set.intersection(*(set(s) for s in series))) if all(series) else []
            if not steps:
                continue
            values = [[s[t] for s in series] for t in steps]
            mean = [statistics.fmean(v) for v in values]
            ax.plot(steps, mean, color=colors(i % colors.N), label=label(dict(gk)) + f" (n={len(series)})")
            if len(series) > 1:
                ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                                color=colors(i % colors.N), alpha=0.2, linewidth=0)
    for ax, (_, title) in zip(axes, panels):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_metric_vs_key(table: list[dict], keys: list[str], key: str, metric: str, path: Path) -> None:
    """The metric's best value against one key, a line per combination of the other keys (and
    sweeps), error bars the std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = f"best_{column(metric)}"
    others = [c for c in ["sweep", *keys] if c != key and any(c in e for e in table)]
    lines: dict[tuple, list[dict]] = {}
    for e in table:
        if not math.isnan(e[col][0]):
            lines.setdefault(tuple(e.get(c) for c in others), []).append(e)
    xs_all = [e[key] for e in table]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs_all)
    categories = sorted({str(x) for x in xs_all}, key=lambda s: _sortable(s))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for lk, entries in sorted(lines.items(), key=lambda kv: [_sortable(v) for v in kv[0]]):
        entries = sorted(entries, key=lambda e: _sortable(e[key]))
        xs = [e[key] if numeric else categories.index(str(e[key])) for e in entries]
        ys = [e[col][0] for e in entries]
        err = [0.0 if math.isnan(e[col][1]) else e[col][1] for e in entries]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label(dict(zip(others, lk))) if others else None)
    if numeric and xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 50:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_xlabel(key)
    ax.set_ylabel(f"best {metric}")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
