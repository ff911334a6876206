"""What the ablation modules share: an arm is one sweep (its own folder) of one variant; the
ablation compares arms through one report, each at its best value of a tuned key when it has one."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Sequence

from experiments import report, runs, sweep

ROOT = Path(__file__).resolve().parents[1]


def parser(prog: str, doc: str, workdir: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=workdir, help=f"one sweep folder per arm under it (default {workdir})")
    p.add_argument("--full", action="store_true", help="the larger version (longer runs, wider grids)")
    p.add_argument("--jobs", type=int, default=2, help="points run at once (default 2: one per core here)")
    p.set_defaults(command=prog, started=time.time())
    return p


def run_arm(workdir: Path, config: str, grid: dict[str, Sequence], sets: dict[str, object], seeds: Sequence[int],
            jobs: int, metric: str) -> Path:
    """One sweep; a point that fails (a diverging learning rate) is reported and the arm goes on."""
    argv = ["--config", config, "--workdir", str(workdir), "--seeds", ",".join(map(str, seeds)),
            "--jobs", str(jobs), "--metric", metric, "--no-report"]
    argv += [a for k, values in grid.items() for a in ("--grid", f"{k}={','.join(map(str, values))}")]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    rc = sweep.main(argv)
    if rc == 2:
        raise SystemExit(f"the sweep in {workdir} was refused (see above)")
    if rc == 130:  # Ctrl-C: stop the whole ablation (rerun it to resume)
        raise KeyboardInterrupt
    return workdir


def privacy_arms(workdir: Path, config: str, noise_key: str, noises: Sequence[float], clip: dict[str, float],
                 budget: dict[str, object], jobs: int, metric: str) -> tuple[runs.Run | None, dict[float, runs.Run]]:
    """A privacy trade-off: one run without DP (no_dp/) and one per noise multiplier with the
    clip settings (dp/), then their report; returns the finished no-DP run and {noise: run}."""
    run_arm(workdir / "no_dp", config, {}, budget, [0], jobs, metric)
    run_arm(workdir / "dp", config, {noise_key: noises}, dict(budget, **clip), [0], jobs, metric)
    report.build([workdir / "no_dp", workdir / "dp"], metric, [noise_key], workdir)
    done = [r for r in runs.find_runs([workdir / "no_dp", workdir / "dp"]) if r.status == "done"]
    base = next((r for r in done if r.sweep == "no_dp"), None)
    return base, {r.config.get(noise_key): r for r in done if r.sweep == "dp"}


def tuned_arm(workdir: Path, config: str, key: str, values: Sequence, sets: dict[str, object], seeds: Sequence[int],
              jobs: int, metric: str):
    """Tunes key over values on the first seed, then runs the best value with every seed (the
    first seed's run is reused); returns that value."""
    best = values[0]
    if len(values) > 1:
        run_arm(workdir, config, {key: values}, sets, seeds[:1], jobs, metric)
        best = best_value(workdir, key, metric, seeds[0])
    run_arm(workdir, config, {key: [best]}, sets, seeds, jobs, metric)
    return best


def best_value(workdir: Path, key: str, metric: str, seed: int = 0):
    """The value of key whose run with the tuning seed reaches the best metric (a diverged or
    failed run loses). Only that seed counts, so the choice stays the same when the chosen value's
    other seeds have run (a rerun of the ablation makes the same choice)."""
    sign = -1 if runs.higher_is_better(metric) else 1
    scored = {}
    for run in runs.find_runs([workdir]):
        best = runs.metric_values(run, metric)[1] if run.status == "done" else math.nan
        if run.seed == seed and math.isfinite(best):
            scored[run.config.get(key)] = sign * best
    if not scored:
        raise SystemExit(f"every run in {workdir} failed: see the logs named in its results")
    return min(scored, key=scored.get)


def provenance(command: str, started: float) -> str:
    """Command, commit, date, machine and duration: what RESULTS.md states for each table."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return (f"command: `{command}`  \ncommit {commit.stdout.strip() or '?'}{' + local changes' if dirty else ''}, "
            f"{time.strftime('%Y-%m-%d')}, {platform.machine()} with {len(os.sched_getaffinity(0))} cores, "
            f"{(time.time() - started) / 60:.1f} min")


def write_summary(workdir: Path, title: str, text: str, info: dict, args: argparse.Namespace) -> None:
    """summary.md (the ablation's tables, what it says, and the provenance line) and summary.json
    (its numbers)."""
    text += provenance(args.command + (" --full" if args.full else ""), args.started)
    (workdir / "summary.md").write_text(f"# {title}\n\n{text}\n")
    (workdir / "summary.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"\n# {title}\n\n{text}\n\nwritten to {workdir}: summary.md, summary.json and the plots")
