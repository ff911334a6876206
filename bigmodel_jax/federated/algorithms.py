"""FedSGD, FedAvg, FedProx and adaptive server optimizers as two compiled functions.

Client (McMahan et al. 2017, Algorithm 1): E local epochs of SGD (or Adam, fed.client_optimizer)
over minibatches of B examples drawn without replacement, from the round's global weights; FedProx
(Li et al. 2020) adds mu/2 ||w - w_global||^2 to the local loss; FedSGD is E = 1 with one full-batch step (B = 0). The
group update vmaps that over a group of clients (`clients` mesh axis) with the local steps under
lax.scan; each client runs as many steps as its own data needs, later steps leave it unchanged,
so padding examples and empty padding clients never change a result. It returns the weighted sum
of the clients' updates (weights: a client's training targets, tokens or labeled examples; 1 under
DP, each update clipped). What a local step minimizes comes in as a task's `stats` function
(federated/tasks.py): the next-token loss, a classifier's cross-entropy.

Server: the weighted mean update, negated, is a pseudo-gradient for an optax optimizer: SGD at
rate 1 is FedAvg's plain average, Adam / Yogi are FedAdam / FedYogi (Reddi et al. 2021).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bigmodel_jax.optim import clip_to_norm

SERVER_OPTIMIZERS = ("sgd", "adam", "yogi")
CLIENT_OPTIMIZERS = ("sgd", "adam")


def server_optimizer(fed: ml_collections.ConfigDict) -> optax.GradientTransformation:
    if fed.server_optimizer == "sgd":
        return optax.sgd(fed.server_lr, momentum=fed.server_momentum or None)
    if fed.server_optimizer == "adam":
        return optax.adam(fed.server_lr, b1=fed.server_b1, b2=fed.server_b2, eps=fed.server_eps)
    return optax.yogi(fed.server_lr, b1=fed.server_b1, b2=fed.server_b2, eps=fed.server_eps)


def client_optimizer(fed: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The local steps' optimizer, its state fresh each round: SGD as in McMahan et al., or Adam
    (a transformer trained from scratch barely moves under plain SGD in a few rounds; docs/federated.md)."""
    return optax.sgd(fed.client_lr) if fed.client_optimizer == "sgd" else optax.adam(fed.client_lr)


def local_batch_size(fed: ml_collections.ConfigDict, n_pad: int) -> int:
    return n_pad if fed.algorithm == "fedsgd" or fed.local_batch <= 0 else min(fed.local_batch, n_pad)


