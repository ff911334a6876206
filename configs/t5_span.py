"""T5's span-corruption pretraining on the Shakespeare plays (15% of each window's tokens cut out in
spans of mean length 3, one sentinel per span; data/span_corruption.py), the small T5 of
configs/t5_translate.py, an 8,000-piece sentencepiece vocabulary with T5's 100 sentinels.

    python -m bigmodel_jax.train --config configs/t5_span.py --workdir runs/t5_span
    python -m bigmodel_jax.train --config configs/t5_span.py:bible --workdir runs/t5_span_bible

The plain variant's vocabulary is trained on the plays alone; :bible's on the plays and the Bible
pairs' training verses in both languages (never the held-out books), so translation can finetune
from it: --config.init_from=runs/t5_span_bible (the vocabulary comes with it). The pretraining text
is the plays in both. Windows of 141 tokens make sources of at most 128 tokens and targets of at
most 32. Whether it helps translation: python -m experiments.span_pretraining (docs/t5.md).

Expected: not measured at this config's 4,000 steps. :bible at 600 steps (--config.train.num_steps=600,
22 min on the 2-core CPU, 2026-12-02): validation loss 4.673, token accuracy 0.290 on 128 held-out
windows; finetuning English -> Japanese from it for 400 steps was no better than random init (test
chrF 0.012 vs 0.018, 2 seeds; experiments/RESULTS.md).
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    if variant not in ("", "bible"):
        raise ValueError(f"unknown variant {variant!r} of t5_span.py; valid: '' (the plays' vocabulary), 'bible'")
    c = load_config_file(str(Path(__file__).with_name("t5_translate.py")))
    c.data.update(dataset="plays_span", source_len=128, target_len=32, eval_examples=128,
                  vocab_also="bible_en_ja" if variant else "")
    c.model.update(max_len=64, label_smoothing=0.0)
    c.train.update(num_steps=4000, eval_metric="loss", restore_best=False)
    return c
