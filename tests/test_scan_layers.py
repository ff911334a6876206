"""model.scan_layers: one lax.scan over the stacked blocks computes what the unrolled loop does,
outputs and every gradient, for GPT (GPT-2 and Llama shapes, padded rows, with remat), BERT and
ViT; with dropout it draws per-layer keys and stays reproducible; blocks that differ (ViT's
per-block stochastic depth) are refused rather than scanned as the first one. The weights are the same
parameters either way, so a run may switch the option between resumes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.models.bert import Bert
from bigmodel_jax.models.gpt import GPT
from bigmodel_jax.models.vit import ViT
from tests.test_attention_impl import _output_and_grads
from tests.test_layers import VARIANTS, gpt_cfg
from tests.test_vit import _cfg as vit_cfg

TOL = 1e-5


def _twins(make, cfg: ml_collections.ConfigDict) -> tuple[nnx.Module, nnx.Module]:
    """The same model and weights, unrolled and scanned."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.scan_layers = False
    unrolled = make(cfg, rngs=nnx.Rngs(0))
    cfg.scan_layers = True
    scanned = nnx.eval_shape(lambda: make(cfg, rngs=nnx.Rngs(0)))
    nnx.update(scanned, nnx.state(unrolled))
    return unrolled, scanned


def _assert_same(unrolled, scanned, forward) -> None:
    y_ref, g_ref = _output_and_grads(unrolled, forward)
    y, g = _output_and_grads(scanned, forward)
    scale = max(float(np.abs(y_ref).max()), 1e-3)
    assert float(np.abs(y - y_ref).max()) <= TOL * scale
    paths = jax.tree_util.tree_flatten_with_path(g_ref)[0]
    for (path, ref), got in zip(paths, jax.tree.leaves(g)):
        scale = max(float(np.abs(ref).max()), 1e-2)  # a key bias's gradient is 0 up to rounding
        assert float(np.abs(got - ref).max()) <= TOL * scale, jax.tree_util.keystr(path)
    kernels = [r for p, r in paths if "blocks" in jax.tree_util.keystr(p) and "kernel" in jax.tree_util.keystr(p)]
    assert kernels and all(float(np.abs(r).sum()) > 0 for r in kernels)  # every layer's weights got a gradient


@pytest.mark.parametrize("variant,remat", [("gpt2", "none"), ("llama", "none"), ("llama", "full")])
def test_gpt_scanned_equals_unrolled(variant, remat):
    unrolled, scanned = _twins(GPT, gpt_cfg(**VARIANTS[variant], max_len=16, num_layers=3, remat=remat))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, unrolled.cfg.vocab_size, (3, 16)))
    mask = jnp.asarray(np.arange(16)[None] >= np.array([0, 5, 11])[:, None])
    _assert_same(unrolled, scanned, lambda m: m(tokens, mask_bs=mask)[0])


def test_bert_and_vit_scanned_equal_unrolled():
    cfg = ml_collections.ConfigDict(dict(vocab_size=50, num_layers=3, width=32, num_heads=4, mlp_dim=64, max_len=16,
                                         type_vocab_size=2, activation="gelu", norm_eps=1e-12, dropout=0.0,
                                         dtype="float32"))
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 16)))
    mask = jnp.asarray(np.arange(16)[None] < np.array([16, 9, 3])[:, None], jnp.int32)
    _assert_same(*_twins(Bert, cfg), lambda m: m(ids, attention_mask_bt=mask))
    images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 1)), jnp.float32)
    _assert_same(*_twins(ViT, vit_cfg(num_layers=3)), lambda m: m.features(images))  # the head starts at 0


def test_dropout_under_the_scan_draws_per_layer_and_reproduces():
    _, scanned = _twins(ViT, vit_cfg(num_layers=3, dropout=0.3))
    images = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
    run = nnx.jit(lambda m, key: m.features(images, rngs=nnx.Rngs(dropout=key)))
    a, b, c = (run(scanned, jax.random.key(seed)) for seed in (0, 0, 1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3  # another seed, other masks
    assert np.abs(np.asarray(a) - np.asarray(scanned.features(images))).max() > 1e-3  # dropout is on in training


def test_blocks_that_differ_are_refused_not_scanned_as_the_first():
    """ViT's stochastic depth gives each block its own rate; one scanned program would give every
    layer the first block's (0): the config is refused, and so is the model call."""
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.errors import ConfigError
    from bigmodel_jax.tasks import image_classify
    from tests.conftest import ROOT

    cfg = load_config_file(str(ROOT / "configs" / "vit_digits.py"))
    cfg.model.scan_layers = True
    with pytest.raises(ConfigError, match="model.scan_layers"):
        image_classify.validate(cfg)
    cfg.model.drop_path = 0.0
    image_classify.validate(cfg)
    model = ViT(vit_cfg(num_layers=3, drop_path=0.2, scan_layers=True), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="drop_path=0"):
        model.features(jnp.zeros((1, 8, 8, 1)))
