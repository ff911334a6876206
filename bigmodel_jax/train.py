"""The one training loop for every family.

    python -m bigmodel_jax.train --config configs/gpt_char.py[:variant] --workdir runs/gpt_char [--config.a.b=v ...]
    python -m bigmodel_jax.train --flagfile=run.flags          # the same flags, one per line, from a file

Rerunning with the same workdir resumes from the newest checkpoint: params, optimizer state,
step, data iterator position and early-stopping counters, so the resumed run sees the same
batches and reaches the same losses as an unbroken one.
"""

from __future__ import annotations

if __name__ == "__main__":  # the allocator is fixed when a process starts: choose it before jax loads
    from bigmodel_jax import allocator

    allocator.reexec()

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax import checkpoint, config as config_lib, distributed, fault_injection, metrics as metrics_lib
from bigmodel_jax import privacy, sharding, tasks, transfer
from bigmodel_jax.errors import ConfigError, DataError, RunError, WeightsError
from bigmodel_jax.models import lora
from bigmodel_jax.optim import accumulate_gradients, build_optimizer, private_gradients, weighted_pmean
from bigmodel_jax.preemption import EXIT_CODES, StopRequest
from bigmodel_jax.tasks.protocol import EvalSet

log = logging.getLogger("bigmodel_jax.train")


@dataclass
class TrainResult:
    step: int
    train_losses: dict[int, float] = field(default_factory=dict)  # step -> loss at each log step
    val_losses: dict[int, float] = field(default_factory=dict)
    val_metrics: dict[int, dict] = field(default_factory=dict)  # step -> every validation metric
    metric: str = "loss"  # train.eval_metric
    best_metric: float = math.nan  # its best validation value
    best_step: int = 0
    test_metrics: dict = field(default_factory=dict)  # the test split, with the params the run ends on
    stopped_early: bool = False
    stopped_by: str = ""  # "SIGTERM" / "SIGINT" when a signal stopped the run (a checkpoint was saved first)


def enable_compilation_cache(path: str) -> None:
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def init_state(cfg: ml_collections.ConfigDict, task, mesh: jax.sharding.Mesh):
    """Abstract model -> shardings from the logical rules -> params and optimizer state created
    directly in their shards (no full copy on one device). Returns
    (graphdef, params, opt_state, param_sh, opt_sh, tx, schedule)."""
    graphdef, abstract_params, specs = tasks.abstract_model(cfg)
    param_sh = sharding.shardings_for(abstract_params, specs, mesh)

    def init_params(key):  # a LoRA run's frozen base in model.lora.base_dtype
        return lora.store_frozen(cfg, nnx.to_pure_dict(nnx.state(tasks.build_model(cfg, nnx.Rngs(params=key)),
                                                                 nnx.Param)))

    trainable = lora.trainable(cfg)
    tx, schedule = build_optimizer(cfg.optim, cfg.train.num_steps, cfg.train.on_nonfinite, trainable=trainable)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    state_sh = param_sh if trainable is None else jax.tree_util.tree_map_with_path(  # LoRA: the trained ones' only
        lambda path, sh: sh if trainable(path) else optax.MaskedNode(), param_sh)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, state_sh,
                                   transform_non_params=lambda _: sharding.replicated(mesh))
    init_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0)
    params = jax.jit(init_params, out_shardings=param_sh)(init_key)
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
    return graphdef, params, opt_state, param_sh, opt_sh, tx, schedule


