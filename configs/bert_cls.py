"""Finetune a BERT encoder to classify Shakespeare speeches by genre (6 classes, split by scene).

    # (a) the packaged pretrained MiniLM (its shape and vocabulary replace model.* / the tokenizer)
    python -m bigmodel_jax.train --config configs/bert_cls.py --config.init_from=minilm --workdir runs/cls_minilm
    # (b) our MLM-pretrained small BERT (train configs/bert_mlm.py into runs/bert_mlm first)
    python -m bigmodel_jax.train --config configs/bert_cls.py --config.init_from=runs/bert_mlm --workdir runs/cls_mlm
    # (c) the same small BERT and vocabulary from random init
    python -m bigmodel_jax.train --config configs/bert_cls.py --config.data.tokenizer_dir=runs/bert_mlm/tokenizer \
        --workdir runs/cls_scratch

Variants: `play` (38 plays), `polarity` (gensim's 200 review sentences), `vader_sign` (word sentiment:
7,506 VADER lexicon tokens -> negative/positive; the pretraining ablation's task). The run ends on the best
validation accuracy (early stopping with patience) and prints the test split's accuracy.

Expected, as measured by the first, one-size version of `experiments/pretraining_helps.py`
(2026-11-29; genre training capped at 4,000 speeches and 500 steps; docs/bert.md has the overrides):
genre test accuracy (a) MiniLM 0.449, (b) 0.363,
(c) 0.372 (TF-IDF: 0.369); polarity (a) 0.791, (b) 0.395, (c) 0.326 (TF-IDF: 0.512). This file's
full default (all 17,418 speeches, up to 1,500 steps) has not been timed here.
"""

from pathlib import Path

import ml_collections

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    c = load_config_file(str(Path(__file__).with_name("bert_mlm.py")))
    c.task = "classify"
    c.data.update(dataset="plays_genre", seq_len=64, max_train_examples=0)
    c.optim.update(lr=1e-4, warmup_steps=100, weight_decay=0.01)
    c.train.update(num_steps=1500, batch_size=32, log_every=50, eval_every=150, eval_batches=1000,
                   checkpoint_every=150, keep_checkpoints=1, eval_metric="accuracy", patience=4,
                   restore_best=True)
    c.train.loss = "cross_entropy"  # or "mse": squared error of the softmax probabilities (Brier); eval stays CE
    # debiasing (docs/bias.md): counterfactual swaps added to the training split; an adversary on
    # the pooled features predicting the text's gender through a reversed gradient of this scale
    c.debias = ml_collections.ConfigDict({"counterfactual": False, "adversary_weight": 0.0})
    if variant == "play":
        c.data.dataset = "plays_play"
    elif variant == "polarity":
        c.data.update(dataset="polarity", seq_len=64)
        c.train.update(num_steps=300, batch_size=16, eval_every=25, checkpoint_every=25, patience=4)
    elif variant == "vader_sign":
        c.data.update(dataset="vader_sign", seq_len=16)  # a token is 1-6 WordPieces
        c.train.update(num_steps=300, batch_size=32, eval_every=25, checkpoint_every=25, patience=4)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of bert_cls.py; valid: '', 'play', 'polarity', 'vader_sign'")
    return c
