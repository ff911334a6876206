"""A grid (or an Optuna search) of training runs, each its own `python -m bigmodel_jax.train` process.

    python -m experiments.sweep --config configs/gpt_char.py:baby --workdir runs/sweeps/dropout \\
        --grid model.dropout=0,0.1,0.2 [--grid optim.lr=1e-3,3e-3] [--seeds 0,1,2] \\
        [--set train.num_steps=500] [--jobs 2] [--metric val/loss]
    python -m experiments.sweep ... --grid model.num_layers:model.width=2:64,4:128   # keys that move together
    python -m experiments.sweep ... --print-commands          # one train command per point, for a scheduler
    python -m experiments.sweep --config ... --workdir runs/sweeps/lr --search optuna --trials 20 \\
        --space 'optim.lr=log(1e-4,1e-2)' [--space 'model.dropout=uniform(0,0.3)']

A point is the config with its --set values, one value of each --grid key and one seed; the grid is
the product of the --grid lists times the seeds. Each point trains in its own folder under
--workdir (named by its values) as a separate process: a crash or a NaN loss in one is reported
with its log's path and the others go on. Rerunning the same command skips finished points and
resumes interrupted ones from their checkpoints (the trainer's exact resume); a larger grid adds
points beside the old ones; a point folder made with other settings is refused, never overwritten.

--jobs N runs N points at once, each pinned to its share of the CPU cores (OMP_NUM_THREADS and the
process's CPU affinity, which XLA's thread pools follow). At the end (and by
`python -m experiments.report DIR` at any time) the workdir gets results.csv, results.md, plots
and TensorBoard HParams: see experiments/report.py.

Search: --space KEY=log(a,b) | uniform(a,b) | int(a,b) | choice(v1,v2,...), repeated; Optuna's TPE
sampler proposes --trials points (the first seed), the study lives in WORKDIR/optuna.db (SQLite),
so rerunning continues it: finished trials count, an interrupted one is proposed again and resumes
from its checkpoint. A trial whose validation metric falls behind the median of earlier trials at
the same step is stopped (Optuna's median pruner), read from the metrics the run logs as it goes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from experiments import report, runs, search
from experiments.points import (Point, Slots, SweepError, check_config, claim_folder, describe, expand_grid,
                                is_finished, parse_assignments, run_point, train_command)


def run_grid(args: argparse.Namespace, points: list[Point], grid_keys: list[str]) -> int:
    """Runs the points not finished yet, --jobs at a time; returns how many failed."""
    for p in points:
        claim_folder(args.config, p, grid_keys)
    todo = [p for p in points if not is_finished(p)]
    print(f"{len(points)} points in {args.workdir}: {len(points) - len(todo)} finished, {len(todo)} to run "
          f"({args.jobs} at a time)", flush=True)
    slots, failed, ended, lock = Slots(args.jobs), [], [], threading.Lock()

    def one(p: Point) -> None:
        status = run_point(args.config, p, slots, args.train_args)
        with lock:
            ended.append(p)
            if status["state"] != "done":
                failed.append(p)
            print(f"[{len(ended)}/{len(todo)}] {describe(p, status, args.metric)}", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, todo))
    return len(failed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a config file: path.py[:variant]")
    p.add_argument("--workdir", required=True, type=Path, help="one folder per point under it, and the results")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="a grid axis (repeat)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a value for every point (repeat)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="points run at once (default 1)")
    p.add_argument("--metric", default="val/loss", help="split/name for tables, plots and the search (val/loss)")
    p.add_argument("--print-commands", action="store_true",
                   help="print one train command per point (for a SLURM array or Kubernetes jobs) and exit")
    p.add_argument("--train-args", default="", help="more arguments for every train command, e.g. multi-host "
                   "flags: --train-args='--coordinator HOST:PORT --num_processes 2 --process_id 0' (or '--multihost')")
    p.add_argument("--search", choices=["optuna"], help="a search instead of a grid")
    p.add_argument("--trials", type=int, default=20, help="trials in all for --search (default 20)")
    p.add_argument("--space", action="append", default=[], help="a search dimension, KEY=log(a,b) ... (repeat)")
    p.add_argument("--no-prune", dest="prune", action="store_false", help="let every trial finish")
    p.add_argument("--no-report", dest="report", action="store_false", help="skip the tables and plots at the end")
    args = p.parse_args(argv)
    args.train_args = shlex.split(args.train_args)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: comma-separated integers, e.g. 0,1,2")
    if args.jobs < 1:
        p.error("--jobs must be 1 or more")
    if args.search and args.grid:
        p.error("--search explores --space; drop --grid (use --set for fixed values)")
    if args.search and not args.space:
        p.error("--search optuna needs at least one --space KEY=log(a,b) | uniform(a,b) | int(a,b) | choice(...)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs.parse_metric(args.metric)
        sets = parse_assignments(args.set, "--set", many=False)
        if args.search:
            space = search.parse_space(args.space)
            if args.print_commands:
                raise SweepError("--print-commands lists a grid's points; a search decides its points as it goes")
            failed = search.run_search(args, space, sets)
            keys = list(space)
        else:
            grid = parse_assignments(args.grid, "--grid", many=True)
            points = expand_grid(args.workdir, grid, args.seeds, sets)
            check_config(args.config, points)
            if args.print_commands:
                print_commands(args, points, [k for axis in grid for k in axis.split(":")])
                return 0
            keys = [k for axis in grid for k in axis.split(":")]
            failed = run_grid(args, points, keys)
    except (SweepError, ValueError) as e:
        print(f"sweep error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished points are kept)", file=sys.stderr)
        return 130
    if args.report:
        print(report.build([args.workdir], args.metric, keys, args.workdir))
        print(f"results in {args.workdir}: results.csv, results.md, curves.png, "
              f"{runs.column(args.metric)}_vs_*.png, tb_hparams/", flush=True)
    if failed:
        print(f"{failed} point(s) failed: see the reasons above and in results.csv", file=sys.stderr)
    return 1 if failed else 0


def print_commands(args: argparse.Namespace, points: list[Point], grid_keys: list[str]) -> None:
    """One line per point, also written to WORKDIR/commands.txt: a SLURM array runs line
    $SLURM_ARRAY_TASK_ID; afterwards `python -m experiments.report WORKDIR` collects the results."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    for p in points:
        claim_folder(args.config, p, grid_keys)
    lines = [shlex.join(train_command(args.config, p, args.train_args)) for p in points]
    (args.workdir / "commands.txt").write_text("\n".join(lines) + "\n")
    print(f"# {len(lines)} points, also in {args.workdir / 'commands.txt'}. SLURM: sbatch --array=1-{len(lines)} "
          f"--wrap 'sed -n \"${{SLURM_ARRAY_TASK_ID}}p\" {args.workdir / 'commands.txt'} | bash'; then "
          f"python -m experiments.report {args.workdir}")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