def make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh):
    """The compiled step (params, opt_state, batch, step) -> (params, opt_state, metrics).

    jit mode: one SPMD program over the mesh; the shardings of state and batch come from the
    logical rules and XLA inserts the collectives (FSDP all-gathers, tensor-parallel all-reduces,
    the data-parallel gradient reduction). pmap mode: classic data parallelism, the same loss on
    each device's rows and an explicit pmean of the gradients; the state stays the same replicated
    tree as in jit mode, so checkpoints move freely between the two."""
    dropout_base = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    noise_base = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 3)
    pmap_mode = cfg.parallel.mode == "pmap"
    dp_clip, dp_noise = cfg.optim.get("dp_clip", 0.0), cfg.optim.get("dp_noise", 0.0)
    trainable = lora.trainable(cfg)

    def loss_and_grad(params, batch, rng):
        def f(p):  # training always gets rngs (None means evaluation); a rate of 0 draws nothing
            return task.loss_fn(nnx.merge(graphdef, p), batch, nnx.Rngs(dropout=rng))
        if trainable is None:
            return jax.value_and_grad(f, has_aux=True)(params)
        # LoRA: differentiate what trains alone (no weight gradients of the frozen base are
        # computed); the base's gradient is zeros, which the optimizer ignores (build_optimizer)
        train_part, frozen = lora.split(params, trainable)
        out, grads = jax.value_and_grad(lambda t: f(lora.join(t, frozen)), has_aux=True)(train_part)
        return out, lora.join(grads, jax.tree.map(jnp.zeros_like, frozen))

    def step_fn(params, opt_state, batch, step):
        rng = jax.random.fold_in(dropout_base, step)
        if pmap_mode:  # each device draws its own dropout masks (jit mode draws the global batch's)
            rng = jax.random.fold_in(rng, jax.lax.axis_index("data"))
        if dp_clip > 0:  # DP-SGD: clipped per-example gradients plus noise (jit mode only: config.validate)
            grads, metrics = private_gradients(loss_and_grad, params, batch, cfg.train.grad_accum_steps, rng,
                                               dp_clip, dp_noise, jax.random.fold_in(noise_base, step))
        else:
            grads, metrics = accumulate_gradients(loss_and_grad, params, batch, cfg.train.grad_accum_steps, rng)
        if pmap_mode:
            grads, metrics = weighted_pmean(grads, metrics, "data")
        updates, opt_state = tx.update(grads, opt_state, params, value=metrics["loss"])  # skips a non-finite step
        params = optax.apply_updates(params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=schedule(step))
        return params, opt_state, metrics

    if pmap_mode:  # state in and out replicated (in_axes/out_axes None), batch [devices, rows, ...]
        pmapped = jax.pmap(step_fn, axis_name="data", in_axes=(None, None, 0, None), out_axes=None,
                           devices=list(mesh.devices.flat), donate_argnums=(0, 1))
        if jax.process_count() == 1:
            return pmapped
        rep = sharding.replicated(mesh)

        # With several processes pmap hands back each process's own replicas; relabel them (no
        # copy; a few Python calls per array and step) as one global array over the mesh, which
        # is what Orbax and the jit-compiled evaluation take.
        def call(*args):
            return jax.tree.map(lambda x: sharding.as_global(x, rep), pmapped(*args))

        call.lower = pmapped.lower
        return call
    batch_sh = sharding.batch_sharding(mesh)
    rep = sharding.replicated(mesh)
    return sharding.under_mesh(jax.jit(step_fn, in_shardings=(param_sh, opt_sh, batch_sh, rep),
                                       out_shardings=(param_sh, opt_sh, rep), donate_argnums=(0, 1)), mesh)


def make_eval_step(graphdef, task, param_sh, mesh):
    """The compiled (params, batch) -> each example's outputs (task.eval_fn, plus the batch's
    "weight" and "index" when it has them), gathered on every process."""
    def eval_fn(params, batch):
        outputs = task.eval_fn(nnx.merge(graphdef, params), batch)
        return dict(outputs, **{k: batch[k] for k in ("weight", "index") if k in batch})

    return sharding.under_mesh(jax.jit(eval_fn, in_shardings=(param_sh, sharding.batch_sharding(mesh)),
                                       out_shardings=sharding.replicated(mesh)), mesh)


