import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigmodel_jax.optim import accumulate_gradients, build_optimizer, decay_mask, learning_rate_schedule


def optim_cfg(**kw):
    base = dict(name="adamw", lr=1e-3, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1, b1=0.9, b2=0.99,
                eps=1e-8, momentum=0.9, weight_decay=0.1, clip_norm=1.0, l1=0.0, l2=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_warmup_then_cosine_to_min():
    s = learning_rate_schedule(optim_cfg(), 110)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(5e-4)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(60)) == pytest.approx(0.55e-3, rel=1e-3)  # half way down the cosine
    assert float(s(110)) == pytest.approx(1e-4)
    c = learning_rate_schedule(optim_cfg(schedule="constant", warmup_steps=0), 100)
    assert float(c(0)) == float(c(99)) == pytest.approx(1e-3)


def test_weight_decay_skips_norms_and_biases():
    params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3), "scale": jnp.ones(3)}
    assert decay_mask(params) == {"kernel": True, "bias": False, "scale": False}
    tx, _ = build_optimizer(optim_cfg(warmup_steps=0, schedule="constant", weight_decay=0.5, clip_norm=0.0), 10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(updates["kernel"][0, 0]) == pytest.approx(-1e-3 * 0.5)
    assert float(updates["bias"][0]) == 0.0 and float(updates["scale"][0]) == 0.0


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_each_optimizer_minimizes_a_quadratic(name):
    tx, _ = build_optimizer(optim_cfg(name=name, lr=0.1, warmup_steps=0, weight_decay=0.0), 200)
    p = {"w": jnp.array([3.0, -2.0])}
    s = tx.init(p)
    for _ in range(200):
        g = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(p)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
    assert float(jnp.abs(p["w"]).max()) < 0.1


def test_clipping_bounds_the_update_norm():
    tx, _ = build_optimizer(optim_cfg(name="sgd", lr=1.0, momentum=0.0, warmup_steps=0, schedule="constant",
                                      weight_decay=0.0, clip_norm=1.0), 10)
    p = {"w": jnp.zeros(4)}
    u, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(p), p)
    assert float(optax.tree.norm(u)) == pytest.approx(1.0, rel=1e-5)


def test_gradient_accumulation_equals_full_batch():
    w = {"w": jax.random.normal(jax.random.PRNGKey(0), (5, 3))}
    batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (8, 5)),
             "y": jax.random.normal(jax.random.PRNGKey(2), (8, 3))}

    def loss_and_grad(p, b, rng):
        def f(p):
            loss = jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)
            return loss, {"loss": loss}
        return jax.value_and_grad(f, has_aux=True)(p)

    g1, m1 = accumulate_gradients(loss_and_grad, w, batch, 1, jax.random.PRNGKey(0))
    g4, m4 = accumulate_gradients(loss_and_grad, w, batch, 4, jax.random.PRNGKey(0))
    np.testing.assert_allclose(g1["w"], g4["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)


def test_l1_penalty_is_the_gradient_of_an_l1_term_on_matrices_only():
    params = {"kernel": jnp.array([[1.0, -2.0], [0.5, -0.1]]), "bias": jnp.array([3.0, -3.0])}
    grads = jax.tree.map(jnp.zeros_like, params)
    sgd = optim_cfg(name="sgd", momentum=0.0, weight_decay=0.0, clip_norm=0.0, l1=0.01, warmup_steps=0,
                    schedule="constant", lr=1.0)
    tx, _ = build_optimizer(sgd, 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.01 * np.sign(params["kernel"]))
    np.testing.assert_allclose(updates["bias"], 0.0)
    # the same as differentiating the penalty written into the loss
    loss_grad = jax.grad(lambda p: 0.01 * jnp.abs(p["kernel"]).sum())(params)
    np.testing.assert_allclose(updates["kernel"], -loss_grad["kernel"])


def test_l2_penalty_is_the_gradient_of_an_l2_term_on_matrices_only():
    """Coupled L2: the update (plain SGD, lr 1) is minus the gradient of loss + (l2/2) * sum(p^2)
    over the matrices; 1-D params (biases, norm scales) get the loss's gradient alone."""
    params = {"kernel": jnp.array([[1.0, -2.0], [0.5, -0.1]]), "bias": jnp.array([3.0, -3.0]),
              "embed": jnp.array([[0.3, 0.7, -1.5]])}
    x = jnp.array([0.4, -1.2])

    def loss(p):
        return jnp.sum((x @ p["kernel"] + p["bias"]) ** 2) + jnp.sum(p["embed"] ** 3)

    sgd = optim_cfg(name="sgd", momentum=0.0, weight_decay=0.0, clip_norm=0.0, l2=0.1, warmup_steps=0,
                    schedule="constant", lr=1.0)
    tx, _ = build_optimizer(sgd, 10)
    grads = jax.grad(loss)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    penalized = jax.grad(lambda p: loss(p) + 0.1 / 2 * sum(jnp.sum(v ** 2) for v in jax.tree.leaves(p)
                                                          if v.ndim >= 2))(params)
    for key in ("kernel", "embed"):
        np.testing.assert_allclose(updates[key], -penalized[key], rtol=1e-6)
        assert not np.allclose(updates[key], -grads[key])  # the penalty did something
    np.testing.assert_allclose(updates["bias"], -grads["bias"], rtol=1e-6)


def test_l1_and_l2_add_up_and_run_before_clipping():
    """Both penalties are loss terms: their gradients add to the loss's, and clipping bounds the sum."""
    params = {"kernel": jnp.array([[1.0, -2.0], [0.5, -0.1]])}
    zero = jax.tree.map(jnp.zeros_like, params)
    sgd = dict(name="sgd", momentum=0.0, weight_decay=0.0, l1=0.01, warmup_steps=0, schedule="constant", lr=1.0)
    tx, _ = build_optimizer(optim_cfg(**sgd, l2=0.1, clip_norm=0.0), 10)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -(0.01 * np.sign(params["kernel"]) + 0.1 * params["kernel"]),
                               rtol=1e-6)
    tx, _ = build_optimizer(optim_cfg(**sgd, l2=100.0, clip_norm=1.0), 10)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)  # the penalty's gradient was clipped
