"""--search optuna: Optuna's TPE sampler proposes the points, a SQLite study in the workdir keeps
them (rerun to continue), and the median pruner stops trials that fall behind, read from the
validation metrics each run logs as it goes."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
from typing import Sequence

from experiments import runs
from experiments.points import (Slots, SweepError, check_config, claim_folder, describe, expand_grid,
                                parse_assignments, run_point)

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
        direction="maximize" if runs.higher_is_better(args.metric) else "minimize",
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
    split, name = runs.parse_metric(args.metric)

    def objective(trial) -> float:
        values = suggest(trial, space)
        point = expand_grid(args.workdir, {k: [v] for k, v in values.items()}, args.seeds[:1], sets)[0]
        check_config(args.config, [point])
        claim_folder(args.config, point, list(space))
        trial.set_user_attr("folder", point.name)
        reported: set[int] = set()

        def watch(proc: subprocess.Popen) -> str | None:
            curve = runs.read_curves(point.folder / "metrics.jsonl")[0].get(f"{split}/{name}", {})
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
        return runs.metric_values(runs.load_run(point.folder, ""), args.metric)[1]

    if remaining:
        study.optimize(objective, n_trials=remaining, n_jobs=args.jobs, catch=(RuntimeError,))
    finished = [t for t in study.trials if t.state == States.COMPLETE]
    if finished:
        best = study.best_trial
        print(f"best trial {best.number}: {args.metric} {best.value:.4f} with "
              + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()),
              flush=True)
    return sum(1 for t in study.trials if t.state == States.FAIL and t.number not in interrupted)