def make_local_update(stats: Callable, fed: ml_collections.ConfigDict, n_pad: int) -> Callable:
    """(global params, examples {name: [N, ...]}, examples used n, key) -> (update, train loss sum,
    its count) for one client with n of its N (padded) examples. stats(params, batch, real_b) ->
    (loss sum, count, correct) over a batch's real rows (see federated.tasks)."""
    epochs = 1 if fed.algorithm == "fedsgd" else fed.local_epochs
    batch = local_batch_size(fed, n_pad)
    micro = min(fed.micro_batch, batch) if fed.micro_batch > 0 else batch
    chunks = -(-batch // micro)
    steps_per_epoch_max = -(-n_pad // batch)
    mu = fed.prox_mu if fed.algorithm == "fedprox" else 0.0
    tx = client_optimizer(fed)
    grad_sum = jax.value_and_grad(lambda p, b, r: stats(p, b, r)[:2], has_aux=True)

    def batch_grad(params, batch_b, real_b):
        """Gradient of the mean loss over the batch's real targets, summed chunk by chunk."""
        def chunked(x):
            x = jnp.pad(x, [(0, chunks * micro - batch)] + [(0, 0)] * (x.ndim - 1))
            return x.reshape(chunks, micro, *x.shape[1:])

        def chunk(acc, xs):
            (loss, count), g = grad_sum(params, *xs)
            return jax.tree.map(jnp.add, acc, (g, loss, count)), None

        zero = (jax.tree.map(jnp.zeros_like, params), jnp.zeros(()), jnp.zeros(()))
        (g, loss, count), _ = jax.lax.scan(chunk, zero, (jax.tree.map(chunked, batch_b), chunked(real_b)))
        return jax.tree.map(lambda x: x / jnp.maximum(count, 1.0), g), loss, count

    def local_update(params0, examples_n, n, key):
        steps_per_epoch = jnp.maximum(-(-n // batch), 1)
        total_steps = epochs * (-(-n // batch))  # 0 for an empty (padding) client
        keys = jax.random.split(key, epochs)
        real = jnp.arange(n_pad) < n
        # an epoch's order: the n real examples in random order, the padding after them
        perms = jax.vmap(lambda k: jnp.argsort(jnp.where(real, jax.random.uniform(k, (n_pad,)), 2.0)))(keys)
        perms = jnp.pad(perms, ((0, 0), (0, steps_per_epoch_max * batch - n_pad)))

        def step(carry, s):
            params, opt_state, loss_sum, count_sum = carry
            epoch, j = jnp.minimum(s // steps_per_epoch, epochs - 1), s % steps_per_epoch
            pos = j * batch + jnp.arange(batch)
            rows = jax.lax.dynamic_slice(perms[epoch], (j * batch,), (batch,))
            real_b = (pos < n) & (s < total_steps)
            g, loss, count = batch_grad(params, jax.tree.map(lambda a: a[rows], examples_n), real_b)
            if mu:
                g = jax.tree.map(lambda gp, p, p0: gp + mu * (p - p0), g, params, params0)
            updates, new_state = tx.update(g, opt_state, params)

            def keep(new, old):  # a step past the client's data changes nothing
                return jnp.where(s < total_steps, new, old)

            params = jax.tree.map(keep, optax.apply_updates(params, updates), params)
            return (params, jax.tree.map(keep, new_state, opt_state), loss_sum + loss, count_sum + count), None

        carry = (params0, tx.init(params0), jnp.zeros(()), jnp.zeros(()))
        (params, _, loss_sum, count), _ = jax.lax.scan(step, carry, jnp.arange(epochs * steps_per_epoch_max))
        return jax.tree.map(jnp.subtract, params, params0), loss_sum, count

    return local_update


def make_group_update(stats: Callable, fed: ml_collections.ConfigDict, clip: float, n_pad: int) -> Callable:
    """(params, round key, clients [G], examples {name: [G, N, ...]}, counts [G], weights [G]) ->
    (weighted update sum, weight sum, train loss sum, its count, update norms [G]). A client's key
    is folded from the round key and its index, so results do not depend on how clients are grouped."""
    local = jax.vmap(make_local_update(stats, fed, n_pad), in_axes=(None, 0, 0, 0))

    def group_update(params, round_key, clients, examples, counts, weights):
        keys = jax.vmap(lambda k: jax.random.fold_in(round_key, k))(jnp.maximum(clients, 0))
        updates, loss, count = local(params, examples, counts, keys)
        if clip > 0:  # DP-FedAvg: every real client counts once, its update clipped to `clip`
            updates, norms = jax.vmap(clip_to_norm, in_axes=(0, None))(updates, clip)
            weights = (clients >= 0).astype(jnp.float32)
        else:
            norms = jax.vmap(optax.tree.norm)(updates)
        total = jax.tree.map(lambda u: jnp.tensordot(weights, u, axes=1), updates)
        return total, weights.sum(), loss.sum(), count.sum(), norms

    return group_update


def make_server_update(tx: optax.GradientTransformation, noise_std: float, denominator: float | None) -> Callable:
    """(params, opt_state, update sum, weight sum, noise key) -> (params, opt_state). With
    `denominator` (DP: the expected number of clients, fixed so one client's influence is bounded)
    the sum gets Gaussian noise of standard deviation noise_std first; otherwise the mean is
    over the round's actual weights."""

    def server_update(params, opt_state, total, weight, noise_key):
        if denominator is not None:
            leaves, treedef = jax.tree.flatten(total)
            keys = jax.random.split(noise_key, len(leaves))
            noisy = [x + noise_std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
            mean = jax.tree.map(lambda x: x / denominator, jax.tree.unflatten(treedef, noisy))
        else:
            mean = jax.tree.map(lambda x: x / jnp.maximum(weight, 1e-12), total)
        pseudo_grad = jax.tree.map(jnp.negative, mean)
        updates, opt_state = tx.update(pseudo_grad, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return server_update
