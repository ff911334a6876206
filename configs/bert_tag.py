"""Finetune a BERT encoder to tag speaker-heading words in scene text (B-SPK / I-SPK / O).

No tagging set ships offline, so the task is derived from the real plays: the colons after the
headings are dropped, so the model must tell "KING RICHARD II" opening a speech from "Cousin
Aumerle" said inside one. For CoNLL-2003 files: --config.data.dataset=conll
--config.data.train_file=... --config.data.validation_file=... --config.data.test_file=...

    python -m bigmodel_jax.train --config configs/bert_tag.py --config.init_from=minilm --workdir runs/tag_minilm

Scored by entities (seqeval precision / recall / F1, CoNLL's counting) over the whole split.
Expected (measured 2026-12-01, 2-core CPU, 12 min 56 s): from MiniLM, test entity F1 0.948 (precision
0.938, recall 0.957; validation F1 0.957 at step 600, still rising), against 0.543 for the rule "an
all-uppercase word is a speaker" (precision 0.437: names in stage directions are uppercase too) and
0 for every word "O". A 2-layer, width-64 encoder pretrained for 300 steps reaches
test entity F1 0.235 (precision 0.36, recall 0.17) on 400 training windows (tests/test_bert_train.py;
before issue 14 this read 0.34, a token-level F1 averaged per batch); all-O scores 0.
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    c = load_config_file(str(Path(__file__).with_name("bert_mlm.py")))
    c.task = "tag"
    c.data.update(dataset="plays_speakers", seq_len=128, max_train_examples=4000)
    c.optim.update(lr=1e-4, warmup_steps=50, weight_decay=0.01)
    c.train.update(num_steps=600, batch_size=16, log_every=50, eval_every=100, eval_batches=25,
                   checkpoint_every=100, keep_checkpoints=1, eval_metric="f1", patience=3, restore_best=True)
    if variant:
        raise ValueError(f"unknown variant {variant!r} of bert_tag.py")
    return c
