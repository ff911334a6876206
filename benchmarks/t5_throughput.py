"""Encoder-decoder train-step throughput: our T5 (the trainer's own jitted step on configs/t5_translate.py,
tasks/seq2seq.py) against transformers' T5ForConditionalGeneration + torch.optim.AdamW on PyTorch
CPU, same shape, batch, optimizer, dropout and label smoothing, f32 and bf16 (torch: autocast),
alternating windows in one process. Tokens per step count source and target tokens.

    python -m benchmarks.run --only train_t5          # or --quick for a smoke run

The batch is random ids with the config's shapes (a full source of S tokens, a full target of T):
throughput does not depend on which tokens they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import alternate, torch_step_timer, trainer_step_timer
from bigmodel_jax import metrics
from bigmodel_jax.config import apply_overrides, load_config_file
from bigmodel_jax.tasks import seq2seq

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "t5_translate.py"
SIZES = {
    "default": [],  # 4+4 layers, width 256, 4 heads x 64, GEGLU 768, S=T=64, B=32, V=8000
    "quick": ["model.num_layers=1", "model.num_decoder_layers=1", "model.width=64", "model.mlp_dim=128",
              "data.source_len=16", "data.target_len=16", "train.batch_size=4"],
}


def t5_config(size: str, dtype: str):
    cfg = apply_overrides(load_config_file(str(CONFIG)), SIZES[size] + [f"model.dtype={dtype}", "parallel.data=1",
                                                                        "model.vocab_size=8000"])
    b, s, t = cfg.train.batch_size, cfg.data.source_len, cfg.data.target_len
    rng = np.random.default_rng(0)
    target = rng.integers(3, 8000, (b, t)).astype(np.int32)
    batch = {"source": rng.integers(3, 8000, (b, s)).astype(np.int32), "source_mask": np.ones((b, s), np.int32),
             "target": target, "target_mask": np.ones((b, t), np.int32),
             "decoder_in": np.concatenate([np.zeros((b, 1), np.int32), target[:, :-1]], 1)}
    return cfg, batch


def time_ours(cfg, batch: dict, steps: int, warmup: int):
    return trainer_step_timer(cfg, seq2seq, batch, steps, warmup)


def time_torch(cfg, batch: dict, steps: int, warmup: int):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    m = cfg.model
    torch.manual_seed(0)
    hf = T5ForConditionalGeneration(T5Config(
        vocab_size=m.vocab_size, d_model=m.width, d_kv=m.head_dim, d_ff=m.mlp_dim, num_layers=m.num_layers,
        num_decoder_layers=m.num_decoder_layers, num_heads=m.num_heads, relative_attention_num_buckets=m.rel_buckets,
        relative_attention_max_distance=m.rel_max_distance, dropout_rate=m.dropout, layer_norm_epsilon=m.norm_eps,
        feed_forward_proj="gated-gelu" if m.activation == "geglu" else "relu", tie_word_embeddings=m.tie_embeddings))
    src, tgt = torch.from_numpy(batch["source"]).long(), torch.from_numpy(batch["target"]).long()
    dec_in = torch.from_numpy(batch["decoder_in"]).long()
    cross_entropy = torch.nn.CrossEntropyLoss(label_smoothing=m.label_smoothing)

    def loss_fn():  # autocast runs the cross-entropy in f32
        logits = hf(input_ids=src, decoder_input_ids=dec_in).logits
        return cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1))

    return torch_step_timer(hf, cfg.optim, loss_fn, m.dtype == "bfloat16", steps, warmup)


def measure(cfg, batch: dict, steps: int, repeats: int, warmup: int = 2) -> dict:
    """Best-step tokens/s (source + target tokens) of ours and of transformers' T5, alternating."""
    best = alternate({"ours": time_ours(cfg, batch, steps, warmup), "torch": time_torch(cfg, batch, steps, warmup)},
                     repeats)
    m, (b, s), t = cfg.model, batch["source"].shape, batch["target"].shape[1]
    tokens = b * (s + t)
    return {"ours": tokens / best["ours"], "torch": tokens / best["torch"],
            "flops_per_token": metrics.flops_per_token(m.num_layers, m.width, s + t, seq2seq.matmul_params(cfg)),
            "shape": f"{m.num_layers}+{m.num_decoder_layers}/{m.width}/{m.num_heads}x{m.head_dim}/{m.mlp_dim}/"
                     f"S{s}/T{t}/B{b}/V{m.vocab_size}"}
