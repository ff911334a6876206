"""Federated training from a config: python -m bigmodel_jax.federated --config FILE --workdir DIR.

A round: sample clients (a function of seed and round), run their local training in padded
groups (one compiled call per group, clients sharded over the `clients` mesh axis), one server
step. Checkpoints hold the server params and optimizer state and the round; client sampling,
local shuffles and DP noise are drawn from (seed, round), and the accountant composes the rounds
done, so a killed run rerun with the same command ends with the same model as one never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigmodel_jax import checkpoint, config as config_lib, privacy, tasks
from bigmodel_jax import metrics as metrics_lib
from bigmodel_jax.data import plays
from bigmodel_jax.errors import ConfigError, DataError, RunError
from bigmodel_jax.federated import algorithms, clients
from bigmodel_jax.federated import tasks as fed_tasks
from bigmodel_jax.models import lora
from bigmodel_jax.preemption import EXIT_CODES, StopRequest

log = logging.getLogger(__name__)

ALGORITHMS = ("fedsgd", "fedavg", "fedprox")
PARTITIONS = ("role", "iid")
EVAL_BATCH = 256


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
    """Every value checked before anything loads or compiles."""
    f, m = cfg.fed, cfg.model
    if cfg.task not in fed_tasks.CLIENTS:
        raise ConfigError("task", cfg.task, " | ".join(fed_tasks.CLIENTS))
    if lora.enabled(cfg):
        raise ConfigError("model.lora.rank", m.lora.rank, "0: federated runs train every parameter (no LoRA there)")
    if cfg.get("init_from"):
        raise ConfigError("init_from", cfg.init_from, "'': federated runs start from random init (not built)")
    checks = [
        ("fed.algorithm", f.algorithm in ALGORITHMS, " | ".join(ALGORITHMS)),
        ("fed.client_optimizer", f.client_optimizer in algorithms.CLIENT_OPTIMIZERS,
         " | ".join(algorithms.CLIENT_OPTIMIZERS)),
        ("fed.server_optimizer", f.server_optimizer in algorithms.SERVER_OPTIMIZERS,
         " | ".join(algorithms.SERVER_OPTIMIZERS)),
        ("data.partition", cfg.data.partition in PARTITIONS, " | ".join(PARTITIONS)),
        ("fed.rounds", f.rounds >= 1, "at least 1"),
        ("fed.client_fraction", 0 < f.client_fraction <= 1, "in (0, 1]"),
        ("fed.local_epochs", f.local_epochs >= 1, "at least 1"),
        ("fed.local_batch", f.local_batch >= 0, "examples per local step, 0 = the whole client"),
        ("fed.client_lr", f.client_lr > 0, "positive"),
        ("fed.server_lr", f.server_lr > 0, "positive"),
        ("fed.prox_mu", f.prox_mu >= 0 and (f.prox_mu == 0 or f.algorithm == "fedprox"),
         "non-negative, and only with fed.algorithm=fedprox"),
        ("fed.micro_batch", f.micro_batch >= 0, "non-negative (0 = the whole local batch)"),
        ("fed.min_examples", f.min_examples >= 1, "at least 1"),
        ("fed.group_examples", f.group_examples >= 1, "at least 1"),
        ("fed.eval_every", f.eval_every >= 1, "at least 1"),
        ("fed.eval_examples", f.eval_examples >= 0, "non-negative (0 = every test example)"),
        ("fed.checkpoint_every", f.checkpoint_every >= 1, "at least 1"),
        ("fed.target_accuracy", 0 <= f.target_accuracy < 1, "in [0, 1)"),
        ("data.seq_len", 1 <= cfg.data.seq_len <= m.max_len, f"in [1, model.max_len={m.max_len}]"),
        ("model.num_heads", m.num_heads > 0 and m.width % m.num_heads == 0, f"must divide model.width={m.width}"),
        ("dp.clip", cfg.dp.clip >= 0, "non-negative (0 = no DP)"),
        ("dp.noise_multiplier", cfg.dp.noise_multiplier >= 0 and (cfg.dp.noise_multiplier == 0 or cfg.dp.clip > 0),
         "non-negative, and noise needs dp.clip > 0"),
        ("dp.delta", 0 <= cfg.dp.delta < 1, "in [0, 1) (0 = 1 / clients^1.1)"),
    ]
    for key, ok, valid in checks:
        if not ok:
            section, name = key.split(".")
            raise ConfigError(key, cfg[section][name], valid)
    axis = num_devices if cfg.parallel.clients == -1 else cfg.parallel.clients
    if axis < 1 or num_devices % axis:
        raise ConfigError("parallel.clients", cfg.parallel.clients, f"-1 or a divisor of the {num_devices} devices")
    if f.group_size < 1 or f.group_size % axis:
        raise ConfigError("fed.group_size", f.group_size, f"a positive multiple of the clients mesh axis ({axis})")
    plays.check_plays_dir(cfg.data.plays_dir)


def make_stats(task: str, graphdef) -> Callable:
    """(params, batch, real_b) -> (loss sum, count, correct): the task's statistics of the model."""
    return lambda params, batch, real_b: fed_tasks.STATS[task](nnx.merge(graphdef, params), batch, real_b)