def evaluate(eval_step, params, eval_set: EvalSet, mesh, task) -> dict[str, float]:
    """The split's metrics from every real example's outputs (padding rows dropped, the split's
    order restored), computed by the task over the whole split: a ratio from corpus counts, never
    a mean of per-batch values."""
    parts = [jax.device_get(eval_step(params, sharding.put_batch(b, mesh))) for b in eval_set.batches]
    outputs = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    if "weight" in outputs:
        real = outputs.pop("weight") > 0
        outputs = {k: v[real] for k, v in outputs.items()}
    if "index" in outputs:
        order = np.argsort(outputs.pop("index"), kind="stable")
        outputs = {k: v[order] for k, v in outputs.items()}
    return task.corpus_metrics(outputs, eval_set.reference)


def check_same_model(workdir: Path, cfg: ml_collections.ConfigDict) -> None:
    """A workdir's checkpoints only resume into the model they were trained with; say so plainly
    rather than failing to restore (or, worse, treating the checkpoint as unreadable)."""
    meta = checkpoint.read_meta(workdir / "checkpoints")
    if meta is None:
        return
    saved = json.loads(meta["config"])["model"]
    if "lora" in cfg.model:  # settings added since the save take their defaults; the adapters' dropout is free too
        saved["lora"] = {**lora.lora_config().to_dict(), **(saved.get("lora") or {}),
                         "dropout": cfg.model.lora.get("dropout", 0.0)}
    # precision, regularization, remat, the attention kernel and layer scanning may change between runs
    # (the same weights)
    free = ("dtype", "dropout", "drop_path", "remat", "label_smoothing", "attention_impl", "scan_layers")
    diff = {k: (saved.get(k), v) for k, v in cfg.model.to_dict().items() if k not in free and saved.get(k) != v}
    if diff:
        key = sorted(diff)[0]
        raise ConfigError(
            f"model.{key}", diff[key][1],
            f"{workdir} holds checkpoints of a different model (saved vs now: {diff}); "
            "use a new --workdir or the saved model settings")


def check_writable(workdir: Path) -> None:
    """A workdir the run cannot write is an error now, not after the first hour of training."""
    probe = workdir / f".write_test.{jax.process_index()}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError("--workdir", str(workdir), f"a folder this process can create and write ({e})") from None


def make_data(cfg: ml_collections.ConfigDict, task, workdir: Path):
    """The task's data for this process. With several processes, process 0 prepares first (TFDS
    builders, tokenizer files in the workdir) while the others wait at a barrier, then they read
    what it wrote: no two processes write the same file."""
    if jax.process_index() != 0:
        distributed.barrier("data prepared")
    data = task.make_data(cfg, workdir, jax.process_index(), jax.process_count())
    if jax.process_index() == 0:
        distributed.barrier("data prepared")
    return data


