"""ViT end to end on the real 8x8 digits through the one trainer: it learns, it resumes exactly
(augmentation, stochastic depth), it shards, it finetunes at another image size, and it starts
from a Hugging Face ViT directory."""

import json
import logging
import re

import jax
import numpy as np
import pytest

from bigmodel_jax import sharding, train as train_lib, transfer
from bigmodel_jax.config import apply_overrides, load_config_file, validate
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.vit import resample_pos_embed
from tests.conftest import ROOT, evaluate_checkpoint

TINY_VIT = {"model.num_layers": 2, "model.width": 64, "model.num_heads": 4, "model.mlp_dim": 128,
            "train.log_every": 10, "train.batch_size": 32, "compilation_cache_dir": ""}


def vit_config(tfds_dir, variant="", **overrides):
    cfg = load_config_file(str(ROOT / "configs" / "vit_digits.py") + (f":{variant}" if variant else ""))
    base = dict(TINY_VIT, **{"data.tfds_dir": str(tfds_dir)})
    base.update(overrides)
    return apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def digits_tfds(tmp_path_factory):
    from bigmodel_jax.data.images import load_images

    d = tmp_path_factory.mktemp("tfds_images")
    load_images("digits", d)
    return d


@pytest.fixture(scope="module")
def digits_run(digits_tfds, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vit_digits")
    cfg = vit_config(digits_tfds, **{"train.num_steps": 300, "train.eval_every": 100, "train.checkpoint_every": 300,
                                     "optim.warmup_steps": 30, "optim.lr": 2e-3, "data.mixup_alpha": 0.0,
                                     "model.dropout": 0.0})  # mixup and dropout pay off later than 300 steps
    return workdir, train_lib.train(cfg, workdir, progress=False, devices=jax.devices()[:1])


@pytest.mark.slow
def test_vit_learns_real_digits(digits_run):
    """Chance is 0.10 (the majority class 0.10); the tiny ViT (2 layers, width 64) reaches 0.756 on
    the 360 held-out test digits after 300 steps (measured once; 40 s), with restore-best on
    validation accuracy: the test split is scored with the best checkpoint's params."""
    workdir, result = digits_run
    assert result.test_metrics["accuracy"] > 0.6
    accuracies = {step: m["accuracy"] for step, m in result.val_metrics.items()}
    assert result.best_step == max(accuracies, key=lambda s: (accuracies[s], -s))  # the first of the best
    assert result.best_metric == accuracies[result.best_step]
    best_step, best_test = evaluate_checkpoint(workdir, "best")
    assert best_step == result.best_step and best_test == pytest.approx(result.test_metrics)
    assert json.loads((workdir / "test_metrics.json").read_text())["accuracy"] == pytest.approx(
        result.test_metrics["accuracy"])
    val_losses = list(result.val_losses.values())
    assert val_losses[-1] < 0.6 * val_losses[0]  # measured 2.05 at step 100 -> 1.06 at step 300


@pytest.mark.slow
def test_finetune_at_another_image_size(digits_run, digits_tfds, tmp_path):
    """The 8x8 checkpoint (4x4 patch grid) loads into a 16x16 model (8x8 grid): position embeddings
    resampled bicubically, every other tensor taken as is; then it trains at 16x16."""
    src, _ = digits_run
    cfg = vit_config(digits_tfds, "x16", **{"init_from": str(src), "train.num_steps": 40, "train.eval_every": 20,
                                            "train.checkpoint_every": 40})
    source = transfer.source_params(str(src))
    assert source["pos_embed"].shape == (17, 64)

    # what train() does with the source, checked tensor by tensor
    from bigmodel_jax.tasks import image_classify
    run_cfg = transfer.apply_source_architecture(vit_config(digits_tfds, "x16", **{"init_from": str(src)}))
    run_cfg.model.num_classes = 10
    assert run_cfg.model.num_layers == 2  # the source's depth replaces the config file's 4
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    _, params, _, param_sh, *_ = train_lib.init_state(run_cfg, image_classify, mesh)
    adapted = image_classify.adapt_source(source, {k: v.shape for k, v in transfer.flat_params(params).items()},
                                          run_cfg)
    loaded = transfer.flat_params(transfer.transfer_params(params, param_sh, adapted, str(src)))
    assert loaded["pos_embed"].shape == (65, 64)
    np.testing.assert_allclose(np.asarray(loaded["pos_embed"]), resample_pos_embed(source["pos_embed"], 1, (8, 8)),
                               atol=1e-6)
    for key in source:
        if key != "pos_embed":
            np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(source[key]))

    result = train_lib.train(cfg, tmp_path, progress=False, devices=jax.devices()[:1])
    assert all(np.isfinite(list(result.train_losses.values())))
    assert result.test_metrics["accuracy"] > 0.35  # measured 0.60 after 40 steps at 16x16 (chance 0.10)


