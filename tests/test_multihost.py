"""Two real processes on 127.0.0.1 (jax.distributed), 4 fake CPU devices each, running the
`python -m bigmodel_jax.train` command a user runs on every host: they train, save, resume and
match one process with 8 devices; when one of them is killed, the other exits with an error
within a bounded time instead of hanging."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bigmodel_jax import train
from tests.conftest import ROOT, tiny_config

SETTINGS = {"model.num_layers": 2, "model.width": 32, "model.num_heads": 4, "model.mlp_dim": 64,
            "model.max_len": 32, "model.dtype": "float32", "data.seq_len": 32, "train.batch_size": 8,
            "train.grad_accum_steps": 1, "train.log_every": 1, "train.eval_every": 5, "train.eval_batches": 2,
            "train.checkpoint_every": 5, "optim.schedule": "constant", "optim.warmup_steps": 0,
            "optim.lr": 3e-3, "compilation_cache_dir": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, tfds_dir, steps: int, extra: dict, heartbeat: int = 10, via_env: bool = False
           ) -> list[subprocess.Popen]:
    """The same command on both 'hosts', as on a pod; only --process_id differs (or, via_env,
    the BIGMODEL_* variables a launcher would set instead of flags)."""
    port = free_port()
    settings = dict(SETTINGS, **{"data.tfds_dir": str(tfds_dir), "train.num_steps": steps}, **extra)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONUNBUFFERED="1")
    procs = []
    for i in range(2):
        where = ["--coordinator", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i)]
        if via_env:
            env.update(BIGMODEL_COORDINATOR=f"127.0.0.1:{port}", BIGMODEL_NUM_PROCESSES="2", BIGMODEL_PROCESS_ID=str(i))
            where = []
        cmd = [sys.executable, "-m", "bigmodel_jax.train", "--config", str(ROOT / "configs" / "gpt_char.py"),
               "--workdir", str(workdir), "--no-progress", *where, "--heartbeat_timeout", str(heartbeat),
               "--init_timeout", "60"] + [f"--config.{k}={v}" for k, v in settings.items()]
        log = open(f"{workdir}.p{i}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_all(procs, workdir, timeout: float = 240) -> None:
    for i, p in enumerate(procs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"process {i} hung; log: {open(f'{workdir}.p{i}.log').read()[-3000:]}")
        assert rc == 0, f"process {i} exited {rc}; log: {open(f'{workdir}.p{i}.log').read()[-3000:]}"


def train_losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def one_process(tfds_dir, tmp_path_factory):
    """The reference: one process driving all 8 devices."""
    cfg = tiny_config(tfds_dir, **SETTINGS, **{"train.num_steps": 10, "parallel.data": 2, "parallel.fsdp": 2,
                                               "parallel.tensor": 2})
    return train.train(cfg, tmp_path_factory.mktemp("one_process"), devices=jax.devices())


@pytest.mark.slow
def test_two_processes_train_save_resume_and_match_one_process(tfds_dir, tmp_path, one_process):
    """data 2 x fsdp 2 x tensor 2 over 2 hosts x 4 devices: steps 1-5, a checkpoint written by
    both processes through Orbax, a fresh start of both that resumes it, steps 6-10."""
    workdir = tmp_path / "run"
    mesh = {"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2}
    wait_all(launch(workdir, tfds_dir, 5, mesh), workdir)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [5]
    wait_all(launch(workdir, tfds_dir, 10, mesh), workdir)
    log0 = open(f"{workdir}.p0.log").read()
    assert "resumed from" in log0 and "2 process(es)" in log0
    assert "INFO step" not in open(f"{workdir}.p1.log").read()  # only process 0 logs progress
    got = train_losses(workdir)
    assert sorted(got) == list(range(1, 11))  # process 0 alone writes metrics, each step once
    np.testing.assert_allclose([got[s] for s in range(1, 11)],
                               [one_process.train_losses[s] for s in range(1, 11)], rtol=2e-5)


@pytest.mark.slow
def test_two_processes_in_pmap_mode_match_one_process(tfds_dir, tmp_path, one_process):
    """pmap across processes, the processes told where to meet by environment variables."""
    workdir = tmp_path / "run"
    wait_all(launch(workdir, tfds_dir, 10, {"parallel.mode": "pmap", "parallel.data": -1}, via_env=True), workdir)
    got = train_losses(workdir)
    np.testing.assert_allclose([got[s] for s in range(1, 11)],
                               [one_process.train_losses[s] for s in range(1, 11)], rtol=2e-5)
    assert (workdir / "checkpoints" / "10").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_dead_peer_stops_the_other_with_an_error(tfds_dir, tmp_path, victim):
    """kill -9 one process mid-training (the coordinator, 0, or the other); the survivor must
    exit non-zero, saying that a peer died, within the heartbeat timeout (5 s) plus a margin,
    not hang in a collective. (Measured: 3-6 s.)"""
    workdir = tmp_path / "run"
    procs = launch(workdir, tfds_dir, 100_000, {"train.eval_every": 100_000, "train.checkpoint_every": 100_000,
                                                "train.log_every": 10}, heartbeat=5)
    deadline = time.time() + 180
    while "INFO step 20 " not in open(f"{workdir}.p0.log").read():
        assert time.time() < deadline and procs[0].poll() is None, open(f"{workdir}.p0.log").read()[-3000:]
        time.sleep(0.5)
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    survivor = 1 - victim
    try:
        rc = procs[survivor].wait(timeout=60)
    except subprocess.TimeoutExpired:
        procs[survivor].kill()
        raise AssertionError(f"process {survivor} still running 60 s after its peer died")
    took = time.time() - killed_at
    log = open(f"{workdir}.p{survivor}.log").read()
    assert rc != 0
    # Two honest ways to learn of it: the coordination service's heartbeat check, or, when the kill
    # lands inside a collective, the CPU collectives' transport failing on the half-sent message
    # (gloo aborts; seen once in a full run). Either way the survivor stops instead of hanging.
    gloo = "gloo::EnforceNotMet" in log or "gloo::IoException" in log
    assert gloo or "the JAX distributed service detected fatal errors" in log, log[-3000:]
    # the coordinator sees the silent peer; a survivor that loses the coordinator sees a dead link
    assert gloo or ("stopped sending heartbeats" if victim == 1 else "leader task was preempted/died") in log, \
        log[-3000:]
    print(f"process {survivor} exited ({rc}) {took:.1f} s after process {victim} was killed")


SAVE_BOTH = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), heartbeat_timeout_seconds=10, initialization_timeout=60)
from bigmodel_jax import checkpoint
x = jax.device_put(jnp.arange(4096.0).reshape(4, 1024), NamedSharding(Mesh(np.array(jax.devices()), ("d",)), P("d")))
ck = checkpoint.Checkpointer(sys.argv[3], keep=2)
for step in range(1, 7):
    ck.save(step, {"w": x}, {"m": x}, {"step": step})
    ck.save(step, {"w": x}, {"m": x}, {"step": step}, best=True)
ck.wait()
ck.close()
"""


