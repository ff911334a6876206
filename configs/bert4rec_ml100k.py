"""BERT4Rec on MovieLens-100k: the data, split, evaluation and budget of configs/sasrec_ml100k.py,
with our BERT masked LM over item histories (tasks/bert4rec.py).

    pip install --no-deps recbole==1.2.1
    python -m bigmodel_jax.train --config configs/bert4rec_ml100k.py --workdir runs/bert4rec_ml100k
    python -m bigmodel_jax.recommend --workdir runs/bert4rec_ml100k --user 1

RecBole's BERT4Rec defaults for the shape (2 layers, 2 heads, width 64, inner 256, mask ratio 0.2,
up to 50 items) with our post-norm BERT blocks (as RecBole's); dropout 0.2.

Expected (3 seeds, 2026-12-04, `python -m experiments.recommenders`): test HR@10 / NDCG@10 0.161 / 0.082 by full
ranking, 0.689 / 0.415 among 100 uniform negatives, 0.479 / 0.248 among 100 popular ones; all 1,500 steps
(still improving), about 8 min on 2 cores.
RecBole's own BERT4Rec beside it (`--recbole --recbole-seeds 0`: one seed, 12 epochs, still improving): 0.168
/ 0.088, 0.713 / 0.434, 0.479 / 0.259.
"""

from pathlib import Path

import ml_collections

from bigmodel_jax.config import load_config_file


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = load_config_file(str(Path(__file__).with_name("sasrec_ml100k.py")))
    c.task = "bert4rec"
    lora = c.model.lora
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the data: items + 2 (id 0 pads, the last is [MASK])
        num_layers=2, width=64, num_heads=2, mlp_dim=256, max_len=50, type_vocab_size=1,
        activation="gelu", norm_eps=1e-12, dropout=0.2, dtype="float32", remat="none", attention_impl="plain",
        scan_layers=False, num_outputs=0,
    ))
    c.model.lora = lora
    c.data.mask_rate = 0.2  # each training item masked with this probability (BERT4Rec's cloze)
    if variant:
        raise ValueError(f"unknown variant {variant!r} of bert4rec_ml100k.py; valid: ''")
    return c