@pytest.mark.slow
def test_vit_resume_matches_unbroken_run(digits_tfds, tmp_path):
    """Augmentation and mixup run in the grain pipeline, stochastic depth in the step: a run killed
    at step 10 and resumed reaches the losses of an unbroken one."""
    over = {"train.num_steps": 20, "train.log_every": 1, "train.eval_every": 10, "train.checkpoint_every": 10,
            "data.mixup_alpha": 0.2, "model.drop_path": 0.2, "model.dropout": 0.1, "train.batch_size": 16}
    unbroken = train_lib.train(vit_config(digits_tfds, **over), tmp_path / "a", progress=False,
                               devices=jax.devices()[:2])
    train_lib.train(vit_config(digits_tfds, **over), tmp_path / "b", progress=False, devices=jax.devices()[:2],
                    stop_after=10)
    resumed = train_lib.train(vit_config(digits_tfds, **over), tmp_path / "b", progress=False,
                              devices=jax.devices()[:2])
    np.testing.assert_allclose([resumed.train_losses[s] for s in range(11, 21)],
                               [unbroken.train_losses[s] for s in range(11, 21)], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("mesh,drop_path", [
    ({"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2}, 0.2),
    ({"parallel.mode": "pmap", "parallel.data": -1}, 0.0),  # pmap draws per-device masks: not the same numbers
])
def test_vit_sharded_and_pmap_match_one_device(digits_tfds, tmp_path, mesh, drop_path):
    over = {"train.num_steps": 6, "train.log_every": 1, "train.eval_every": 6, "train.checkpoint_every": 6,
            "train.batch_size": 16, "model.drop_path": drop_path, "data.mixup_alpha": 0.2}
    one = train_lib.train(vit_config(digits_tfds, **over, **{"parallel.data": 1}), tmp_path / "one",
                          progress=False, devices=jax.devices()[:1])
    many = train_lib.train(vit_config(digits_tfds, **over, **mesh), tmp_path / "many", progress=False)
    np.testing.assert_allclose(list(many.train_losses.values()), list(one.train_losses.values()), rtol=2e-5)
    assert many.test_metrics["accuracy"] == pytest.approx(one.test_metrics["accuracy"])


@pytest.mark.slow
def test_init_from_a_hugging_face_vit_directory(digits_tfds, tmp_path, caplog, capsys):
    """A transformers ViTForImageClassification directory starts a finetuning run: its shape wins
    over model.*, its tensors are taken by path (classifier included: 10 classes here)."""
    torch = pytest.importorskip("torch")
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    hf_model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=48,
                                                   num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                                                   num_labels=10))
    hf_model.save_pretrained(tmp_path / "hf")
    cfg = vit_config(digits_tfds, **{"init_from": str(tmp_path / "hf"), "train.num_steps": 4, "train.eval_every": 4,
                                     "train.checkpoint_every": 4, "train.log_every": 1})
    with caplog.at_level(logging.INFO):
        result = train_lib.train(cfg, tmp_path / "run", progress=False, devices=jax.devices()[:1])
    # the config file's architecture was replaced, and the log says so in one table
    assert "fixes the architecture; config file values replaced" in caplog.text
    assert re.search(r"model\.num_layers\s+2 -> 1", caplog.text) and re.search(r"model\.width\s+64 -> 48", caplog.text)
    model, saved_cfg, _ = transfer.load_trained(tmp_path / "run")
    assert (saved_cfg.model.width, saved_cfg.model.num_layers, saved_cfg.model.norm_eps) == (48, 1, 1e-12)
    assert np.isfinite(result.train_losses[4])
    # a value set on the command line that disagrees with the source is an error naming both values
    with pytest.raises(ConfigError, match=r"model.num_layers.*= 3.*has num_layers=1"):
        train_lib.train(apply_overrides(cfg, ["model.num_layers=3"]), tmp_path / "clash", progress=False,
                        devices=jax.devices()[:1], user_set={"model.num_layers"})
    assert not (tmp_path / "clash").exists()  # refused before anything was written
    # the same through the command line; a value that agrees with the source is fine
    args = ["--config", str(ROOT / "configs" / "vit_digits.py"), "--workdir", str(tmp_path / "cli"),
            f"--config.init_from={tmp_path / 'hf'}", f"--config.data.tfds_dir={digits_tfds}", "--config.model.width=48"]
    assert train_lib.main(args + ["--config.model.num_heads=4", "--config.train.num_steps=1"]) == 2
    assert "model.num_heads" in capsys.readouterr().err
    assert train_lib.main(args + ["--config.model.num_heads=3", "--config.train.num_steps=1", "--no-progress",
                                  "--config.train.eval_every=1", "--config.compilation_cache_dir="]) == 0


@pytest.mark.parametrize("key,value,match", [
    ("model.pool", "max", "'cls'"),
    ("model.patch_size", 3, "must divide model.image_size=8"),
    ("data.dataset", "cifar10", "one of"),
    ("data.mixup_alpha", -1.0, "Beta"),
    ("data.label_smoothing", 1.0, r"\[0, 1\)"),
    ("data.aug_shift", 1.5, "fraction"),
    ("model.drop_path", 1.0, "stochastic-depth"),
    ("model.image_size", 0, "positive integer"),
])
def test_bad_vit_config_values_are_named(key, value, match, tmp_path):
    cfg = vit_config(tmp_path, **{key: value})
    with pytest.raises(ConfigError, match=match) as e:
        validate(cfg, 1)
    assert e.value.key == key


def test_init_from_must_be_a_vit(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="not a ViT directory"):
        validate(vit_config(tmp_path, **{"init_from": str(tmp_path / "bert")}), 1)
    with pytest.raises(ConfigError, match="neither"):
        validate(vit_config(tmp_path, **{"init_from": str(tmp_path)}), 1)
