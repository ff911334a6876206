"""python -m bigmodel_jax.recommend --workdir RUN --user 1 [--k 10]

Top-k recommendations for a user from a trained sequential recommender (task `sasrec` or `bert4rec`): the model
reads the user's whole history (its last data.seq_len items, the test item included: this is
inference, not evaluation) and ranks every item they have not rated. Prints the history's last
items and the recommendations with titles (MovieLens' own, when the data has them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from bigmodel_jax import ranking
from bigmodel_jax.data import movielens
from bigmodel_jax.tasks import bert4rec, recsys, sasrec

# the tasks with history_inputs(histories, seq_len, num_items) and scores(model, inputs [B, T], lengths [B])
SEQUENTIAL = {"sasrec": sasrec, "bert4rec": bert4rec}


def recommend(model, cfg, history: np.ndarray, num_items: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(the k best unseen item ids, their scores), best first."""
    task = SEQUENTIAL[cfg.task]
    inputs, lengths = recsys.right_padded(task.history_inputs([history], cfg.data.seq_len, num_items),
                                          cfg.data.seq_len)
    scores = np.asarray(task.scores(model, jnp.asarray(inputs), jnp.asarray(lengths)))
    masked = ranking.mask_seen(scores, [history], np.array([0]))[0]  # no target to spare: item 0 pads
    top = np.argsort(-masked, kind="stable")[:k]
    return top, masked[top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.recommend", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a sasrec or bert4rec run of ours")
    p.add_argument("--user", required=True, help="a user id of the run's data (MovieLens: 1..943)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--show-history", type=int, default=5, help="the history's last items printed")
    args = p.parse_args(argv)
    if args.k < 1:
        raise SystemExit("--k must be at least 1")
    from bigmodel_jax import checkpoint, transfer

    which = "best" if checkpoint.read_meta(Path(args.workdir) / "best") is not None else "latest"
    model, cfg, step = transfer.load_trained(args.workdir, which)
    if cfg.task not in SEQUENTIAL:
        raise SystemExit(f"{args.workdir} is a {cfg.task!r} run; recommendations need one of {sorted(SEQUENTIAL)}")
    h, _ = recsys.load(cfg)
    if args.user not in h.users:
        raise SystemExit(f"user {args.user!r} is not in the run's data ({len(h.users)} users, e.g. {h.users[0]!r})")
    history = h.sequences[h.users.index(args.user)]
    titles = movielens.default_titles() if not cfg.data.path else {}

    def name(i: int) -> str:
        return titles.get(h.items[i - 1], f"item {h.items[i - 1]}")

    top, scores = recommend(model, cfg, history, h.num_items, min(args.k, h.num_items - len(history)))
    print(f"{args.workdir} (step {step}); user {args.user}: {len(history)} items rated, the last "
          f"{min(args.show_history, len(history))}:")
    for i in history[-args.show_history:]:
        print(f"  {name(i)}")
    print(f"top {len(top)} unseen:")
    for rank, (i, s) in enumerate(zip(top, scores), 1):
        print(f"{rank:3d}. {name(i)}  (score {s:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
