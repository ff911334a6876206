"""The sweep runner and the report: grid expansion, failure isolation, skipping finished points,
resuming a killed sweep to the same results, reports of runs made by hand, an Optuna study resumed."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from bigmodel_jax import train
from experiments import points, report, search
from tests.conftest import ROOT, tiny_config

CONFIG = str(ROOT / "configs" / "gpt_char.py") + ":baby"


def tiny_sets(tfds_dir, cache) -> list[str]:
    """A one-layer GPT that trains 20 steps in a few seconds, in a child process."""
    values = {"model.num_layers": 1, "model.width": 32, "model.mlp_dim": 64, "model.max_len": 32,
              "data.seq_len": 32, "data.tfds_dir": tfds_dir, "train.num_steps": 20, "train.eval_every": 10,
              "train.eval_batches": 2, "train.log_every": 5, "train.checkpoint_every": 10,
              "optim.warmup_steps": 2, "compilation_cache_dir": cache}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def plain_env() -> dict[str, str]:
    """This session's environment without conftest's 8 fake devices: a sweep's points then train on
    one CPU device, as from a shell."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    return dict(os.environ, XLA_FLAGS=" ".join(flags))


def run_sweep(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.sweep", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=plain_env())


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_grid_expansion_and_names(tmp_path):
    grid = points.parse_assignments(["model.dropout=0,0.1", "--config.optim.lr=1e-3,3e-3,1e-2"], "--grid", True)
    sets = points.parse_assignments(["train.num_steps=50"], "--set", False)
    expanded = points.expand_grid(tmp_path, grid, [0, 1], sets)
    assert len(expanded) == 2 * 3 * 2
    assert len({p.folder for p in expanded}) == len(expanded)
    first = expanded[0]
    assert first.grid == {"model.dropout": "0", "optim.lr": "1e-3", "seed": "0"}
    assert first.overrides == ["train.num_steps=50", "model.dropout=0", "optim.lr=1e-3", "seed=0"]
    assert first.name == "model.dropout=0,optim.lr=1e-3,seed=0"
    # a value a folder name cannot hold as it is gets a hash, so two such values never collide
    a, b = (points.expand_grid(tmp_path, {"init_from": [v]}, [0], {})[0].name for v in ("runs/a b", "runs/a_b"))
    assert a != b and "/" not in a
    # an axis of keys that move together: sizes as (layers, width) pairs, times the seeds
    tied = points.expand_grid(tmp_path, points.parse_assignments(["model.num_layers:model.width=1:32,4:128"], "--grid",
                                                               True), [0, 1], {})
    assert [p.grid for p in tied[::2]] == [{"model.num_layers": "1", "model.width": "32", "seed": "0"},
                                           {"model.num_layers": "4", "model.width": "128", "seed": "0"}]
    assert tied[3].overrides == ["model.num_layers=4", "model.width=128", "seed=1"]
    with pytest.raises(points.SweepError, match="as many"):
        points.parse_assignments(["model.num_layers:model.width=1:32,4"], "--grid", True)
    with pytest.raises(points.SweepError, match="KEY=VALUE"):
        points.parse_assignments(["model.dropout"], "--grid", True)
    with pytest.raises(points.SweepError, match="twice"):
        points.parse_assignments(["a=1", "a=2"], "--set", False)


def test_search_space_parsing():
    space = search.parse_space(["optim.lr=log(1e-4,1e-2)", "model.dropout=choice(0,0.1)", "model.num_layers=int(1,4)"])
    assert space["optim.lr"] == ("log", ["1e-4", "1e-2"])
    for bad in ("optim.lr=log(0,1)", "optim.lr=uniform(2,1)", "optim.lr=normal(0,1)", "optim.lr=log(a,b)"):
        with pytest.raises(points.SweepError, match="--space"):
            search.parse_space([bad])


def test_the_best_of_a_run_is_the_trainers_best_for_every_metric(tmp_path):
    """The report and the search pick a run's best value the way the trainer picks its best
    checkpoint: BLEU and chrF up, PER and WER down (a translation sweep once reported its worst chrF)."""
    from experiments import runs
    from bigmodel_jax.config import EVAL_METRICS

    assert runs.higher_is_better("val/chrf") and runs.higher_is_better("test/bleu")
    assert not runs.higher_is_better("val/per") and not runs.higher_is_better("val/loss")
    assert all(runs.higher_is_better(f"val/{m}") == up for m, up in EVAL_METRICS.items())
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"split": "validation", "step": step, "chrf": chrf, "loss": 1.0}) + "\n"
        for step, chrf in ((100, 0.01), (200, 0.03), (300, 0.02))))
    assert runs.metric_values(runs.load_run(tmp_path, "w"), "val/chrf") == (0.02, 0.03, 200)


