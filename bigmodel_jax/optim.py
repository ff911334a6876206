"""The optax chain built from `config.optim`, and gradient accumulation over micro-batches."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then cosine decay to lr * min_lr_ratio at num_steps (or constant)."""
    warmup = max(int(cfg.warmup_steps), 0)
    if cfg.schedule == "cosine":  # decay_steps counts the warmup; at least one step of decay
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(num_steps, warmup + 1),
                                                  end_value=cfg.lr * cfg.min_lr_ratio)
    if warmup == 0:
        return optax.constant_schedule(cfg.lr)
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)],
                                [warmup])


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (kernels and embeddings, as nanoGPT); norm scales and
    biases, all 1-D, are skipped."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def penalty(strength: float, grad_fn: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
    """Adds strength * grad_fn(p) to the gradient of every matrix: the gradient of a penalty term
    in the loss whose derivative per weight is grad_fn, so it runs before clipping and the
    optimizer's scaling, as the loss term would. Norm scales and biases are left alone, as with
    weight decay (decay_mask)."""
    def update(grads, state, params):
        mask = decay_mask(params)
        return jax.tree.map(lambda g, p, m: g + strength * grad_fn(p) if m else g, grads, params, mask), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# config.optim key -> the derivative per weight of its penalty: l1 = strength * sum|p| (subgradient
# sign(p)); l2 = (strength / 2) * sum(p^2) (gradient p), a coupled L2: unlike adamw's decoupled
# weight_decay, Adam's scaling applies to it as to the loss's own gradient
PENALTIES: dict[str, Callable[[jax.Array], jax.Array]] = {"l1": jnp.sign, "l2": lambda p: p}


NONFINITE_POLICIES = ("stop", "skip")  # train.on_nonfinite


def build_optimizer(cfg: ml_collections.ConfigDict, num_steps: int, nonfinite: str = "stop",
                    trainable: Callable[[tuple], bool] | None = None
                    ) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """cfg is `config.optim`; nonfinite is `train.on_nonfinite` (see guard_nonfinite). Returns
    (tx, schedule); call tx.update with value=loss so a non-finite loss is caught too.
    trainable(path) -> bool: only those params are updated and hold optimizer state (LoRA's
    adapters); clipping and penalties see them alone."""
    schedule = learning_rate_schedule(cfg, num_steps)
    if cfg.name == "adamw":
        core = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                           mask=decay_mask)
    elif cfg.name == "adam":
        core = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    else:  # sgd with momentum; weight decay as coupled L2 the way torch.optim.SGD does it
        core = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                           optax.sgd(schedule, momentum=cfg.momentum or None))
    chain = [penalty(cfg[key], grad_fn) for key, grad_fn in PENALTIES.items() if cfg.get(key, 0.0) > 0]
    chain += [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    inner = optax.chain(*chain, core)
    if trainable is not None:
        inner = optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, lambda params: (
            jax.tree_util.tree_map_with_path(lambda path, _: "train" if trainable(path) else "frozen", params)))
    return guard_nonfinite(inner, nonfinite), schedule


class GuardState(NamedTuple):
    inner: Any
    count: jax.Array  # updates seen: the step index of the next one
    skipped: jax.Array  # non-finite steps whose update was dropped, in all
    in_a_row: jax.Array  # ... and since the last finite one
    longest: jax.Array  # the most in a row so far
    first_bad: jax.Array  # the first non-finite step, -1 while there is none


def guard_nonfinite(inner: optax.GradientTransformation, policy: str) -> optax.GradientTransformationExtraArgs:
    """inner's update, applied only when the step's loss (`value=`) and gradient are finite:
    checked inside the compiled step on every step, so no bad value ever reaches the params or
    the optimizer state. policy "skip" drops just the bad step's update; "stop" also latches:
    once a step was bad every later update is dropped too, so the state the host finds at its
    next check, and stops on without saving, is the last good one. The counters live in the
    optimizer state, so checkpoints carry them and a resumed run counts on exactly."""
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {NONFINITE_POLICIES}")

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return GuardState(inner.init(params), zero, zero, zero, zero, jnp.full([], -1, jnp.int32))

    def update(grads, state, params=None, *, value=None, **extra):
        finite = jnp.isfinite(optax.tree.norm(grads))
        if value is not None:
            finite &= jnp.isfinite(value)
        apply = finite if policy == "skip" else finite & (state.first_bad < 0)
        updates, new_inner = inner_update(grads, state.inner, params, value=value, **extra)
        # where() on the updates (not the new params) fuses into the optimizer's own elementwise pass
        updates = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), updates)
        new_inner = jax.tree.map(lambda new, old: jnp.where(apply, new, old), new_inner, state.inner)
        bad = jnp.logical_not(finite)
        in_a_row = jnp.where(bad, state.in_a_row + 1, 0).astype(jnp.int32)
        return updates, GuardState(
            new_inner, state.count + 1, state.skipped + bad.astype(jnp.int32), in_a_row,
            jnp.maximum(state.longest, in_a_row),
            jnp.where(bad & (state.first_bad < 0), state.count, state.first_bad).astype(jnp.int32))

    inner_update = optax.with_extra_args_support(inner).update
    return optax.GradientTransformationExtraArgs(init, update)


