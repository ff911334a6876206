"""DP-SGD in the trainer: clipped per-example gradients against a plain loop, the noise, the budget."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bigmodel_jax import privacy, tasks
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.optim import private_gradients
from tests.conftest import tiny_config


def setup(tfds_dir, **overrides):
    cfg = tiny_config(tfds_dir, **{"model.vocab_size": 40, **overrides})
    task = tasks.get("causal_lm")
    graphdef, state = nnx.split(task.build_model(cfg, nnx.Rngs(params=0)), nnx.Param)
    params = nnx.to_pure_dict(state)
    ids = np.random.default_rng(0).integers(0, 40, (8, 33)).astype(np.int32)
    batch = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:])}

    def loss_and_grad(p, b, rng):
        return jax.value_and_grad(lambda q: task.loss_fn(nnx.merge(graphdef, q), b, nnx.Rngs(dropout=rng)),
                                  has_aux=True)(p)

    return params, batch, loss_and_grad


@pytest.mark.parametrize("num_micro", [1, 4])
def test_private_gradients_equal_a_loop_over_clipped_examples(tfds_dir, num_micro):
    params, batch, loss_and_grad = setup(tfds_dir)
    clip = 0.05  # below most examples' gradient norms, so clipping acts
    grads, metrics = jax.jit(lambda p, b: private_gradients(loss_and_grad, p, b, num_micro, jax.random.PRNGKey(0),
                                                            clip, 0.0, jax.random.PRNGKey(1)))(params, batch)
    want, norms = None, []
    for i in range(8):
        (_, _), g = loss_and_grad(params, jax.tree.map(lambda x: x[i:i + 1], batch), jax.random.PRNGKey(0))
        norm = float(optax.tree.norm(g))
        norms.append(norm)
        g = jax.tree.map(lambda x: x * min(1.0, clip / norm), g)
        want = g if want is None else jax.tree.map(jnp.add, want, g)
    want = jax.tree.map(lambda x: x / 8, want)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-8)
    assert metrics["clipped"] == pytest.approx(np.mean([n > clip for n in norms]))
    assert metrics["example_grad_norm"] == pytest.approx(np.mean(norms), rel=1e-4)
    assert 0 < metrics["clipped"]


def test_private_gradients_add_noise_of_the_stated_scale(tfds_dir):
    params, batch, loss_and_grad = setup(tfds_dir)

    def grads(noise):
        return private_gradients(loss_and_grad, params, batch, 1, jax.random.PRNGKey(0), 0.5, noise,
                                 jax.random.PRNGKey(1))[0]

    diff = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(grads(2.0)), jax.tree.leaves(grads(0.0)))])
    assert diff.size > 10_000 and np.std(diff * 8) == pytest.approx(2.0 * 0.5, rel=0.03)  # z * clip on the sum


def test_a_dp_sgd_run_logs_its_epsilon(tfds_dir, tmp_path):
    from bigmodel_jax import train

    cfg = tiny_config(tfds_dir, **{"optim.dp_clip": 1.0, "optim.dp_noise": 1.1, "train.num_steps": 4,
                                   "train.eval_every": 4, "train.checkpoint_every": 4})
    train.train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "train"]
    data = tasks.get("causal_lm").make_data(cfg, tmp_path)
    n = data.train_examples
    assert n > 10_000 and [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["epsilon"] == pytest.approx(privacy.epsilon(r["step"], 8 / n, 1.1, privacy.default_delta(n)))
        assert 0 <= r["clipped"] <= 1
    assert rows[0]["epsilon"] < rows[-1]["epsilon"] < float("inf")


@pytest.mark.parametrize("overrides, key", [({"optim.dp_noise": 1.0}, "optim.dp_noise"),
                                            ({"optim.dp_clip": 1.0, "parallel.mode": "pmap"}, "parallel.mode"),
                                            ({"optim.dp_clip": -1.0}, "optim.dp_clip")])
def test_bad_dp_settings_are_refused(tfds_dir, overrides, key):
    from bigmodel_jax import config as config_lib

    with pytest.raises(ConfigError, match=key):
        config_lib.validate(tiny_config(tfds_dir, **overrides), num_devices=1)
