"""A classifier trained federated: speech -> genre on the Shakespeare (play, role) clients.

    python -m bigmodel_jax.federated --config configs/fed_genre.py --workdir runs/fed_genre
    python -m bigmodel_jax.federated --config configs/fed_genre.py --config.data.partition=iid --workdir ...
    python -m bigmodel_jax.federated --config configs/fed_genre.py:fedadam --workdir runs/fed_genre_fedadam

The clients of configs/fed_shakespeare.py, each holding its speeches of >= 8 words labeled with its
play's genre (6 classes, plays.GENRES): 1,014 clients, 16,870 training speeches, 4,733 test. Every
client holds a single label, the extreme label skew; `data.partition=iid` deals the same speeches
evenly as the control. The model is the classify task's small BERT with a pooled head, from random
init, with a WordPiece vocabulary trained on the clients' training speeches.

Expected (2026-12-03, experiments/RESULTS.md): `:fedadam` (server Adam, 300 rounds of 20 clients, 26 min
here) test accuracy 0.374 by role and 0.432 with data.partition=iid; the default (FedAvg, client SGD)
does not beat always predicting the commonest genre (0.290) in 60 rounds.
"""

from pathlib import Path

import ml_collections

from bigmodel_jax.config import load_config_file


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    here = Path(__file__).parent
    c = load_config_file(str(here / "fed_shakespeare.py"))
    c.task = "classify"
    c.init_from = ""  # the classify task's tokenizer lookup reads it; federated runs start from random init
    c.model = load_config_file(str(here / "bert_mlm.py")).model
    c.model.update(num_layers=2, width=128, num_heads=4, mlp_dim=512, max_len=64, dropout=0.0, dtype="float32")
    c.data.update(seq_len=64, tokenizer_dir="", vocab_size=4096)
    c.fed.update(local_batch=10, micro_batch=0, client_lr=0.1, eval_examples=0, min_examples=4)
    if variant == "fedadam":  # server Adam with Adam's usual eps: the way that learns here (RESULTS.md)
        c.fed.update(server_optimizer="adam", server_lr=1e-3, server_eps=1e-8, client_lr=0.1, rounds=300,
                     client_fraction=0.02, eval_every=25, checkpoint_every=50)
    elif variant == "dp":
        c.dp.update(clip=0.5, noise_multiplier=1.0)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of fed_genre.py; valid: '', fedadam, dp")
    return c
