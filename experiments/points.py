"""A point of a sweep: its folder, its train command, and running it as its own process pinned to
its share of the CPU cores; shared by the grid (sweep.py) and the search (search.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Callable, Sequence

from experiments import runs

TRAINERS = {"train": "bigmodel_jax.train", "fed": "bigmodel_jax.federated"}  # config section -> the CLI that runs it


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


def trainer(config: str) -> str:
    """The CLI a config file is for: a federated config has a `fed` section instead of `train`."""
    from bigmodel_jax import config as config_lib

    return TRAINERS["fed" if "fed" in config_lib.load_config_file(config) else "train"]


def train_command(config: str, point: Point, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", trainer(config), f"--config={config}", f"--workdir={point.folder}", "--no-progress",
            *(f"--config.{o}" for o in point.overrides), *extra]


def claim_folder(config: str, point: Point, grid_keys: list[str]) -> None:
    """Creates the point's folder with point.json, or checks that an existing one was made with
    the same config and overrides (resuming it with others would mix two experiments)."""
    point.folder.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "overrides": point.overrides, "grid": point.grid, "grid_keys": grid_keys}
    path = point.folder / "point.json"
    old = runs.read_json(path)
    if old is not None and (old.get("config"), old.get("overrides")) != (config, point.overrides):
        raise SweepError(f"{point.folder} was made by another sweep (config {old.get('config')}, overrides "
                         f"{old.get('overrides')}; now {config}, {point.overrides}): use a new --workdir")
    if old is None:
        path.write_text(json.dumps(record, indent=1) + "\n")


def is_finished(point: Point) -> bool:
    return (point.folder / "summary.json").exists()


def failure_reason(log: Path) -> str:
    """The last line of the log that says what went wrong (the trainer's one-line errors, an exception)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {log}"
    for line in reversed(lines):
        if (line.startswith(("config error", "data error", "weights error", "training stopped"))
                or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)):
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
        """The child's environment: the sweep's own, with its thread count."""
        return dict(os.environ, OMP_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")


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
    final, best, step = runs.metric_values(runs.load_run(point.folder, ""), metric)
    return f"{point.name}: done in {status['seconds']:.0f} s, best {metric} {best:.4f} (step {step})"


