"""Reading runs back: a run folder's train_config.json, metrics.jsonl, summary.json and the sweep's
point.json / sweep_status.json, for the report, the sweep's search and the ablations."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bigmodel_jax.eval_metrics import EVAL_METRICS

SPLITS = {"val": "validation", "validation": "validation", "train": "train", "test": "test"}
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
    return EVAL_METRICS.get(parse_metric(metric)[1], False)


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
    config |= flatten(read_json(folder / "train_config.json") or {})
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


