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
import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Callable, Sequence

from experiments import report

TRAIN = [sys.executable, "-m", "bigmodel_jax.train"]


class SweepError(Exception):
    """A bad sweep argument, said before anything runs."""


@dataclass
class Point:
    grid: dict[str, str]  # key -> value as given on the command line (the seed included as "seed")
    overrides: list[str]  # what the train command gets after --config.: the --set values, then the grid
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name


def parse_assignments(items: Sequence[str], flag: str, many: bool) -> dict[str, list[str] | str]:
    """['model.dropout=0,0.1'] -> {'model.dropout': ['0', '0.1']} (many) or {key: 'value'}."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--config.").removeprefix("config.")
        if not sep or not key or not value:
            raise SweepError(f"{flag} {item!r}: write KEY=VALUE{',VALUE...' if many else ''} (e.g. model.dropout=0.1)")
        if key in out:
            raise SweepError(f"{flag} {key} is given twice")
        out[key] = [v.strip() for v in value.split(",")] if many else value
        if many and any(v.count(":") != key.count(":") for v in out[key]):
            raise SweepError(f"{flag} {item!r}: the axis {key} moves {key.count(':') + 1} keys together, so each "
                             f"value needs as many ':'-separated parts (e.g. a:b=1:32,2:64)")
    return out


def point_name(grid: dict[str, str]) -> str:
    """A readable folder name; where a value has characters a path cannot hold well (a path, a
    long list) the name is shortened and made unique by a hash of the exact values."""
    raw = ",".join(f"{k}={v}" for k, v in grid.items())
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", raw)
    if safe == raw and len(raw) <= 120:
        return raw
    return f"{safe[:80]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def expand_grid(workdir: Path, grid: dict[str, list[str]], seeds: list[int], sets: dict[str, str]) -> list[Point]:
    """The product of the grid's axes times the seeds. An axis 'a:b' = 'x1:y1,x2:y2' moves keys
    together (a=x1 with b=y1, then a=x2 with b=y2): model sizes, a width with its heads."""
    points = []
    for values in itertools.product(*grid.values(), seeds):
        combo = {}
        for axis, value in zip(grid, values[:-1]):
            combo |= dict(zip(axis.split(":"), value.split(":")))
        named = combo | ({"seed": str(values[-1])} if "seed" not in combo else {})
        overrides = [f"{k}={v}" for k, v in sets.items()] + [f"{k}={v}" for k, v in named.items()]
        points.append(Point(named, overrides, workdir / point_name(named)))
    return points


def check_config(config: str, points: list[Point]) -> None:
    """Every point's overrides parse against the config file (an unknown key or a value of the
    wrong type stops the whole sweep here); values that parse but are invalid (a dropout of 1.5)
    fail in their own point, reported like a crash."""
    from bigmodel_jax import config as config_lib
    from bigmodel_jax.errors import ConfigError

    try:
        base = config_lib.load_config_file(config)
        for p in points:
            config_lib.apply_overrides(base, p.overrides)
    except ConfigError as e:
        raise SweepError(f"config error: {e}") from None


def train_command(config: str, point: Point, extra: Sequence[str] = ()) -> list[str]:
    return [*TRAIN, f"--config={config}", f"--workdir={point.folder}", "--no-progress",
            *(f"--config.{o}" for o in point.overrides), *extra]


def claim_folder(config: str, point: Point, grid_keys: list[str]) -> None:
    """Creates the point's folder with point.json, or checks that an existing one was made with
    the same config and overrides (resuming it with others would mix two experiments)."""
    point.folder.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "overrides": point.overrides, "grid": point.grid, "grid_keys": grid_keys}
    path = point.folder / "point.json"
    old = report.read_json(path)
    if old is not None and (old.get("config"), old.get("overrides")) != (config, point.overrides):
        raise SweepError(f"{point.folder} was made by another sweep (config {old.get('config')}, overrides "
                         f"{old.get('overrides')}; now {config}, {point.overrides}): use a new --workdir")
    if old is None:
        path.write_text(json.dumps(record, indent=1) + "\n")


def is_finished(point: Point) -> bool:
    return (point.folder / "summary.json").exists()


def failure_reason(log: Path) -> str:
    """The last line of the log that says what went wrong (a config error, an exception)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {log}"
    for line in reversed(lines):
        if line.startswith("config error") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


