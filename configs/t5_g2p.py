"""Grapheme-to-phoneme on CMUdict with a small T5 (v1.1): a word's letters -> its ARPAbet phonemes
(stress removed: 39 phonemes), words split 90/5/5 by a hash of the word (113,484 / 6,221 / 6,347
words; a word's alternative pronunciations are all training targets, and a prediction is scored
against the closest). One word-level sentencepiece vocabulary holds every letter and phoneme.

    python -m bigmodel_jax.train --config configs/t5_g2p.py --workdir runs/t5_g2p

Validation decodes 512 held-out words greedily each evaluation (phoneme and word error rates);
the test split is decoded once at the end.

Expected: not yet measured at this config's 6,000 steps. At 2,500 steps (--config.train.num_steps=2500,
37 min on the 2-core CPU, 2026-12-02) test PER 0.368 and WER 0.790, greedy (1,500 steps: 0.553 / 0.918):
better than the retrieval baseline's WER 0.946, behind its PER 0.307, far from published Transformer
G2P (~0.05 / ~0.22, converged); still falling fast. docs/t5.md says what the errors are (letter order,
learned slowly without absolute positions).
"""

from pathlib import Path

from bigmodel_jax.config import load_config_file


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"unknown variant {variant!r} of t5_g2p.py")
    c = load_config_file(str(Path(__file__).with_name("t5_translate.py")))
    c.model.update(width=192, num_heads=4, head_dim=48, mlp_dim=512, num_layers=3, num_decoder_layers=3,
                   max_len=64, label_smoothing=0.0)
    c.data.update(dataset="cmudict", vocab_size=128, spm_model_type="word", source_len=32, target_len=32,
                  eval_examples=512)
    c.train.update(num_steps=6000, batch_size=64, eval_every=500, eval_metric="per", eval_batches=8)
    return c
