"""A classifier trained federated: does FedAvg learn a speech's genre when each client holds one genre?

    python -m experiments.federated_genre            # quick: the budget in QUICK below
    python -m experiments.federated_genre --full     # longer runs, more clients per round, two seeds

configs/fed_genre.py: the Shakespeare (play, role) clients, each holding its speeches labeled with
its play's genre (6 classes), so every client holds a single label (the extreme label skew of the
federated literature); the IID control deals the same training speeches evenly. Three ways train the
classify task's small BERT from random init: FedAvg (client SGD, server average), FedAdam (server
Adam, Reddi et al. 2021) and FedAvg with Adam on the clients ("localadam"); each one's client rate
is tuned on the role split and reused for IID.
Beside them, the same training speeches pooled (no federation): TF-IDF + logistic regression, and
always predicting the commonest genre.

Writes into --workdir: one sweep folder per arm, results.* of all runs, curves.png and summary.md.
"""

from __future__ import annotations

import os
import sys

from bigmodel_jax import baselines
from bigmodel_jax.config import load_config_file
from bigmodel_jax.data import fed_shakespeare
from experiments import arms
from experiments.federated import compare

CONFIG = str(arms.ROOT / "configs" / "fed_genre.py")
ADAM = {"fed.server_optimizer": "adam", "fed.server_lr": 0.01}  # configs/fed_shakespeare.py's fedadam server
LOCAL_ADAM = {"fed.client_optimizer": "adam"}  # FedAvg whose clients step with Adam (fresh state each round)
ARMS = {"fedavg_role": {"data.partition": "role"}, "fedavg_iid": {"data.partition": "iid"},
        "fedadam_role": {"data.partition": "role", **ADAM}, "fedadam_iid": {"data.partition": "iid", **ADAM},
        "localadam_role": {"data.partition": "role", **LOCAL_ADAM},
        "localadam_iid": {"data.partition": "iid", **LOCAL_ADAM}}
LRS = {"fedavg": [0.03, 0.1, 0.3], "fedadam": [0.03, 0.1], "localadam": [3e-4, 1e-3, 3e-3]}
QUICK = {"budget": {"fed.rounds": 60, "fed.client_fraction": 0.02, "fed.local_epochs": 1, "fed.eval_every": 5,
                    "fed.eval_examples": 0, "fed.checkpoint_every": 20},
         "targets": [0.30, 0.35, 0.40], "seeds": [0]}
FULL = {"budget": {"fed.rounds": 200, "fed.client_fraction": 0.05, "fed.local_epochs": 1, "fed.eval_every": 5,
                   "fed.eval_examples": 0, "fed.checkpoint_every": 20},
        "targets": [0.30, 0.35, 0.40, 0.45], "seeds": [0, 1]}


def pooled_baselines() -> str:
    """Centralized references on the same per-client split: a table row each."""
    found = fed_shakespeare.genre_clients(os.path.expanduser(load_config_file(CONFIG).data.tfds_dir))
    train = [ex for c in found for ex in c.train]
    test = [ex for c in found for ex in c.test]
    scores = baselines.tfidf_logreg(train, test)
    return ("Pooled, not federated, on the same split (" + f"{len(train):,} training and {len(test):,} test speeches"
            + f"): TF-IDF word 1-2 grams + logistic regression {scores['accuracy']:.4f}; always the commonest "
            + f"genre {scores['majority_accuracy']:.4f}.\n\n")


def main(argv: list[str] | None = None) -> int:
    args = arms.parser("python -m experiments.federated_genre", __doc__,
                       "runs/ablations/federated_genre").parse_args(argv)
    compare(args, CONFIG, ARMS, LRS, FULL if args.full else QUICK,
            "A genre classifier trained federated, by role (one genre per client) and IID", pooled_baselines())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
