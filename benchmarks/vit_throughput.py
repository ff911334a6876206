"""Image-classification train-step throughput: our ViT (the trainer's own jitted step: configs/vit_digits.py
reshaped, train.init_state + make_train_step, tasks/image_classify.py) against Hugging Face transformers'
ViTForImageClassification + torch.optim.AdamW on PyTorch CPU: same shape, batch, optimizer (weight decay
on matrices only, clipping), no dropout or stochastic depth on either side, f32 and bf16 (torch:
autocast), alternating runs in one process.

    python benchmarks/vit_throughput.py [--sizes small] [--repeats 3] [--steps 5]

Images are random pixels in [-1, 1] and random labels (a step's cost does not depend on them).
Tokens per step = batch x (patches + [CLS]); MFU uses one FLOP count (metrics.flops_per_token with
image_classify.matmul_params) for both, so MFU ratios equal speed ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import alternate, torch_step_timer, trainer_step_timer  # noqa: E402
from bigmodel_jax import metrics  # noqa: E402
from bigmodel_jax.config import apply_overrides, load_config_file  # noqa: E402
from bigmodel_jax.models import vit  # noqa: E402
from bigmodel_jax.tasks import image_classify  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "vit_digits.py"
# name: (image size, patch, channels, layers, width, heads, mlp, batch, classes)
SIZES = {
    "small": (32, 4, 3, 6, 384, 6, 1536, 32, 10),  # ViT-S/4 on CIFAR-sized images: 65 tokens
    "quick": (8, 2, 1, 2, 64, 2, 128, 8, 10),
}


def vit_config(size: str, dtype: str):
    img, patch, ch, layers, width, heads, mlp, batch, classes = SIZES[size]
    return apply_overrides(load_config_file(str(CONFIG)), [
        f"model.image_size={img}", f"model.patch_size={patch}", f"model.num_channels={ch}",
        f"model.num_layers={layers}", f"model.width={width}", f"model.num_heads={heads}", f"model.mlp_dim={mlp}",
        f"model.num_classes={classes}", "model.dropout=0.0", "model.drop_path=0.0", f"model.dtype={dtype}",
        f"train.batch_size={batch}", "parallel.data=1"])


def make_batch(cfg) -> dict:
    m, rng = cfg.model, np.random.default_rng(0)
    return {"image": rng.uniform(-1, 1, (cfg.train.batch_size, m.image_size, m.image_size, m.num_channels)
                                 ).astype(np.float32),
            "label": rng.integers(0, m.num_classes, cfg.train.batch_size).astype(np.int32)}


def time_ours(cfg, batch: dict, steps: int, warmup: int):
    return trainer_step_timer(cfg, image_classify, batch, steps, warmup)


def time_torch(cfg, batch: dict, steps: int, warmup: int):
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    m = cfg.model
    torch.manual_seed(0)
    hf = ViTForImageClassification(ViTConfig(
        image_size=m.image_size, patch_size=m.patch_size, num_channels=m.num_channels, hidden_size=m.width,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim,
        hidden_act="gelu", layer_norm_eps=m.norm_eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        num_labels=m.num_classes))
    pixels = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(batch["label"]).long()
    return torch_step_timer(hf, cfg.optim, lambda: hf(pixel_values=pixels, labels=labels).loss,
                            m.dtype == "bfloat16", steps, warmup)


def measure(size: str, dtype: str, steps: int, repeats: int, warmup: int = 2) -> dict:
    """Best-step tokens/s of ours and of HF ViTForImageClassification, alternating windows of
    `steps` steps after `warmup`; also the FLOPs per token and the shape."""
    cfg = vit_config(size, dtype)
    batch = make_batch(cfg)
    best = alternate({"ours": time_ours(cfg, batch, steps, warmup), "torch": time_torch(cfg, batch, steps, warmup)},
                     repeats)
    m, t = cfg.model, vit.num_tokens(cfg.model)
    tokens = cfg.train.batch_size * t
    return {"ours": tokens / best["ours"], "torch": tokens / best["torch"],
            "flops_per_token": metrics.flops_per_token(m.num_layers, m.width, t, image_classify.matmul_params(cfg)),
            "shape": f"{m.image_size}px/p{m.patch_size}x{m.num_channels}ch L{m.num_layers}/d{m.width}/H{m.num_heads}/"
                     f"mlp{m.mlp_dim} T{t} B{cfg.train.batch_size}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    print("| size | dtype | ours tok/s | HF tok/s | ours/HF |\n|---|---|---:|---:|---:|")
    for size in args.sizes.split(","):
        for dtype in args.dtypes.split(","):
            t0 = time.perf_counter()
            r = measure(size, dtype, args.steps, args.repeats)
            print(f"| {r['shape']} | {dtype} | {r['ours']:,.0f} | {r['torch']:,.0f} | {r['ours'] / r['torch']:.2f}x |"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
