"""Kill a training run with SIGKILL, rerun the same command, and check that it ends bitwise-identical
to a run that was never interrupted: the final and best params, every logged metric (wall-clock
fields aside) and the test metrics. Used by tests/test_faults.py and on its own:

    python -m tests.kill_resume --family gpt --trials 10 --kills 2      # prints "10/10 identical"
    python -m tests.kill_resume --family t5 --moments step:7,eval:10,saving:15,saved:20

Each family trains a tiny model on real offline data (the plays, scikit-learn's digits, pair files
written here) for 30 steps on 2 devices, with dropout, a checkpoint every 5 steps, an evaluation
every 10 (early-stopping counter and best/ checkpoint in play). A random kill lands anywhere in
the process's life (start-up, compile, a step, an evaluation, a save); a named moment
(fault_injection.MOMENTS) makes the process kill itself exactly there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30
COMMON = {"train.num_steps": STEPS, "train.log_every": 1, "train.eval_every": 10, "train.checkpoint_every": 5,
          "train.keep_checkpoints": 2, "train.patience": 50, "parallel.data": 2, "optim.warmup_steps": 3}
WALL_CLOCK = ("time", "tokens_per_s", "mfu")


def pairs_files(directory: Path) -> dict:
    """A reversal task as TSV pair files ('a b c' -> 'c b a'); the data.*_file overrides for them."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 400), ("validation", 24), ("test", 24)):
        with open(directory / f"{name}.tsv", "w") as f:
            for _ in range(n):
                letters = rng.choice(list("abcdefgh"), rng.integers(2, 6)).tolist()
                f.write(" ".join(letters) + "\t" + " ".join(reversed(letters)) + "\n")
    return {f"data.{name}_file": str(directory / f"{name}.tsv") for name in ("train", "validation", "test")}


def family_args(family: str, data_dir: Path) -> tuple[str, dict]:
    """(config file, overrides) of the family's tiny run; data_dir holds prepared TFDS data."""
    tiny = {"model.num_layers": 2, "model.width": 32, "model.num_heads": 4, "model.mlp_dim": 64,
            "model.dtype": "float32", "model.dropout": 0.1, "train.batch_size": 8, "train.grad_accum_steps": 1,
            "train.eval_batches": 2, "data.tfds_dir": str(data_dir)}
    if family == "gpt":
        return "configs/gpt_char.py", {**tiny, "model.max_len": 32, "data.seq_len": 32}
    if family == "bert":
        return "configs/bert_mlm.py", {**tiny, "model.max_len": 32, "data.seq_len": 32, "data.vocab_size": 512}
    if family == "vit":
        return "configs/vit_digits.py", {**tiny, "model.image_size": 8, "model.patch_size": 4,
                                         "train.restore_best": True}
    if family == "t5":
        return "configs/t5_translate.py", {
            **tiny, **pairs_files(data_dir / "pairs"), "data.dataset": "pairs", "data.vocab_size": 16,
            "data.spm_model_type": "word", "data.source_len": 8, "data.target_len": 8, "data.eval_examples": 0,
            "model.num_decoder_layers": 2, "model.head_dim": 8, "model.max_len": 16, "train.restore_best": True}
    raise ValueError(f"unknown family {family!r}; one of gpt, bert, vit, t5")


def command(family: str, data_dir: Path, workdir: Path, cache_dir: Path) -> list[str]:
    config, overrides = family_args(family, data_dir)
    overrides = {**overrides, **COMMON, "compilation_cache_dir": str(cache_dir)}
    return [sys.executable, "-m", "bigmodel_jax.train", "--config", str(ROOT / config), "--workdir", str(workdir),
            "--no-progress", *(f"--config.{k}={v}" for k, v in overrides.items())]


def environment(kill_at: str = "") -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(ROOT))
    env.pop("BIGMODEL_KILL_AT", None)
    if kill_at:
        env["BIGMODEL_KILL_AT"] = kill_at
    return env


def run(cmd: list[str], kill_at: str = "", kill_after: float | None = None, log: Path | None = None) -> int:
    """The process's exit code (-9 when killed)."""
    with open(log or os.devnull, "a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environment(kill_at), stdout=out, stderr=subprocess.STDOUT)
        if kill_after is not None:
            try:
                return proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        return proc.wait()


def outcome(workdir: Path) -> dict:
    """What an identical run must reproduce: metrics rows, final and best params, test metrics."""
    import orbax.checkpoint as ocp

    rows = [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]

    def params(folder: str) -> tuple[int, list[np.ndarray]]:
        import jax

        mngr = ocp.CheckpointManager((workdir / folder).absolute(), options=ocp.CheckpointManagerOptions(create=False))
        step = mngr.latest_step()
        saved = ocp.StandardCheckpointer().metadata((workdir / folder / str(step) / "params").absolute()).item_metadata
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # saved over 2 devices, read on one
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), saved)
        tree = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
        mngr.close()
        return step, [np.asarray(x) for x in jax.tree.leaves(tree)]

    test = workdir / "test_metrics.json"
    return {"rows": rows, "final": params("checkpoints"), "best": params("best"),
            "test": json.loads(test.read_text()) if test.exists() else None}


