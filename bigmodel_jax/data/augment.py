"""numpy image augmentation, run per example inside the grain pipeline with a seeded Generator.

Per-example transforms make batch s a pure function of (seed, s) whatever the number of processes
(see pipeline.example_dataset). Made for digits: small shifts, rotations and zooms, no flips.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage


def affine(image_hwc: np.ndarray, translate: tuple[float, float], rotate_deg: float, zoom: float) -> np.ndarray:
    """image moved by translate (rows, cols, in pixels), rotated by rotate_deg and zoomed by zoom
    about its center. Bilinear (order=1): each output pixel is a convex combination of input
    pixels and the background 0, so [0, 1] stays [0, 1]."""
    image = np.asarray(image_hwc, np.float32)
    h, w = image.shape[:2]
    center = np.array([(h - 1) / 2, (w - 1) / 2])
    t = np.deg2rad(rotate_deg)
    forward = zoom * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    inverse = np.linalg.inv(forward)  # scipy maps output coordinates to input coordinates
    offset = center - inverse @ (center + np.asarray(translate, np.float64))
    out = [ndimage.affine_transform(image[..., c], inverse, offset, order=1, mode="constant", cval=0.0)
           for c in range(image.shape[-1])]
    return np.stack(out, axis=-1).astype(np.float32)


def random_affine(image_hwc: np.ndarray, rng: np.random.Generator, shift: float, rotate_deg: float,
                  scale: float) -> np.ndarray:
    """One random affine: translation uniform in +-shift*size per axis (shift: a fraction of the
    image size), rotation uniform in +-rotate_deg, zoom uniform in [1-scale, 1+scale]. Each 0 is
    off; all 0 returns the image's values unchanged. Always draws 4 numbers, so the rng stream does
    not depend on which are on."""
    u = rng.uniform(-1.0, 1.0, size=4)
    if shift == 0 and rotate_deg == 0 and scale == 0:
        return np.array(image_hwc, np.float32)
    h, w = image_hwc.shape[:2]
    return affine(image_hwc, (u[0] * shift * h, u[1] * shift * w), u[2] * rotate_deg, 1.0 + u[3] * scale)


def resize(images_nhwc: np.ndarray, size: int) -> np.ndarray:
    """All images to size x size: bilinear, antialiased when shrinking; the input when already
    that size."""
    n, h, w, c = images_nhwc.shape
    if (h, w) == (size, size):
        return images_nhwc
    import jax

    out = jax.image.resize(np.asarray(images_nhwc, np.float32), (n, size, size, c), method="linear", antialias=True)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def normalize(images: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1], as big_vision's value_range(-1, 1) and HF ViTImageProcessor (mean=std=0.5)."""
    return images * 2 - 1


def soft_targets(label: int, num_classes: int, smoothing: float) -> np.ndarray:
    """(1 - smoothing) * onehot + smoothing / C, float32 [C]."""
    targets = np.full(num_classes, smoothing / num_classes, np.float32)
    targets[int(label)] += 1.0 - smoothing
    return targets


def mixup(image_a: np.ndarray, targets_a: np.ndarray, image_b: np.ndarray, targets_b: np.ndarray,
          rng: np.random.Generator, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """lam ~ Beta(alpha, alpha); lam*a + (1-lam)*b for images and targets; alpha 0 returns a."""
    if alpha <= 0:
        return image_a, targets_a
    lam = np.float32(rng.beta(alpha, alpha))
    return ((lam * image_a + (1 - lam) * image_b).astype(np.float32),
            (lam * targets_a + (1 - lam) * targets_b).astype(np.float32))


def train_transform(arrays: dict[str, np.ndarray], num_classes: int, shift: float, rotate_deg: float, scale: float,
                    mixup_alpha: float, label_smoothing: float) -> Callable[[dict, np.random.Generator], dict]:
    """transform(example, rng) for pipeline.example_dataset: example {"image": float32 [H, W, 1] in
    [0, 1], "label"} -> {"image": augmented, in [-1, 1], "label": int32, the example's own label
    (also under mixup), "targets": float32 [C] soft labels summing to 1}. With mixup_alpha > 0 the
    partner is a seeded random row of `arrays` (rarely the example itself), augmented too: a
    per-example partner keeps the global batch independent of the process count, which mixing
    inside each per-process batch would not."""
    n = len(arrays["label"])

    def augment(image, label, rng):
        return random_affine(image, rng, shift, rotate_deg, scale), soft_targets(label, num_classes, label_smoothing)

    def transform(example: dict, rng: np.random.Generator) -> dict:
        label = int(example["label"])
        image, targets = augment(example["image"], label, rng)
        if mixup_alpha > 0:
            j = int(rng.integers(n))
            other, other_targets = augment(arrays["image"][j], int(arrays["label"][j]), rng)
            image, targets = mixup(image, targets, other, other_targets, rng, mixup_alpha)
        return {"image": normalize(image).astype(np.float32), "label": np.int32(label), "targets": targets}

    return transform


def eval_arrays(split: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A split as model inputs, no augmentation: {"image": in [-1, 1], "label"}."""
    return {"image": normalize(np.asarray(split["image"], np.float32)), "label": split["label"]}