def test_bad_key_refuses_the_whole_sweep_before_running(tmp_path):
    r = run_sweep(["--config", CONFIG, "--workdir", tmp_path / "w", "--grid", "model.dropot=0,0.1"])
    assert r.returncode == 2
    assert "model.dropot" in r.stderr and "unknown key" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()


def test_print_commands(tmp_path):
    r = run_sweep(["--config", CONFIG, "--workdir", tmp_path / "w", "--grid", "model.dropout=0,0.1",
                   "--seeds", "0,1", "--print-commands", "--train-args=--multihost"])
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 4 and lines == (tmp_path / "w" / "commands.txt").read_text().splitlines()
    assert all("bigmodel_jax.train" in line and line.endswith("--multihost") for line in lines)
    assert "--config.model.dropout=0.1" in lines[2] and "--config.seed=0" in lines[2]


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_report_from_runs_made_by_hand(tmp_path, tfds_dir):
    for lr in (1e-3, 3e-3):
        for seed in (0, 1):
            cfg = tiny_config(tfds_dir, **{"optim.lr": lr, "seed": seed, "parallel.data": 1})
            train.train(cfg, tmp_path / f"lr{lr}_s{seed}", devices=jax.devices()[:1])
    (tmp_path / "lr0.003_s1" / "summary.json").unlink()  # as if that run had been killed
    text = report.build([tmp_path], "val/loss", out=tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert len(rows) == 4 and {r["optim.lr"] for r in rows} == {"0.001", "0.003"}  # the key that differs
    assert [r["status"] for r in rows].count("unfinished") == 1
    run = next(r for r in rows if r["run"] == "lr0.001_s0")
    curve = [json.loads(line) for line in (tmp_path / "lr0.001_s0" / "metrics.jsonl").read_text().splitlines()]
    val = [c["loss"] for c in curve if c["split"] == "validation"]
    assert float(run["best_val_loss"]) == pytest.approx(min(val), rel=1e-5)
    assert float(run["final_val_loss"]) == pytest.approx(val[-1], rel=1e-5)
    assert "| 0.001 | 2 |" in text and "| 0.003 | 1 of 2 |" in text
    for png in ("curves.png", "val_loss_vs_optim.lr.png"):
        assert (tmp_path / "out" / png).stat().st_size > 10_000
    assert len(list((tmp_path / "out" / "tb_hparams").glob("*/events.out.tfevents.*"))) == 3
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out2"), "--metric", "val/accuracy"]) == 2
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out2"), "--metric", "train/loss"]) == 0
    assert report.main([str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_failed_point_is_isolated_and_finished_points_are_skipped(tmp_path, tfds_dir):
    args = ["--config", CONFIG, "--workdir", tmp_path / "w", "--grid", "model.dropout=0,1.5",
            *tiny_sets(tfds_dir, tmp_path / "cache")]
    r = run_sweep(args)
    assert r.returncode == 1  # one point failed; the sweep still finished the other and reported
    bad = tmp_path / "w" / "model.dropout=1.5,seed=0"
    assert "model.dropout" in r.stdout and str(bad / "train.log") in r.stdout
    rows = {row["model.dropout"]: row for row in read_csv(tmp_path / "w" / "results.csv")}
    assert rows["0"]["status"] == "done" and rows["1.5"]["status"] == "failed"
    assert "a rate in [0, 1)" in rows["1.5"]["reason"]
    done = tmp_path / "w" / "model.dropout=0,seed=0" / "summary.json"
    stamp = done.stat().st_mtime_ns
    r = run_sweep(args)
    assert "1 finished, 1 to run" in r.stdout
    assert done.stat().st_mtime_ns == stamp  # not trained again
    # other --set values for an existing point folder are refused, not mixed into it
    r = run_sweep([*args, "--set", "optim.lr=0.01"])
    assert r.returncode == 2 and "made by another sweep" in r.stderr


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_results_of_an_unbroken_one(tmp_path, tfds_dir):
    common = ["--config", CONFIG, "--grid", "optim.lr=3e-3,1e-2", "--set", "model.dropout=0.1",
              *tiny_sets(tfds_dir, tmp_path / "cache")]
    assert run_sweep([*common, "--workdir", tmp_path / "unbroken"]).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", *map(str, common),
                             "--workdir", str(tmp_path / "killed")], cwd=ROOT, start_new_session=True, env=plain_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "optim.lr=3e-3,seed=0"
    deadline = time.time() + 300
    while not (first / "checkpoints" / "10").exists() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its training process, mid-run
    proc.wait()
    assert not (first / "summary.json").exists()
    r = run_sweep([*common, "--workdir", tmp_path / "killed"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 finished, 2 to run" in r.stdout
    assert "resumed from" in (first / "train.log").read_text()
    volatile = ("wall_s", "tokens_per_s")
    a, b = (read_csv(tmp_path / d / "results.csv") for d in ("unbroken", "killed"))
    assert [{k: v for k, v in row.items() if k not in volatile} for row in a] == \
           [{k: v for k, v in row.items() if k not in volatile} for row in b]


@pytest.mark.slow
def test_optuna_study_resumes(tmp_path, tfds_dir):
    import optuna

    args = ["--config", CONFIG, "--workdir", tmp_path / "w", "--search", "optuna", "--space",
            "optim.lr=log(1e-3,3e-2)", *tiny_sets(tfds_dir, tmp_path / "cache")]
    r = run_sweep([*args, "--trials", "2"])
    assert r.returncode == 0, r.stdout + r.stderr
    storage = f"sqlite:///{tmp_path / 'w' / 'optuna.db'}"
    study = optuna.load_study(study_name="sweep", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    interrupted = study.ask()  # a trial left running, as by a sweep killed mid-trial
    interrupted.suggest_float("optim.lr", 1e-3, 3e-2, log=True)
    r = run_sweep([*args, "--trials", "3"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 trials finished, 1 to run" in r.stdout
    study = optuna.load_study(study_name="sweep", storage=storage)
    last = study.trials[-1]
    assert last.state.name == "COMPLETE" and last.params == interrupted.params  # proposed again
    rows = read_csv(tmp_path / "w" / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    best = min(rows, key=lambda r: float(r["best_val_loss"]))
    assert study.best_value == pytest.approx(float(best["best_val_loss"]), rel=1e-5)


def test_power_law_fits_recover_known_exponents():
    import numpy as np

    from experiments import scaling

    n = np.geomspace(1e4, 1e7, 6)
    alpha, n_c = scaling.fit_power_law(n, (8.8e13 / n) ** 0.076)
    assert alpha == pytest.approx(0.076, rel=1e-6) and n_c == pytest.approx(8.8e13, rel=1e-4)
    e, a, alpha = scaling.fit_offset_power_law(n, 1.69 + 406.4 * n ** -0.34)
    assert (e, alpha) == (pytest.approx(1.69, rel=1e-3), pytest.approx(0.34, rel=1e-3))