def test_latest_and_best_saved_at_one_step_on_two_processes(tmp_path):
    """checkpoints/ and best/ commit the same step from two background threads per process; with
    one barrier name for both, the coordination service refused the second ('Barrier
    _async_write_complete.1 is already ongoing'), the save failed and the run hung (CI, stop 28)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    where = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_BOTH, where, str(i), str(tmp_path / "run")], cwd=ROOT,
                              env=env, stdout=open(f"{tmp_path / 'run'}.p{i}.log", "w"), stderr=subprocess.STDOUT)
             for i in range(2)]
    wait_all(procs, tmp_path / "run", timeout=120)
    for folder, steps in (("checkpoints", [5, 6]), ("best", [6])):
        assert sorted(int(p.name) for p in (tmp_path / "run" / folder).iterdir() if p.name.isdigit()) == steps


FAIL_WHILE_PEER_WAITS = """
import sys
import jax
from jax._src import distributed as jax_distributed
from bigmodel_jax import distributed
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), heartbeat_timeout_seconds=5, initialization_timeout=60)

def main():
    if jax.process_index() == 0:
        raise RuntimeError("a save failed")
    jax_distributed.global_state.client.wait_at_barrier("never reached", 600_000)
    return 0

distributed.exit_with(main)
"""


def test_a_process_that_fails_leaves_and_its_waiting_peer_stops(tmp_path):
    """Process 0 fails while process 1 waits for it at a barrier. A plain exit would wait at
    jax.distributed's shutdown barrier for a peer that waits in turn (both hung for the 60 s we
    allowed); exit_with leaves at once and the peer's heartbeat check stops it (measured: 2 s)."""
    where = f"127.0.0.1:{free_port()}"
    logs = [tmp_path / f"p{i}.log" for i in range(2)]  # files, not pipes: an abort's stack trace can fill a pipe
    procs = [subprocess.Popen([sys.executable, "-c", FAIL_WHILE_PEER_WAITS, where, str(i)], cwd=ROOT,
                              stdout=open(logs[i], "w"), stderr=subprocess.STDOUT) for i in range(2)]
    try:
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes[0] == 1 and codes[1] != 0, [log.read_text()[-2000:] for log in logs]
    assert "a save failed" in logs[0].read_text()