def train(cfg: ml_collections.ConfigDict, workdir: str | Path, progress: bool | None = None,
          devices: list | None = None, stop_after: int | None = None,
          user_set: Collection[str] = ()) -> TrainResult:
    """Trains (or resumes) in workdir. devices: a subset of jax.devices() (tests), default all.
    stop_after: leave the loop after that step as if killed (the schedule still spans num_steps).
    user_set: the config keys set on the command line; with init_from, one that disagrees with
    the source's architecture is an error (the others are replaced by the source's, and logged)."""
    workdir = Path(workdir)
    t_start = time.time()
    num_devices = len(devices) if devices is not None else jax.device_count()
    cfg = transfer.apply_source_architecture(cfg, user_set)
    config_lib.validate(cfg, num_devices, jax.process_count())  # before anything compiles
    check_writable(workdir)
    enable_compilation_cache(cfg.compilation_cache_dir)
    task = tasks.get(cfg.task)
    mesh = sharding.make_mesh(sharding.mesh_shape(cfg, num_devices), devices)
    log.info("%s mode, mesh %s over %d devices (%s), %d process(es)", cfg.parallel.mode, dict(mesh.shape),
             num_devices, jax.devices()[0].device_kind, jax.process_count())
    is_main = jax.process_index() == 0
    data = make_data(cfg, task, workdir)
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # a private copy: the vocab comes from the data
    cfg.model.update(data.model_overrides)
    check_same_model(workdir, cfg)

    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = init_state(cfg, task, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    sizes = {"params": n_params, "trained_params": lora.trained_count(cfg, params),  # for summary.json
             "param_bytes": sum(x.nbytes for x in jax.tree.leaves(params)),
             "optimizer_bytes": sum(x.nbytes for x in jax.tree.leaves(opt_state))}
    train_step = make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh)
    eval_step = make_eval_step(graphdef, task, param_sh, mesh)

    data_iter = iter(data.train)
    result = TrainResult(step=0, metric=cfg.train.eval_metric)
    higher_is_better = config_lib.EVAL_METRICS[result.metric]
    evals_since_best, seconds_before = 0, 0.0
    restored = checkpoint.restore(workdir / "checkpoints", checkpoint.abstract_like(params, param_sh),
                                  checkpoint.abstract_like(opt_state, opt_sh), set_aside_unreadable=True)
    distributed.barrier("looked for checkpoints")  # before anyone creates the checkpoint folders
    ckpt = checkpoint.Checkpointer(workdir, keep=cfg.train.keep_checkpoints)
    if restored is not None:
        result.step, params, opt_state, meta = restored
        data_iter.set_state(meta["data_state"])
        result.best_metric, result.best_step = meta.get("best_metric", math.nan), meta.get("best_step", 0)
        evals_since_best = meta.get("evals_since_best", 0)
        seconds_before = meta.get("seconds", 0.0)
        log.info("resumed from %s at step %d", workdir / "checkpoints" / str(result.step), result.step)
    elif cfg.init_from:
        source = task.adapt_source(transfer.source_params(cfg.init_from),
                                   {k: v.shape for k, v in transfer.flat_params(params).items()}, cfg)
        params = transfer.transfer_params(params, param_sh, source, cfg.init_from)
    log.info("model: %s params%s; train %s, validation %s", f"{n_params:,}", lora.trained_note(cfg, params),
             data.train_size, data.validation.size)

    throughput = metrics_lib.Throughput(
        cfg.train.batch_size, cfg.model.num_layers, cfg.model.width, task.matmul_params(cfg),
        task.tokens_per_example(cfg), metrics_lib.peak_flops_per_device(cfg.model.dtype) * num_devices)
    # rows after the checkpoint resumed from are dropped: the rerun logs those steps again, as an unbroken run did once
    writer = metrics_lib.MetricsWriter(workdir, enabled=is_main, from_step=result.step)
    if is_main:  # what experiments.report reads to tell runs apart (not config.json: that name marks a HF directory)
        (workdir / "train_config.json").write_text(cfg.to_json(indent=1) + "\n")

    def elapsed() -> float:  # training seconds across resumes: earlier processes' (from the checkpoint) + this one's
        return seconds_before + time.time() - t_start

    def meta_now(step: int) -> dict:
        return {"step": step, "data_state": data_iter.get_state(), "config": cfg.to_json(),
                "best_metric": result.best_metric, "best_step": result.best_step,
                "evals_since_best": evals_since_best, "seconds": elapsed()}

    def check_finite(step: int) -> int:
        """Before anything is logged, evaluated or saved: stops the run on a non-finite step as
        train.on_nonfinite says (the compiled step already kept it out of the state). Returns the
        number of steps skipped so far."""
        g = {k: int(v) for k, v in jax.device_get(opt_state._asdict()).items() if k != "inner"}
        policy, limit = cfg.train.on_nonfinite, cfg.train.max_nonfinite_skips
        if g["first_bad"] < 0 or (policy == "skip" and g["longest"] < limit):
            return g["skipped"]
        newest = ckpt.newest_step()
        kept = (f"the newest checkpoint, {workdir / 'checkpoints' / str(newest)}, is kept" if newest is not None
                else "no checkpoint was written yet")
        if policy == "stop":
            what = (f"the loss or gradient of step {g['first_bad'] + 1} is not finite (NaN or Inf); the run stopped "
                    "without applying or saving it (train.on_nonfinite='stop')")
        else:
            what = (f"{g['longest']} steps in a row had a non-finite loss or gradient (train.max_nonfinite_skips="
                    f"{limit}; {g['skipped']} skipped in all, the first at step {g['first_bad'] + 1})")
        raise RunError(f"{what}; {kept}. Lower optim.lr, set optim.clip_norm, check the data"
                       + (", or set train.on_nonfinite='skip' to drop such steps" if policy == "stop" else ""))

    def run_eval(step: int) -> None:
        nonlocal evals_since_best
        check_finite(step)
        fault_injection.point("eval", step)
        ev = evaluate(eval_step, params, data.validation, mesh, task)
        result.val_losses[step], result.val_metrics[step] = ev["loss"], ev
        writer.write(step, "validation", ev)
        value, best = ev[result.metric], result.best_metric
        if math.isnan(best) or (value > best if higher_is_better else value < best):
            result.best_metric, result.best_step, evals_since_best = value, step, 0
            ckpt.save(step, params, opt_state, meta_now(step), best=True)
        else:
            evals_since_best += 1
        shown = "  ".join(f"{k} {v:.4f}" for k, v in ev.items() if k != "perplexity" or result.metric == "loss")
        log.info("step %d  validation %s  (best %s %.4f at step %d)", step, shown, result.metric,
                 result.best_metric, result.best_step)
        if bar is not None:
            bar.update(task_id, val=f"{value:.4f}")

    bar = metrics_lib.make_progress(is_main and (sys.stderr.isatty() if progress is None else progress))
    task_id = None
    if bar is not None:
        bar.start()
        task_id = bar.add_task("train", total=cfg.train.num_steps, completed=result.step,
                               loss="-", val="-", tps="-", mfu="-")

    def save(step: int) -> None:
        check_finite(step)
        ckpt.save(step, params, opt_state, meta_now(step))
        fault_injection.point("saving", step)
        fault_injection.point("saved", step, before=ckpt.wait)

    step = result.step
    throughput.restart()
    stop = StopRequest()
    try:
        stop.install()
        while step < cfg.train.num_steps:
            host_batch = next(data_iter)
            throughput.add(host_batch)
            batch = sharding.put_batch(host_batch, mesh, per_device=cfg.parallel.mode == "pmap")
            params, opt_state, m = train_step(params, opt_state, batch, jnp.asarray(step, jnp.int32))
            step += 1
            fault_injection.point("step", step)
            if step % cfg.train.log_every == 0 or step == cfg.train.num_steps:
                m = {k: float(v) for k, v in jax.device_get(m).items() if k != "weight"}
                m["skipped_steps"] = check_finite(step)
                m["tokens_per_s"], m["mfu"] = throughput.read()
                if cfg.optim.get("dp_noise", 0.0) > 0 and data.train_examples:
                    m["epsilon"] = privacy.epsilon(step, cfg.train.batch_size / data.train_examples, cfg.optim.dp_noise,
                                                   cfg.optim.dp_delta or privacy.default_delta(data.train_examples))
                result.train_losses[step] = m["loss"]
                writer.write(step, "train", m)
                if bar is not None:
                    bar.update(task_id, completed=step, loss=f"{m['loss']:.4f}", tps=f"{m['tokens_per_s']:,.0f}",
                               mfu=f"{100 * m['mfu']:.1f}%")
                elif is_main:
                    log.info("step %d  loss %.4f  %s tok/s  MFU %.1f%%", step, m["loss"],
                             f"{m['tokens_per_s']:,.0f}", 100 * m["mfu"])
                throughput.restart()
            if step % cfg.train.eval_every == 0 or step == cfg.train.num_steps:
                run_eval(step)
                if cfg.train.patience and evals_since_best >= cfg.train.patience:
                    log.info("early stop at step %d: no better validation %s in %d evaluations",
                             step, result.metric, evals_since_best)
                    result.stopped_early = True
                throughput.restart()
            saved = step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps or result.stopped_early
            if saved:
                save(step)
                throughput.restart()
            if stop.should_stop(step):
                if not saved:
                    save(step)
                ckpt.wait()
                result.stopped_by = stop.signal_name
                log.warning("stopped by %s at step %d; checkpoint %s is saved. Rerun the same command to resume.",
                            stop.signal_name, step, workdir / "checkpoints" / str(step))
                break
            if result.stopped_early or step == stop_after:
                break
        ckpt.wait()
        # not a simulated kill (stop_after) nor a signal
        finished = (step >= cfg.train.num_steps or result.stopped_early) and not result.stopped_by
        if finished and cfg.train.restore_best and result.best_step:
            params = checkpoint.restore(workdir / "best", checkpoint.abstract_like(params, param_sh))[1]
            log.info("restored the best params (step %d, validation %s %.4f)", result.best_step, result.metric,
                     result.best_metric)
        if finished and data.test is not None:
            result.test_metrics = evaluate(eval_step, params, data.test, mesh, task)
            writer.write(step, "test", result.test_metrics)
            log.info("test split (%s params): %s", f"best, step {result.best_step}" if cfg.train.restore_best
                     else "final", "  ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items()))
            if is_main:
                (workdir / "test_metrics.json").write_text(json.dumps(
                    dict(result.test_metrics, step=result.best_step if cfg.train.restore_best else step), indent=1))
        if finished and is_main and (result.val_metrics or not (workdir / "summary.json").exists()):
            metrics_lib.write_summary(workdir, result, step, sizes, elapsed())
    finally:
        stop.restore()
        if bar is not None:
            bar.stop()
        writer.close()
        ckpt.close()  # waits for a save in flight; a failed one raises RunError saying what is kept
    result.step = step
    return result


class _OneLine(logging.Filter):
    """Other libraries' errors in one line: when a checkpoint write fails (a full disk), Orbax's
    writer threads and asyncio each log the same exception with a traceback, dozens of them, before
    our own message says what happened and what is kept. Ours keep their tracebacks (none expected)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("bigmodel_jax") and record.levelno >= logging.ERROR:
            if record.exc_info:
                record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"[:400]
                record.args, record.exc_info, record.exc_text = None, None, None
            record.msg = str(record.msg)[:400]
        return True


def _quiet_background_errors() -> None:
    import threading

    for handler in logging.getLogger().handlers:
        handler.addFilter(_OneLine())
    threading.excepthook = lambda a: log.error("background thread %s: %r", a.thread.name if a.thread else "?",
                                               a.exc_value)
    sys.unraisablehook = lambda u: log.error("ignored in background: %r", u.exc_value)


def main(argv: list[str] | None = None) -> int:
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    _quiet_background_errors()
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bigmodel_jax.train")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics, tokenizer; rerun to resume")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    distributed.add_flags(parser)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nEvery config field is an override (ml_collections.config_flags): "
              "--config.train.num_steps=100, --config.model.num_layers=6, ... (see the config file).\n")
        parser.print_help()
        return 0
    try:
        parsed = config_lib.parse_config_args(argv)
        args = parser.parse_args(parsed.rest)
        if (problem := distributed.check_flags(args)) is not None:
            parser.error(problem)
        distributed.initialize(args)  # before anything else touches the devices
        result = train(parsed.config, args.workdir, progress=False if args.no_progress else None,
                       user_set=set(parsed.overrides))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (DataError, WeightsError) as e:
        print(f"{'data' if isinstance(e, DataError) else 'weights'} error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 3
    if result.stopped_by:
        print(f"stopped by {result.stopped_by} at step {result.step} (checkpoint saved); rerun the same command "
              "to resume")
        return EXIT_CODES[result.stopped_by]
    if jax.process_index() == 0:
        print(f"done: step {result.step}, best validation {result.metric} {result.best_metric:.4f} "
              f"(step {result.best_step})" + (" (stopped early)" if result.stopped_early else "")
              + "".join(f", test {k} {v:.4f}" for k, v in result.test_metrics.items()))
    return 0


if __name__ == "__main__":
    distributed.exit_with(main)
