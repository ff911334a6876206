"""The one weight-loading routine (weights.load) on a small model with a known name table: each
check it makes, and the one error format (file, tensor, expected vs found shape)."""

import logging

import numpy as np
import pytest
from flax import nnx

from bigmodel_jax import weights
from bigmodel_jax.errors import WeightsError
from bigmodel_jax.models.layers import Dense
from bigmodel_jax.weights import Group, fused, same, transposed


class Tiny(nnx.Module):
    def __init__(self, layers: int = 2):
        rngs = nnx.Rngs(0)
        self.blocks = nnx.List([Dense(3, 4, (None, None), rngs=rngs) for _ in range(layers)])
        self.head = Dense(4, 2, (None, None), rngs=rngs)


def table(model, head=True):
    pairs = []
    for i, d in enumerate(model.blocks):
        pairs += [transposed(d.kernel, f"layer.{i}.weight"), same(d.bias, f"layer.{i}.bias")]
    groups = [Group("encoder", pairs)]
    if head:
        groups.append(Group("head", [transposed(model.head.kernel, "head.weight"), same(model.head.bias, "head.bias")],
                            fresh=weights.zeros))
    return groups


def tensors(layers=2, head=True):
    rng = np.random.default_rng(0)
    t = {}
    for i in range(layers):
        t[f"layer.{i}.weight"] = rng.normal(size=(4, 3)).astype(np.float32)  # torch layout [out, in]
        t[f"layer.{i}.bias"] = rng.normal(size=(4,)).astype(np.float32)
    if head:
        t["head.weight"], t["head.bias"] = rng.normal(size=(2, 4)).astype(np.float32), np.ones(2, np.float32)
    return t


def load(model, t, **kw):
    return weights.load(model, t, table(model), source="f.safetensors", family="Tiny", layers=(len(model.blocks),
                        "layer.{}.weight"), **kw)


def test_loads_every_tensor_in_our_layout_into_an_abstract_model_and_exports_it_back():
    model = nnx.eval_shape(lambda: Tiny())
    t = tensors()
    assert load(model, t) == []
    np.testing.assert_array_equal(np.asarray(model.blocks[1].kernel[...]), t["layer.1.weight"].T)
    back = weights.to_file(table(model))
    assert set(back) == set(t) and all(np.array_equal(back[k], t[k]) for k in t)


def test_missing_tensor_names_the_file_and_the_tensor():
    t = tensors()
    del t["layer.1.bias"]
    with pytest.raises(WeightsError, match=r"f.safetensors: not a Tiny checkpoint.*1 tensors missing.*layer.1.bias"):
        load(nnx.eval_shape(lambda: Tiny()), t)


def test_shape_clash_gives_expected_and_found_in_the_file_layout():
    t = tensors()
    t["layer.0.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(WeightsError, match=r"f.safetensors: tensor 'layer.0.weight'.*expected shape \(4, 3\), "
                                           r"found \(5, 3\)") as e:
        load(nnx.eval_shape(lambda: Tiny()), t)
    assert (e.value.tensor, e.value.expected, e.value.found) == ("layer.0.weight", (4, 3), (5, 3))


def test_a_deeper_file_is_refused_not_truncated():
    with pytest.raises(WeightsError, match=r"more than the model's 2 layers \('layer.2.weight' is there\)"):
        load(nnx.eval_shape(lambda: Tiny()), tensors(layers=3))


def test_optional_group_absent_is_fresh_and_logged_partial_is_an_error(caplog):
    model = nnx.eval_shape(lambda: Tiny())
    with caplog.at_level(logging.INFO):
        assert load(model, tensors(head=False)) == ["head"]
    assert "f.safetensors has no head" in caplog.text
    assert not np.asarray(model.head.kernel[...]).any()
    t = tensors()
    del t["head.bias"]
    with pytest.raises(WeightsError, match=r"incomplete head.*head.bias"):
        load(nnx.eval_shape(lambda: Tiny()), t)


def test_a_parameter_without_a_name_in_the_table_is_an_error():
    model = nnx.eval_shape(lambda: Tiny())
    groups = table(model)[:1]  # the head's parameters are in no group
    with pytest.raises(WeightsError, match=r"no tensor name of the Tiny table is mapped.*head/kernel"):
        weights.load(model, tensors(), groups, source="f.safetensors", family="Tiny")


def test_unused_tensors_are_logged_or_refused(caplog):
    t = dict(tensors(), **{"rope_freqs.weight": np.ones(2, np.float32), "buffer": np.ones(1, np.float32)})
    with caplog.at_level(logging.INFO):
        load(nnx.eval_shape(lambda: Tiny()), t, ignored=("buffer",))
    assert "tensors not used: ['rope_freqs.weight']" in caplog.text
    with pytest.raises(WeightsError, match=r"does not understand: \['buffer', 'rope_freqs.weight'\]"):
        load(nnx.eval_shape(lambda: Tiny()), t, refuse_unused=True)


def test_fused_pairs_split_and_join_along_the_last_axis():
    model = nnx.eval_shape(lambda: Tiny(layers=3))
    kernels = tuple(d.kernel for d in model.blocks)
    pair = fused(kernels, "qkv")
    qkv = np.arange(3 * 12, dtype=np.float32).reshape(3, 12)
    parts = pair.to_ours(qkv)
    assert [p.shape for p in parts] == [(3, 4)] * 3
    np.testing.assert_array_equal(pair.to_file(parts), qkv)
    np.testing.assert_array_equal(parts[1], qkv[:, 4:8])  # the key: the middle third