def test_incomplete_multihost_flags_are_refused_before_starting(monkeypatch):
    import argparse

    from bigmodel_jax import distributed

    def parse(*argv):
        parser = argparse.ArgumentParser()
        distributed.add_flags(parser)
        return distributed.check_flags(parser.parse_args(argv))

    assert parse() is None and parse("--multihost") is None
    assert "go together" in parse("--coordinator", "127.0.0.1:1234")
    assert "not in 0..1" in parse("--coordinator", "h:1", "--num_processes", "2", "--process_id", "2")
    monkeypatch.setenv("BIGMODEL_COORDINATOR", "h:1")
    monkeypatch.setenv("BIGMODEL_NUM_PROCESSES", "2")
    assert "go together" in parse()  # the environment fills in flags the same way
    monkeypatch.setenv("BIGMODEL_PROCESS_ID", "1")
    assert parse() is None
    monkeypatch.delenv("BIGMODEL_PROCESS_ID")
    from bigmodel_jax.train import main
    with pytest.raises(SystemExit):  # the CLI refuses, before jax.distributed is touched
        main(["--config", str(ROOT / "configs" / "gpt_char.py"), "--workdir", "/tmp/x"])


@pytest.mark.slow
def test_sigterm_on_one_host_saves_the_same_step_on_both(tfds_dir, tmp_path):
    """A preemption notice reaching one host only: JAX's coordination service spreads it and
    picks a step both reach (reached_preemption_sync_point); both save it and exit 0. Then a
    restart of both resumes there."""
    workdir = tmp_path / "run"
    procs = launch(workdir, tfds_dir, 100_000, {"train.eval_every": 100_000, "train.checkpoint_every": 100_000,
                                                "train.log_every": 10})
    deadline = time.time() + 180
    while "INFO step 20 " not in open(f"{workdir}.p0.log").read():
        assert time.time() < deadline and procs[0].poll() is None, open(f"{workdir}.p0.log").read()[-3000:]
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    wait_all(procs, workdir, timeout=120)
    logs = [open(f"{workdir}.p{i}.log").read() for i in range(2)]
    steps = [int(log.split("stopped by SIGTERM at step ")[-1].split()[0]) for log in logs]
    assert steps[0] == steps[1] > 20, logs[0][-2000:]
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [steps[0]]
    wait_all(launch(workdir, tfds_dir, steps[0] + 3, {}), workdir)
    assert f"resumed from {workdir / 'checkpoints' / str(steps[0])}" in open(f"{workdir}.p0.log").read()
