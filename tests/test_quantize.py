"""Int8 weight-only quantization: per-channel rounding error bounds, outputs of every family close
to the float model's, LoRA merged in, the source model untouched, generation runs."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax import tasks
from bigmodel_jax.generate import Sampling, generate
from bigmodel_jax.models import lora
from bigmodel_jax.quantize import Int8Dense, Int8Embed, int8_per_channel, quantize_int8, weight_bytes
from tests.conftest import with_moved_adapters
from tests.test_lora import outputs, small


def test_per_channel_int8_rounds_each_weight_to_within_half_its_channels_step():
    w = np.random.default_rng(0).normal(0, 1, (64, 8)).astype(np.float32) * np.arange(1, 9)  # channel scales
    w[:, 3] = 0.0
    q, scale = int8_per_channel(jnp.asarray(w), axis=1)
    assert q.dtype == jnp.int8 and scale.shape == (8,) and int(jnp.abs(q).max()) == 127
    err = np.abs(np.asarray(q, np.float32) * np.asarray(scale) - w)
    assert np.all(err <= np.asarray(scale) / 2 + 1e-6) and np.all(np.asarray(q)[:, 3] == 0)
    np.testing.assert_allclose(np.asarray(scale)[[0, 7]], np.abs(w[:, [0, 7]]).max(0) / 127, rtol=1e-6)


def test_quantized_models_compute_close_to_their_float_weights():
    ids_bt = jnp.asarray(np.random.default_rng(0).integers(1, 60, (2, 16)), jnp.int32)
    for config, extra in (("gpt_char.py", {}), ("bert_cls.py", {"model.num_outputs": 3})):
        model = tasks.build_model(small(config, 0, **extra), nnx.Rngs(params=0))
        before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        q = quantize_int8(model)
        want, got = outputs(model, config, ids_bt), outputs(q, config, ids_bt)
        assert float(jnp.abs(got - want).max()) < 0.02 * float(jnp.abs(want).max())  # rounding, not a bug
        kinds = {type(m) for _, m in nnx.iter_graph(q)}
        assert Int8Dense in kinds and Int8Embed in kinds
        assert weight_bytes(q) < 0.4 * weight_bytes(model)  # 1 byte per weight + scales, norms and biases
        after = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # the float model is left as it was
        assert all(np.array_equal(a, b) for a, b in zip(jax_leaves(before), jax_leaves(after)))


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_adapters_are_merged_before_quantizing_and_a_quantized_gpt_generates():
    model = with_moved_adapters(tasks.build_model(small("gpt_char.py", 0), nnx.Rngs(params=0)))
    ids_bt = jnp.asarray(np.random.default_rng(1).integers(1, 60, (2, 16)), jnp.int32)
    want = model(ids_bt)[0]
    q = quantize_int8(model)
    assert not any(isinstance(m, lora.Adapter) for _, m in nnx.iter_graph(q))
    np.testing.assert_array_equal(q(ids_bt)[0], quantize_int8(lora.merge(nnx.clone(model)))(ids_bt)[0])
    assert float(jnp.abs(q(ids_bt)[0] - want).max()) < 0.05 * float(jnp.abs(want).max())
    rows = generate(q, [[1, 2, 3], [4, 5, 6]], 5, sampling=Sampling(greedy=True))
    assert [len(r) for r in rows] == [5, 5]