class Slots:
    """Which CPU cores each of the --jobs running points may use."""

    def __init__(self, jobs: int):
        cores = sorted(os.sched_getaffinity(0))
        per = max(1, len(cores) // jobs)
        self.threads = per
        self.free: Queue = Queue()
        for i in range(jobs):
            self.free.put([cores[(i * per + j) % len(cores)] for j in range(per)])

    def env(self) -> dict[str, str]:
        """The child's environment: its thread count, and no fake-device flag inherited from a
        test session (a point trains on the devices a plain run gets)."""
        xla = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                       if not f.startswith("--xla_force_host_platform_device_count"))
        return dict(os.environ, OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1", XLA_FLAGS=xla)


def run_point(config: str, point: Point, slots: Slots, extra: Sequence[str],
              watch: Callable[[subprocess.Popen], str | None] | None = None) -> dict:
    """Runs (or resumes) one point to its end in its own process; returns its sweep_status.json.
    watch(process), when given, is polled while it runs and may stop it (Optuna's pruning): it
    returns a state name ("pruned") after terminating the process."""
    cores = slots.free.get()
    log = point.folder / "train.log"
    t0 = time.time()
    state = None
    try:
        with log.open("a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(train_command(config, point, extra))}\n")
            f.flush()
            proc = subprocess.Popen(train_command(config, point, extra), stdout=f, stderr=subprocess.STDOUT,
                                    env=slots.env())
            # Pinned at once, while the child is still importing (one thread): the threads XLA
            # starts later inherit the mask and size their pools by it. (preexec_fn would do it
            # before exec, but is unsafe with the sweep's own threads.)
            os.sched_setaffinity(proc.pid, cores)
            while proc.poll() is None:
                if watch is not None and (state := watch(proc)) is not None:
                    break
                time.sleep(0.5)
            rc = proc.wait()
    finally:
        slots.free.put(cores)
    if state is None:
        state = "done" if rc == 0 and is_finished(point) else "failed"
    status = {"state": state, "returncode": rc, "seconds": round(time.time() - t0, 1), "log": str(log),
              "reason": "" if state == "done" else
              (f"{failure_reason(log)} (log: {log})" if state == "failed" else f"{state} (log: {log})")}
    (point.folder / "sweep_status.json").write_text(json.dumps(status, indent=1) + "\n")
    return status


def describe(point: Point, status: dict, metric: str) -> str:
    if status["state"] != "done":
        return f"{point.name}: {status['state'].upper()}: {status['reason']}"
    final, best, step = report.metric_values(report.load_run(point.folder, ""), metric)
    return f"{point.name}: done in {status['seconds']:.0f} s, best {metric} {best:.4f} (step {step})"


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


# --- Optuna --------------------------------------------------------------------------------------

SPACE = re.compile(r"^\s*(log|uniform|int|choice)\((.*)\)\s*$")


def parse_space(items: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
    space = {}
    for key, text in parse_assignments(items, "--space", many=False).items():
        m = SPACE.match(text)
        args = [a.strip() for a in m.group(2).split(",")] if m else []
        if not m or (m.group(1) != "choice" and len(args) != 2) or not all(args):
            raise SweepError(f"--space {key}={text}: write log(a,b), uniform(a,b), int(a,b) or choice(v1,v2,...)")
        if m.group(1) != "choice":
            try:
                lo, hi = (float(a) for a in args)
            except ValueError:
                raise SweepError(f"--space {key}={text}: the bounds must be numbers") from None
            if not lo < hi or (m.group(1) == "log" and lo <= 0):
                need = "low < high" + (", both > 0" if m.group(1) == "log" else "")
                raise SweepError(f"--space {key}={text}: need {need}")
        space[key] = (m.group(1), args)
    return space


def suggest(trial, space: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
    values = {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            values[key] = str(trial.suggest_categorical(key, args))
        elif kind == "int":
            values[key] = str(trial.suggest_int(key, int(float(args[0])), int(float(args[1]))))
        else:
            values[key] = repr(trial.suggest_float(key, float(args[0]), float(args[1]), log=kind == "log"))
    return values


def run_search(args: argparse.Namespace, space: dict[str, tuple[str, list[str]]], sets: dict[str, str]) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(args.workdir / 'optuna.db').resolve()}"
    study = optuna.create_study(
        study_name="sweep", storage=storage, load_if_exists=True,
        direction="maximize" if report.higher_is_better(args.metric) else "minimize",
        sampler=optuna.samplers.TPESampler(seed=args.seeds[0]),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if args.prune
        else optuna.pruners.NopPruner())
    setup = {"config": args.config, "space": {k: list(v) for k, v in space.items()}, "set": sets,
             "metric": args.metric, "seed": args.seeds[0]}
    if study.user_attrs.get("setup", setup) != setup:
        raise SweepError(f"{args.workdir / 'optuna.db'} holds a study with other settings "
                         f"({study.user_attrs['setup']}); use a new --workdir")
    study.set_user_attr("setup", setup)
    States = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(States.RUNNING, States.WAITING)):
        if t.state == States.RUNNING:  # its sweep was killed: propose the same values again, resuming its folder
            study.tell(t.number, state=States.FAIL)
            study.set_user_attr(f"interrupted_{t.number}", True)
            study.enqueue_trial(t.params)
    interrupted = {int(k.split("_")[1]) for k in study.user_attrs if k.startswith("interrupted_")}
    done = [t for t in study.get_trials(deepcopy=False, states=(States.COMPLETE, States.PRUNED, States.FAIL))
            if t.number not in interrupted]
    remaining = max(0, args.trials - len(done))
    print(f"study {storage}: {len(done)} trials finished, {remaining} to run ({args.jobs} at a time)", flush=True)
    slots = Slots(args.jobs)
    split, name = report.parse_metric(args.metric)

    def objective(trial) -> float:
        values = suggest(trial, space)
        point = expand_grid(args.workdir, {k: [v] for k, v in values.items()}, args.seeds[:1], sets)[0]
        check_config(args.config, [point])
        claim_folder(args.config, point, list(space))
        trial.set_user_attr("folder", point.name)
        reported: set[int] = set()

        def watch(proc: subprocess.Popen) -> str | None:
            curve = report.read_curves(point.folder / "metrics.jsonl")[0].get(f"{split}/{name}", {})
            for step in sorted(set(curve) - reported):
                reported.add(step)
                trial.report(curve[step], step)
                if trial.should_prune():
                    proc.send_signal(signal.SIGTERM)
                    return "pruned"
            return None

        status = run_point(args.config, point, slots, args.train_args, watch if split == "validation" else None)
        print(f"trial {trial.number}: {describe(point, status, args.metric)}", flush=True)
        if status["state"] == "pruned":
            raise optuna.TrialPruned()
        if status["state"] != "done":
            raise RuntimeError(status["reason"])
        return report.metric_values(report.load_run(point.folder, ""), args.metric)[1]

    if remaining:
        study.optimize(objective, n_trials=remaining, n_jobs=args.jobs, catch=(RuntimeError,))
    finished = [t for t in study.trials if t.state == States.COMPLETE]
    if finished:
        best = study.best_trial
        print(f"best trial {best.number}: {args.metric} {best.value:.4f} with "
              + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()),
              flush=True)
    return sum(1 for t in study.trials if t.state == States.FAIL and t.number not in interrupted)


# --- command line --------------------------------------------------------------------------------

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
        report.parse_metric(args.metric)
        sets = parse_assignments(args.set, "--set", many=False)
        if args.search:
            space = parse_space(args.space)
            if args.print_commands:
                raise SweepError("--print-commands lists a grid's points; a search decides its points as it goes")
            failed = run_search(args, space, sets)
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
              f"{report.column(args.metric)}_vs_*.png, tb_hparams/", flush=True)
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
