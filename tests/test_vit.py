"""The ViT model: patching, the patch projection as a strided conv, position-embedding
resampling, pooling, stochastic depth, and the init_from adaptation to another image size."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.models.blocks import drop_path
from bigmodel_jax.models.vit import ViT, num_tokens, patchify, resample_pos_embed
from bigmodel_jax.tasks import image_classify


def _cfg(**kw) -> ml_collections.ConfigDict:
    base = dict(image_size=8, patch_size=2, num_channels=1, num_classes=10, num_layers=2, width=32, num_heads=4,
                mlp_dim=64, pool="cls", activation="gelu", norm_eps=1e-6, dropout=0.0, drop_path=0.0,
                dtype="float32")
    return ml_collections.ConfigDict(dict(base, **kw))


def test_patchify_order_and_shape():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    p = patchify(x, 2)
    assert p.shape == (2, 2 * 3, 2 * 2 * 3)
    # patch (row 1, col 2) of image 1 is rows 2-3, columns 4-5, flattened (row, column, channel)
    np.testing.assert_array_equal(p[1, 1 * 3 + 2], x[1, 2:4, 4:6, :].reshape(-1))


def test_patch_embedding_is_a_strided_conv():
    """Dense on the flattened patches == a conv with kernel = stride = patch size."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(2 * 2 * 3, 5)), jnp.float32)
    ours = patchify(x, 2) @ kernel
    conv = jax.lax.conv_general_dilated(x, kernel.reshape(2, 2, 3, 5), (2, 2), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(ours, conv.reshape(2, 16, 5), atol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_shapes_and_pooling(pool):
    cfg = _cfg(pool=pool)
    model = ViT(cfg, rngs=nnx.Rngs(0))
    assert num_tokens(cfg) == 16 + (pool == "cls")
    assert model.pos_embed.shape == (num_tokens(cfg), 32)
    assert (model.cls_token is None) == (pool == "mean")
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
    assert model.features(x).shape == (3, num_tokens(cfg), 32)
    logits = model(x)
    assert logits.shape == (3, 10) and not np.asarray(logits).any()  # zero-init head
    with pytest.raises(ValueError, match="this model takes"):
        model(jnp.zeros((1, 16, 16, 1)))


def test_resample_pos_embed_shapes_and_values():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(1 + 16, 8)).astype(np.float32)
    same = resample_pos_embed(pos, 1, (4, 4))
    np.testing.assert_allclose(same, pos, atol=1e-6)  # same grid: identity
    up = resample_pos_embed(pos, 1, (8, 8))
    assert up.shape == (1 + 64, 8) and up.dtype == np.float32
    np.testing.assert_array_equal(up[0], pos[0])  # [CLS] row kept
    down = resample_pos_embed(pos[1:], 0, (2, 3))  # mean pooling: no prefix; non-square target
    assert down.shape == (6, 8)
    const = np.tile(np.arange(8, dtype=np.float32), (16, 1))
    np.testing.assert_allclose(resample_pos_embed(const, 0, (7, 7)), np.tile(np.arange(8), (49, 1)), atol=1e-5)
    # a linear ramp over the grid stays a ramp inside (bicubic reproduces linear functions)
    ramp = np.repeat(np.arange(4, dtype=np.float32), 4)[:, None]  # value = row index
    r = resample_pos_embed(ramp, 0, (8, 8)).reshape(8, 8)
    assert np.all(np.diff(r[:, 0]) >= -1e-6) and np.allclose(r[:, 0], r[:, 5])
    with pytest.raises(ValueError, match="square grid"):
        resample_pos_embed(rng.normal(size=(1 + 15, 8)), 1, (4, 4))


def test_drop_path():
    x = jnp.ones((1000, 3, 4))
    assert drop_path(x, 0.3, None) is x  # evaluation
    y = np.asarray(drop_path(x, 0.3, nnx.Rngs(dropout=0)))
    per_example = y.reshape(1000, -1)
    assert np.all(np.isclose(per_example, 0.0) | np.isclose(per_example, 1 / 0.7))
    assert np.all(per_example.min(1) == per_example.max(1))  # a whole example's branch is kept or dropped
    assert abs((per_example[:, 0] == 0).mean() - 0.3) < 0.05 and abs(y.mean() - 1.0) < 0.08
    model = ViT(_cfg(num_layers=3, drop_path=0.2), rngs=nnx.Rngs(0))
    assert [b.drop_path_rate for b in model.blocks] == pytest.approx([0.0, 0.1, 0.2])


def test_adapt_source_resamples_positions_and_drops_another_head():
    cfg = ml_collections.ConfigDict({"model": _cfg(image_size=16)})
    target = {"pos_embed": (65, 32), "head/kernel": (32, 10), "head/bias": (10,), "cls_token": (32,)}
    src = {"pos_embed": np.zeros((17, 32), np.float32), "head/kernel": np.zeros((32, 5), np.float32),
           "head/bias": np.zeros(5, np.float32), "cls_token": np.ones(32, np.float32)}
    out = image_classify.adapt_source(src, target, cfg)
    assert out["pos_embed"].shape == (65, 32) and "head/kernel" not in out and "head/bias" not in out
    assert out["cls_token"] is src["cls_token"] and src["pos_embed"].shape == (17, 32)  # the input is not changed
