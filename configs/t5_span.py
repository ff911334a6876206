"""T5's span-corruption pretraining on the Shakespeare plays (15% of each window's tokens cut out in
spans of mean length 3, one sentinel per span; data/span_corruption.py), the small T5 of
configs/t5_translate.py, an 8,000-piece sentencepiece vocabulary of the plays with T5's 100
sentinels.

    python -m bigmodel_jax.train --config configs/t5_span.py --workdir runs/t5_span

Windows of 141 tokens make sources of at most 128 tokens and targets of at most 32. To finetune
from it, the task must share its vocabulary: --config.data.tokenizer_dir=runs/t5_span/tokenizer
--config.init_from=runs/t5_span (a vocabulary of the plays covers English; Japanese and G2P's
symbols need a vocabulary trained on both, which no config builds yet).

Expected: not yet measured (docs/t5.md).
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"unknown variant {variant!r} of t5_span.py")
    c = load_config_file(str(Path(__file__).with_name("t5_translate.py")))
    c.data.update(dataset="plays_span", source_len=128, target_len=32, eval_examples=128)
    c.model.update(max_len=64, label_smoothing=0.0)
    c.train.update(num_steps=4000, eval_metric="loss", restore_best=False)
    return c
