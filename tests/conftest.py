"""8 fake CPU devices for every test (set before jax is imported), and shared small fixtures."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def process_hooks_restored():
    """A CLI's main() called in-process sets process-wide things (root logging handlers on the
    test's captured stream, threading.excepthook, sys.unraisablehook); put them back, or a
    background thread's message at session end writes to a closed stream (a test file run alone
    then exited 1 after all its tests passed)."""
    import logging
    import threading

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook, sys.unraisablehook)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    threading.excepthook, sys.unraisablehook = saved[2], saved[3]


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> Path:
    """One prepared copy of the real plays dataset for the whole session."""
    from bigmodel_jax.data.plays import load_split_text

    d = tmp_path_factory.mktemp("tfds")
    load_split_text(d, "train")
    return d


def tiny_config(tfds_dir, **overrides):
    """configs/gpt_char.py shrunk to a model that trains in seconds on the real plays."""
    from bigmodel_jax.config import apply_overrides, load_config_file

    cfg = load_config_file(str(ROOT / "configs" / "gpt_char.py"))
    base = {
        "model.num_layers": 2, "model.width": 32, "model.num_heads": 4, "model.mlp_dim": 64,
        "model.max_len": 32, "model.dtype": "float32", "data.seq_len": 32, "data.tfds_dir": str(tfds_dir),
        "train.batch_size": 8, "train.grad_accum_steps": 1, "train.num_steps": 20, "train.log_every": 1,
        "train.eval_every": 10,
        "train.eval_batches": 2, "train.checkpoint_every": 10, "optim.warmup_steps": 2, "optim.lr": 3e-3,
        "compilation_cache_dir": "",
    }
    base.update(overrides)
    return apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


def evaluate_checkpoint(workdir, which: str = "best", split: str = "test") -> tuple[int, dict]:
    """(step, metrics) of a workdir's `best` or `latest` checkpoint on a split, evaluated afresh
    outside the trainer: what a restore-best test compares the run's reported metrics with."""
    import jax
    from flax import nnx

    from bigmodel_jax import sharding, tasks, train, transfer

    model, cfg, step = transfer.load_trained(workdir, which)
    task = tasks.get(cfg.task)
    data = task.make_data(cfg, workdir)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    graphdef, state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    eval_step = train.make_eval_step(graphdef, task, jax.tree.map(lambda _: sharding.replicated(mesh), params), mesh)
    return step, train.evaluate(eval_step, params, getattr(data, split), mesh, task)


def with_moved_adapters(model, rank: int = 4, seed: int = 0):
    """model with rank-`rank` LoRA adapters on its default targets and B drawn at random (as if
    trained), so an exporter that dropped the adapters would show in the outputs."""
    import numpy as np
    from flax import nnx

    from bigmodel_jax.models import lora

    lora.add_adapters(model, lora.lora_config(rank=rank), nnx.Rngs(params=seed))
    rng = np.random.default_rng(seed)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, lora.Adapter):
            m.b[...] = rng.normal(0, 0.05, m.b.shape).astype(np.float32)
    return model