def accumulate_gradients(loss_and_grad: Callable, params: Any, batch: dict, num_micro: int,
                         rng: jax.Array) -> tuple[Any, dict]:
    """Gradient and metrics over `num_micro` equal micro-batches, one at a time (lax.scan), so
    activation memory is that of one micro-batch. Each micro-batch counts by its loss weight when
    the task reports one ("weight": the real tokens or examples its mean loss is over, e.g. tags
    of unpadded tokens), else equally; so the result equals the full-batch gradient."""
    if num_micro == 1:
        (_, metrics), grads = loss_and_grad(params, batch, rng)
        return grads, metrics
    # Micro-batch i takes rows i, i+m, i+2m, ...: each device's contiguous shard of the batch
    # splits evenly over the micro-batches, so the reshape moves no data between devices.
    micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1), batch)

    def body(carry, xs):
        i, mb = xs
        (_, metrics), grads = loss_and_grad(params, mb, jax.random.fold_in(rng, i))
        w = metrics.get("weight", jnp.float32(1.0))
        sums, w_sum = carry
        return (jax.tree.map(lambda c, x: c + w * x, sums, (grads, metrics)), w_sum + w), None

    (_, m0), g0 = jax.eval_shape(loss_and_grad, params, jax.tree.map(lambda x: x[0], micro), rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (g0, m0))
    ((grads, metrics), w_sum), _ = jax.lax.scan(body, (zeros, jnp.float32(0.0)), (jnp.arange(num_micro), micro))
    grads, metrics = jax.tree.map(lambda x: x / w_sum, (grads, metrics))
    if "weight" in metrics:
        metrics["weight"] = w_sum
    return grads, metrics


def clip_to_norm(tree: Any, clip: float) -> tuple[Any, jax.Array]:
    """The tree scaled to global L2 norm at most `clip`; returns it and its norm before."""
    norm = optax.tree.norm(tree)
    scale = jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12))
    return jax.tree.map(lambda x: x * scale, tree), norm


def private_gradients(loss_and_grad: Callable, params: Any, batch: dict, num_micro: int, rng: jax.Array,
                      clip: float, noise_multiplier: float, noise_key: jax.Array) -> tuple[Any, dict]:
    """DP-SGD (Abadi et al. 2016): each example's gradient clipped to L2 norm `clip`, summed, Gaussian
    noise of standard deviation noise_multiplier * clip added, divided by the batch size. Examples
    are vmapped within a micro-batch and the micro-batches scanned, so memory holds one micro-batch
    of per-example gradients. Every example counts once (a task's loss "weight" does not apply)."""
    size = jax.tree.leaves(batch)[0].shape[0]
    micro = jax.tree.map(lambda x: x.reshape(num_micro, size // num_micro, *x.shape[1:]), batch)

    def one_example(example, key):
        (_, metrics), grads = loss_and_grad(params, jax.tree.map(lambda x: x[None], example), key)
        clipped, norm = clip_to_norm(grads, clip)
        return clipped, {"loss": metrics["loss"], "example_grad_norm": norm,
                         "clipped": (norm > clip).astype(jnp.float32)}

    def body(carry, xs):
        i, mb = xs
        keys = jax.random.split(jax.random.fold_in(rng, i), size // num_micro)
        grads, metrics = jax.vmap(one_example)(mb, keys)
        return jax.tree.map(lambda c, x: c + x.sum(0), carry, (grads, metrics)), None

    shapes = jax.eval_shape(one_example, jax.tree.map(lambda x: x[0, 0], micro), rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(num_micro), micro))
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(noise_key, len(leaves))
    noisy = [g + noise_multiplier * clip * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
    grads = jax.tree.map(lambda g: g / size, jax.tree.unflatten(treedef, noisy))
    return grads, jax.tree.map(lambda m: m / size, metrics)


def weighted_pmean(grads: Any, metrics: dict, axis_name: str) -> tuple[Any, dict]:
    """The pmap mode's all-reduce: each device's gradient and metrics count by its loss weight
    (when the task reports one, else equally), so the result equals the global-batch gradient."""
    w = metrics.get("weight", jnp.float32(1.0))
    total = jax.lax.psum(w, axis_name)
    grads, metrics = jax.tree.map(lambda x: jax.lax.psum(w * x, axis_name) / total, (grads, metrics))
    if "weight" in metrics:
        metrics["weight"] = total
    return grads, metrics
