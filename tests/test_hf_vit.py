"""ViT parity with Hugging Face transformers (PyTorch CPU) on identical weights: small random
ViTForImageClassification / ViTModel directories imported, ours exported and loaded back, and
position embeddings resampled to another image size against HF's `interpolate_pos_encoding`."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification, ViTModel  # noqa: E402

from bigmodel_jax import hf  # noqa: E402
from bigmodel_jax.errors import WeightsError  # noqa: E402
from bigmodel_jax.models.vit import ViT, resample_pos_embed  # noqa: E402

SMALL = dict(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, num_labels=10, hidden_act="gelu")


def _hf_vit(cls, seed: int, **overrides):
    """A transformers ViT whose every tensor (norm scales, biases, [CLS], positions too) is
    random, so a mis-mapped tensor shows in the logits."""
    torch.manual_seed(seed)
    model = cls(ViTConfig(**dict(SMALL, **overrides))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


def _images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, channels)).astype(np.float32)


def _torch_pixels(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x).permute(0, 3, 1, 2)  # NHWC -> NCHW


def _ours(model: ViT, x: np.ndarray) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x)))


@pytest.mark.parametrize("channels,patch,act", [(1, 2, "gelu"), (3, 4, "gelu_new")])
def test_import_classifier_logits_match(tmp_path, channels, patch, act):
    model = _hf_vit(ViTForImageClassification, 0, num_channels=channels, patch_size=patch, image_size=16,
                    hidden_act=act)
    model.save_pretrained(tmp_path)
    ours = hf.load_vit_dir(tmp_path)
    assert ours.cfg.num_classes == 10 and ours.cfg.patch_size == patch and ours.cfg.num_channels == channels
    x = _images(4, 16, channels)
    with torch.no_grad():
        ref = model(pixel_values=_torch_pixels(x)).logits.numpy()
    got = _ours(ours, x)
    assert np.abs(ref).max() > 0.5  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.abs(got - ref).max() < 1e-5  # measured 9.5e-7


def test_export_round_trip(tmp_path):
    src = _hf_vit(ViTForImageClassification, 1)
    src.save_pretrained(tmp_path / "hf")
    ours = hf.load_vit_dir(tmp_path / "hf")
    hf.save_vit_dir(ours, tmp_path / "ours", class_names=[f"digit {i}" for i in range(10)])
    back = ViTForImageClassification.from_pretrained(tmp_path / "ours", local_files_only=True).eval()
    assert back.config.id2label[3] == "digit 3"
    x = _images(3, 8, 1, seed=1)
    with torch.no_grad():
        a = src(pixel_values=_torch_pixels(x)).logits.numpy()
        b = back(pixel_values=_torch_pixels(x)).logits.numpy()
    np.testing.assert_array_equal(a, b)  # the tensors went through float32 unchanged
    again = hf.load_vit_dir(tmp_path / "ours")
    for (p1, x1), (p2, x2) in zip(jax.tree_util.tree_leaves_with_path(nnx.state(ours, nnx.Param)),
                                  jax.tree_util.tree_leaves_with_path(nnx.state(again, nnx.Param))):
        assert p1 == p2 and np.array_equal(np.asarray(x1), np.asarray(x2))


def test_vitmodel_import_export_hidden_states(tmp_path):
    """ViTModel (no classifier, with a pooler we do not have): the encoder's last_hidden_state
    matches; our export as ViTModel loads with add_pooling_layer=False."""
    src = _hf_vit(ViTModel, 2)
    src.save_pretrained(tmp_path / "hf")
    ours = hf.load_vit_dir(tmp_path / "hf")
    assert not np.asarray(ours.head.kernel[...]).any()  # no classifier in the checkpoint: zero head
    x = _images(2, 8, 1, seed=2)
    graphdef, state = nnx.split(ours)
    feats = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s).features(x))(state, jnp.asarray(x)))
    with torch.no_grad():
        ref = src(pixel_values=_torch_pixels(x)).last_hidden_state.numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4, rtol=0)
    hf.save_vit_dir(ours, tmp_path / "ours", classifier=False)
    back = ViTModel.from_pretrained(tmp_path / "ours", add_pooling_layer=False, local_files_only=True).eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(pixel_values=_torch_pixels(x)).last_hidden_state.numpy(), ref, atol=1e-5)
    cfg, params = hf.vit_params_from_dir(tmp_path / "hf")
    assert "head" not in params and params["pos_embed"].shape == (17, 32)


def test_resampled_positions_match_hf_interpolation(tmp_path):
    """Our load-time bicubic resampling of the position embeddings (8x8 images -> 16x16: a 4x4 ->
    8x8 grid) gives the logits of HF's interpolate_pos_encoding=True on the same 16x16 images."""
    src = _hf_vit(ViTForImageClassification, 3)
    src.save_pretrained(tmp_path)
    cfg, params = hf.vit_params_from_dir(tmp_path)
    cfg.image_size = 16
    model = nnx.eval_shape(lambda: ViT(cfg, rngs=nnx.Rngs(0)))
    params["pos_embed"] = resample_pos_embed(params["pos_embed"], 1, (8, 8))
    nnx.update(model, nnx.State(jax.tree.map(jnp.asarray, params)))
    x = _images(3, 16, 1, seed=3)
    with torch.no_grad():
        ref = src(pixel_values=_torch_pixels(x), interpolate_pos_encoding=True).logits.numpy()
    np.testing.assert_allclose(_ours(model, x), ref, atol=1e-4, rtol=0)


def test_bad_directories(tmp_path):
    _hf_vit(ViTForImageClassification, 4).save_pretrained(tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type 'vit'"):
        hf.vit_config(dict(cfg, model_type="bert"))
    with pytest.raises(ValueError, match="qkv_bias"):
        hf.vit_config(dict(cfg, qkv_bias=False))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match=r"bad/model.safetensors: not a readable safetensors file"):
        hf.load_vit_dir(tmp_path / "bad")
    wider = dict(cfg, intermediate_size=cfg["intermediate_size"] * 2)  # config.json and tensors disagree
    (tmp_path / "wider").mkdir()
    (tmp_path / "wider" / "config.json").write_text(json.dumps(wider))
    (tmp_path / "wider" / "model.safetensors").write_bytes((tmp_path / "ok" / "model.safetensors").read_bytes())
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    with pytest.raises(WeightsError, match=rf"wider/model.safetensors: tensor "
                                           rf"'encoder.layer.0.intermediate.dense.weight'"
                                           rf".*expected shape \({2 * f}, {d}\), found \({f}, {d}\)"):
        hf.load_vit_dir(tmp_path / "wider")
    mean_cfg = hf.vit_config(cfg)
    mean_cfg.pool = "mean"
    with pytest.raises(ValueError, match="pool='cls'"):
        hf.save_vit_dir(nnx.eval_shape(lambda: ViT(mean_cfg, rngs=nnx.Rngs(0))), tmp_path / "x")
    deeper = dict(cfg, num_hidden_layers=1)
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "config.json").write_text(json.dumps(deeper))
    (tmp_path / "deeper" / "model.safetensors").write_bytes((tmp_path / "ok" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="more than the model's 1 layers"):
        hf.load_vit_dir(tmp_path / "deeper")
