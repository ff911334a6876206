"""Finetune a BERT encoder to predict the VADER lexicon's human-rated valence (-4..4) of a word or
emoticon, with MSE (split by token).

    python -m bigmodel_jax.train --config configs/bert_regress.py --config.init_from=minilm --workdir runs/vader_minilm

The run ends on the best validation MSE and prints the test split's MSE and MAE.
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    c = load_config_file(str(Path(__file__).with_name("bert_mlm.py")))
    c.task = "regress"
    c.data.update(dataset="vader", seq_len=16)
    c.optim.update(lr=1e-4, warmup_steps=100, weight_decay=0.01)
    c.train.update(num_steps=1500, batch_size=32, log_every=50, eval_every=150, eval_batches=1000,
                   checkpoint_every=150, keep_checkpoints=1, eval_metric="mse", patience=4, restore_best=True)
    if variant:
        raise ValueError(f"unknown variant {variant!r} of bert_regress.py")
    return c
