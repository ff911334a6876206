"""What LoRA saves per training step: the trainer's step with rank-8 adapters against the same
step training every parameter, alternating windows in one process (random weights: speed does
not depend on them).

    python benchmarks/lora_step.py [--models minilm,smollm2] [--repeats 3] [--steps 3]

minilm: the MiniLM genre classifier's step (batch 32 x 64 tokens, 6 classes); smollm2: SmolLM2-135M
on the plays (batch 8 x 128), both f32 as experiments/lora_vs_full.py trains them. LoRA still runs
the whole forward and the backward through every layer (the activations' gradients); it skips the
frozen weights' gradients and their optimizer update. Prints the fastest step of each and the ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import CONFIGS, alternate, trainer_step_timer  # noqa: E402
from bigmodel_jax import tasks, transfer  # noqa: E402
from bigmodel_jax.config import apply_overrides, load_config_file  # noqa: E402

# name -> (config file, overrides, vocabulary, batch rows, tokens per row)
MODELS = {"minilm": ("bert_cls.py", ["init_from=minilm", "model.num_outputs=6", "model.dtype=float32"], 30522, 32, 64),
          "smollm2": ("gpt_smollm2_plays.py", [], 49152, 8, 128)}


def config(name: str, rank: int):
    file, overrides, vocab, rows, seq = MODELS[name]
    cfg = apply_overrides(load_config_file(str(CONFIGS / file)), [*overrides, f"model.lora.rank={rank}",
                                                                   f"train.batch_size={rows}", f"data.seq_len={seq}"])
    cfg = transfer.apply_source_architecture(cfg)  # the pretrained shape; the weights stay random here
    cfg.model.vocab_size = vocab
    return cfg


def batch(name: str) -> dict:
    _, _, vocab, rows, seq = MODELS[name]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (rows, seq)).astype(np.int32)
    if name == "smollm2":
        return {"inputs": ids, "targets": np.roll(ids, -1, axis=1)}
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
            "label": rng.integers(0, 6, rows).astype(np.int32)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="minilm,smollm2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    print("| model | tokens / step | full step | LoRA r8 step | LoRA / full |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        timers = {}
        for arm, rank in (("full", 0), ("lora", 8)):
            cfg = config(name, rank)
            timers[arm] = trainer_step_timer(cfg, tasks.get(cfg.task), batch(name), args.steps, warmup=1)
        best = alternate(timers, args.repeats)
        print(f"| {name} | {MODELS[name][3] * MODELS[name][4]:,} | {1000 * best['full']:,.0f} ms | "
              f"{1000 * best['lora']:,.0f} ms | {best['lora'] / best['full']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
