"""GPT on the Shakespeare plays with a byte-level BPE tokenizer (2048 tokens) trained on the train split.

    python -m bigmodel_jax.train --config configs/gpt_bpe.py --workdir runs/gpt_bpe
    python -m bigmodel_jax.sample --workdir runs/gpt_bpe --prompt "ROMEO:"

Expected (2-core CPU): validation loss RESULT_BPE nats per BPE token after 2000 steps.
Losses are per token, so they do not compare with the character model's; bits per character do:
loss / ln 2 * (tokens / characters), both counts are logged at startup.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("gpt_char", Path(__file__).with_name("gpt_char.py"))
gpt_char = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpt_char)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = gpt_char.get_config()
    c.data.tokenizer = "bpe"
    c.data.bpe_vocab_size = 2048
    c.train.num_steps = 2500
    if variant:
        raise ValueError(f"unknown variant {variant!r} of gpt_bpe.py")
    return c