def make_eval(stats: Callable) -> Callable:
    eval_batch = jax.jit(stats)

    def evaluate(params, examples: dict[str, np.ndarray]) -> dict[str, float]:
        loss = correct = count = 0.0
        n = len(next(iter(examples.values())))
        for lo in range(0, n, EVAL_BATCH):
            rows = min(EVAL_BATCH, n - lo)
            batch = {k: np.zeros((EVAL_BATCH,) + a.shape[1:], a.dtype) for k, a in examples.items()}
            for k, a in examples.items():
                batch[k][:rows] = a[lo:lo + rows]
            batch_loss, batch_count, batch_correct = eval_batch(params, batch, np.arange(EVAL_BATCH) < rows)
            loss, count, correct = loss + float(batch_loss), count + float(batch_count), correct + float(batch_correct)
        return {"loss": loss / count, "accuracy": correct / count, "count": count}

    return evaluate


def run(cfg: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains (or resumes) in workdir; returns the summary. SIGTERM or Ctrl-C (a preemption notice)
    finishes the round, saves it and returns {"finished": False, "stopped_by": ...}."""
    workdir = Path(workdir)
    t_start = time.time()
    devices = jax.devices()
    validate(cfg, len(devices))
    workdir.mkdir(parents=True, exist_ok=True)
    if cfg.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cfg.compilation_cache_dir))
    f, dp = cfg.fed, cfg.dp
    axis = len(devices) if cfg.parallel.clients == -1 else cfg.parallel.clients
    mesh = Mesh(np.asarray(devices[:axis]), ("clients",))
    rep, by_client = NamedSharding(mesh, P()), NamedSharding(mesh, P("clients"))

    data = fed_tasks.CLIENTS[cfg.task](cfg, workdir)
    train, test = data.train, data.test
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.model.update(data.model_overrides)
    num_clients = len(train.ids)
    delta = dp.delta or privacy.default_delta(num_clients)
    private = dp.clip > 0
    log.info("%d clients (%s partition), %s training %s, %d test %s; mesh %s", num_clients, cfg.data.partition,
             f"{len(train.weights):,}", data.unit, len(next(iter(test.values()))), data.unit, dict(mesh.shape))

    model = tasks.get(cfg.task).build_model(cfg, nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0)))
    graphdef, state = nnx.split(model, nnx.Param)
    stats = make_stats(cfg.task, graphdef)
    params = jax.device_put(nnx.to_pure_dict(state), rep)
    tx = algorithms.server_optimizer(f)
    opt_state = jax.device_put(tx.init(params), rep)
    server = jax.jit(algorithms.make_server_update(
        tx, dp.noise_multiplier * dp.clip, f.client_fraction * num_clients if private else None), donate_argnums=(0, 1))
    evaluate = make_eval(stats)
    group_fns: dict[int, Callable] = {}

    def group_fn(n_pad: int):
        if n_pad not in group_fns:
            fn = algorithms.make_group_update(stats, f, dp.clip, n_pad)
            group_fns[n_pad] = jax.jit(fn, in_shardings=(rep, rep) + (by_client,) * 4)
        return group_fns[n_pad]

    start, meta = 0, {}
    def abstract(tree):
        return checkpoint.abstract_like(tree, jax.tree.map(lambda _: rep, tree))

    restored = checkpoint.restore(workdir / "checkpoints", abstract(params), abstract(opt_state),
                                  set_aside_unreadable=True)
    if restored is not None:
        start, params, opt_state, meta = restored
        log.info("resumed from %s at round %d", workdir / "checkpoints" / str(start), start)
        saved = traverse_util.flatten_dict(meta.get("config", {}), sep=".")
        changed = {k: (saved.get(k), v) for k, v in traverse_util.flatten_dict(cfg.to_dict(), sep=".").items()
                   if saved.get(k) != v}
        if changed:  # allowed (an eval setting, more rounds), but the rounds before ran otherwise
            log.warning("resuming with settings that differ from the saved run's (saved, now): %s", changed)
    ckpt = checkpoint.Checkpointer(workdir, keep=f.keep_checkpoints)
    writer = metrics_lib.MetricsWriter(workdir, from_step=start)
    (workdir / "train_config.json").write_text(cfg.to_json(indent=1) + "\n")
    target_round = meta.get("target_round")
    seconds = meta.get("seconds", 0.0)
    base_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2)
    last_eval: dict = meta.get("last_eval", {})
    stop = StopRequest()
    stop.install()
    try:
        for r in range(start, f.rounds):
            t0 = time.time()
            round_key = jax.random.fold_in(base_key, r)
            members = clients.sample_round(num_clients, f.client_fraction, private, cfg.seed, r)
            total, weight, nll, count, norms = None, 0.0, 0.0, 0.0, []
            for g in clients.round_groups(train, members, f.group_size, f.group_examples, f.min_examples, axis):
                t, w, a, c, n = group_fn(g.n_pad)(
                    params, round_key, g.clients, g.arrays, g.num_examples, g.weights)
                total = t if total is None else jax.tree.map(jnp.add, total, t)
                weight, nll, count = weight + w, nll + a, count + c
                norms.extend(np.asarray(n)[g.clients >= 0].tolist())
            if total is None:  # a Poisson round that drew no client: the noise alone
                total = jax.tree.map(jnp.zeros_like, params)
            params, opt_state = server(params, opt_state, total, weight, jax.random.fold_in(round_key, 1 << 30))
            done = r + 1
            row = {"loss": float(nll) / max(float(count), 1.0), "clients": len(members),
                   "update_norm": float(np.mean(norms)) if norms else 0.0}
            if private:
                row["epsilon"] = privacy.epsilon(done, f.client_fraction, dp.noise_multiplier, delta)
            elapsed = time.time() - t0
            seconds += elapsed
            row.update(seconds=elapsed, clients_per_s=len(members) / elapsed)
            writer.write(done, "train", row)
            if done % f.eval_every == 0 or done == f.rounds:
                last_eval = evaluate(params, test)
                writer.write(done, "validation", last_eval)
                if target_round is None and f.target_accuracy and last_eval["accuracy"] >= f.target_accuracy:
                    target_round = done
                log.info("round %d: train loss %.4f, test loss %.4f, accuracy %.4f%s (%.1f s/round)", done,
                         row["loss"], last_eval["loss"], last_eval["accuracy"],
                         f", epsilon {row['epsilon']:.3g}" if private else "", elapsed)
            stopping = done < f.rounds and stop.should_stop(done)
            if done % f.checkpoint_every == 0 or done == f.rounds or stopping:
                ckpt.save(done, params, opt_state, {"round": done, "seconds": seconds, "target_round": target_round,
                                                    "last_eval": last_eval, "config": cfg.to_dict()})
            if stopping:
                ckpt.wait()
                return {"step": done, "finished": False, "stopped_by": stop.signal_name}
        ckpt.wait()
    finally:
        stop.restore()
        ckpt.close()
        writer.close()
    summary = {"step": f.rounds, "finished": True, "seconds": round(seconds, 2), "validation": last_eval,
               "test": last_eval, "target_accuracy": f.target_accuracy, "target_round": target_round,
               "clients": num_clients, "wall_seconds": round(time.time() - t_start, 2)}
    if private:
        summary.update(epsilon=privacy.epsilon(f.rounds, f.client_fraction, dp.noise_multiplier, delta), delta=delta)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bigmodel_jax.federated")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics, tokenizer; rerun to resume")
    parser.add_argument("--no-progress", action="store_true", help="accepted for the sweep runner; logs are lines")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n")
        parser.print_help()
        return 0
    try:
        parsed = config_lib.parse_config_args(argv)
        args = parser.parse_args(parsed.rest)
        summary = run(parsed.config, args.workdir)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 3
    if not summary["finished"]:
        print(f"stopped by {summary['stopped_by']} after round {summary['step']} (checkpoint saved); rerun the "
              "same command to resume")
        return EXIT_CODES.get(summary["stopped_by"], 0)
    acc = summary["test"].get("accuracy", math.nan)
    print(f"done: {summary['step']} rounds, test accuracy {acc:.4f}"
          + (f", target {summary['target_accuracy']} reached at round {summary['target_round']}"
             if summary["target_accuracy"] else "")
          + (f", epsilon {summary['epsilon']:.3g} at delta {summary['delta']:.2g}" if "epsilon" in summary else ""))
    return 0
