"""The report's plots (matplotlib, Agg): learning curves with the seeds' spread, and a metric
against a setting with error bars."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from experiments.runs import Run, column, parse_metric

def label(entry_values: dict) -> str:
    return ", ".join(show(v) if k == "sweep" else f"{k.split('.')[-1]}={show(v)}"
                     for k, v in entry_values.items()) or "run"


def show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sortable(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


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
    for i, (gk, members) in enumerate(sorted(groups.items(), key=lambda kv: [sortable(v) for _, v in kv[0]])):
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
    categories = sorted({str(x) for x in xs_all}, key=lambda s: sortable(s))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for lk, entries in sorted(lines.items(), key=lambda kv: [sortable(v) for v in kv[0]]):
        entries = sorted(entries, key=lambda e: sortable(e[key]))
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




def plot_against_epsilon(points: list[tuple[float, float, float]], references: dict[str, float], ylabel: str,
                         path: Path) -> None:
    """A privacy trade-off: (epsilon, metric, noise multiplier z) per private run on a log epsilon
    axis, the non-private runs (no DP, clipping alone) as labelled horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(6, 4))
    finite = sorted((e, v, z) for e, v, z in points if math.isfinite(e))
    ax.plot([e for e, _, _ in finite], [v for _, v, _ in finite], "o-", label="private (noise multiplier z)")
    for e, v, z in finite:
        ax.annotate(f"z={z:g}", (e, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for (name, value), style in zip(references.items(), ("--", ":", "-.")):
        if math.isfinite(value):
            ax.axhline(value, color="gray", linestyle=style, label=name)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epsilon (RDP accountant)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, path: Path,
                      errors: dict[str, dict[str, float]] | None = None, title: str = "") -> None:
    """One cluster of bars per group ({group: {series: value}}), one color per series (a missing
    value: no bar), with error bars where `errors` has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(s for values in groups.values() for s in values))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.25 * len(groups) * len(series))), 4))
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i, g in enumerate(groups) if name in groups[g]]
        ys = [groups[g][name] for g in groups if name in groups[g]]
        err = [(errors or {}).get(g, {}).get(name, 0.0) for g in groups if name in groups[g]]
        ax.bar(xs, ys, width, yerr=err if any(err) else None, label=name, capsize=2)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8, rotation=12)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