def differences(a: dict, b: dict) -> list[str]:
    out = []
    if a["rows"] != b["rows"]:
        first = next((i for i, (x, y) in enumerate(zip(a["rows"], b["rows"])) if x != y), min(len(a["rows"]),
                                                                                               len(b["rows"])))
        out.append(f"metrics rows differ from row {first} ({len(a['rows'])} vs {len(b['rows'])} rows)")
    for which in ("final", "best"):
        (sa, pa), (sb, pb) = a[which], b[which]
        if sa != sb or len(pa) != len(pb) or any(not np.array_equal(x, y) for x, y in zip(pa, pb)):
            out.append(f"{which} params differ (steps {sa} vs {sb})")
    if a["test"] != b["test"]:
        out.append(f"test metrics differ: {a['test']} vs {b['test']}")
    return out


def prepare_data(family: str, data_dir: Path) -> None:
    """Build the family's TFDS data once, so no kill lands in a first-time dataset build."""
    sys.path.insert(0, str(ROOT))
    if family in ("gpt", "bert"):
        from bigmodel_jax.data.plays import load_split_text

        load_split_text(data_dir, "train")
    elif family == "vit":
        from bigmodel_jax.data.images import load_images

        load_images("digits", data_dir)


def trial(cmd_for, reference: dict, kills: list, log: Path) -> tuple[list[str], int]:
    """Kills one fresh workdir at each of `kills` (a 'moment:step' string or seconds after start),
    then reruns to the end. Returns (differences from the reference, kills that landed)."""
    workdir = Path(cmd_for[1])
    landed = 0
    for kill in kills:
        code = run(cmd_for[0], kill_at=kill if isinstance(kill, str) else "",
                   kill_after=None if isinstance(kill, str) else kill, log=log)
        landed += code == -signal.SIGKILL
    code = run(cmd_for[0], log=log)
    if code != 0:
        return [f"the final rerun exited with {code} (log: {log})"], landed
    return differences(reference, outcome(workdir)), landed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kill_resume")
    parser.add_argument("--family", default="gpt", choices=["gpt", "bert", "vit", "t5"])
    parser.add_argument("--trials", type=int, default=10, help="fresh runs, each killed --kills times")
    parser.add_argument("--kills", type=int, default=2, help="random SIGKILLs per trial")
    parser.add_argument("--moments", default="", help="instead of random kills: moment:step,... in one trial each")
    parser.add_argument("--workdir", default="runs/kill_resume", help="scratch folder (reference, trials, logs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = (ROOT / args.workdir / args.family).absolute()
    data_dir, cache = base / "data", base / "jax_cache"
    prepare_data(args.family, data_dir)
    ref_dir = base / "unbroken"
    if not (ref_dir / "summary.json").exists():
        if run(command(args.family, data_dir, ref_dir, cache), log=base / "unbroken.log") != 0:
            print(f"the unbroken run failed: {base / 'unbroken.log'}")
            return 1
    # how long a run lasts with the compilation cache warm, as the trials' runs do: kill times are
    # drawn over that span, so that they land while the process is alive
    duration = 0.0
    if not args.moments:
        subprocess.run(["rm", "-rf", str(base / "timing")], check=True)
        t0 = time.time()
        run(command(args.family, data_dir, base / "timing", cache))
        duration = time.time() - t0
    reference = outcome(ref_dir)
    rng = random.Random(args.seed)
    plans = ([[m] for m in args.moments.split(",")] if args.moments
             else [[rng.uniform(0, duration) for _ in range(args.kills)] for _ in range(args.trials)])
    identical = landed_in_all = 0
    for i, kills in enumerate(plans):
        workdir = base / f"trial_{i}"
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
        problems, landed = trial((command(args.family, data_dir, workdir, cache), workdir), reference, kills,
                                 base / f"trial_{i}.log")
        identical += not problems
        landed_in_all += landed
        shown = ", ".join(k if isinstance(k, str) else f"{k:.1f}s" for k in kills)
        print(f"trial {i}: killed at {shown} ({landed} landed): "
              + ("identical" if not problems else "DIFFERENT: " + "; ".join(problems)), flush=True)
    kills = sum(len(p) for p in plans)
    print(f"{identical}/{len(plans)} identical ({args.family}, against an unbroken run of {STEPS} steps; "
          f"{landed_in_all} of {kills} kills landed while the process ran"
          + (f"; a run lasts {duration:.0f} s)" if duration else ")"))
    return 0 if identical == len(plans) else 1


if __name__ == "__main__":
    sys.exit(main())
