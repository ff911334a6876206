"""RecBole's own SASRec and BERT4Rec on our MovieLens-100k split, scored by our ranking code: the
peer rows of `python -m experiments.recommenders --recbole` (issue 21).

RecBole trains as RecBole does (its model defaults, its data augmentation over every prefix of a
user's training items, Adam at 1e-3, batches of 2,048) for up to `epochs` epochs. After each epoch
its own `full_sort_predict` scores every validation user; our code ranks those scores (full
ranking, and against the same 100 uniform and popularity negatives as our models), and the
epoch with the best validation NDCG@10 is the one reported, with patience in epochs (RecBole's
early stopping watches the same metric): the test split is scored whenever validation improves, so
nothing RecBole saves is loaded back and no pickle is read.

Same split, exactly: RecBole scales timestamps to [0, 1] and sorts them as float32, so ratings made
within about a second of each other tie and keep their file order, not their time order; read
from the wheel's file, 37 of the 943 users' test rows (target or history) differ from ours. So RecBole
reads the same interactions from a file whose timestamp column is each rating's rank in our time
order, and `check_split` refuses to go on unless RecBole's validation and test rows equal ours for
every user.

Same metric: RecBole's own evaluator is run on the test rows too and must agree with our ranking of
the same scores. It agrees only without the seen-item mask: for sequential models RecBole's full
ranking counts the movies a user already rated as competitors, so the numbers it prints are lower
than (and not comparable with) full ranking as we and the papers define it. `recbole_own_test` in
each result keeps them.

Needs RecBole's dependencies beside ours, best in a venv of its own:
    python -m venv --system-site-packages .venv-recbole
    .venv-recbole/bin/pip install "pandas<3" texttable tensorboard thop
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from bigmodel_jax import ranking
from bigmodel_jax.data import movielens
from bigmodel_jax.tasks import recsys

MODELS = ("SASRec", "BERT4Rec")
DATASET = "ml-100k-ranked"
INSTALL = ('python -m venv --system-site-packages .venv-recbole && .venv-recbole/bin/pip install "pandas<3" texttable '
           'tensorboard thop (then run with .venv-recbole/bin/python)')


def write_ranked_inter(h: movielens.Histories, root: Path) -> Path:
    """root/DATASET/DATASET.inter: every interaction as (user, item, 1, rank), the rank counting all
    ratings in order of time, each user's ties in our order; returns root. The rating column says 1:
    every model here counts any rating as an interaction, and RecBole is told not to load it."""
    rows = [(int(t), u, i, item) for u, (seq, times) in enumerate(zip(h.sequences, h.times))
            for i, (item, t) in enumerate(zip(seq, times))]
    rows.sort()  # by time, then user and position: a user's own order is kept (their times are sorted)
    folder = root / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(movielens.RECBOLE_HEADER)]
    lines += [f"{h.users[u]}\t{h.items[item - 1]}\t1\t{rank}" for rank, (_, u, _, item) in enumerate(rows)]
    (folder / f"{DATASET}.inter").write_text("\n".join(lines) + "\n")
    return root


def recbole_config(model: str, root: Path, seed: int, epochs: int):
    """RecBole's Config for model on the ranked file: leave-one-out by time, full ranking, its
    model defaults, cross-entropy over all items (no sampled training negatives)."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):  # RecBole 1.2.1 still names numpy aliases that numpy 2 removed
            setattr(np, old, new)
    from recbole.config import Config
    return Config(model=model, dataset=DATASET, config_dict={
        "data_path": str(root), "checkpoint_dir": str(root / "saved"), "use_gpu": False, "device": "cpu",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "train_neg_sample_args": None, "epochs": epochs, "metrics": ["Hit", "NDCG"], "topk": [10],
        "valid_metric": "NDCG@10", "seed": seed, "reproducibility": True, "show_progress": False, "state": "WARNING"})


def rows_in_our_order(data, h: movielens.Histories) -> np.ndarray:
    """The row of RecBole's eval set holding each of our users."""
    inter = data._dataset.inter_feat
    tokens = data._dataset.field2id_token["user_id"]
    where = {tokens[int(u)]: r for r, u in enumerate(inter["user_id"])}
    return np.asarray([where[u] for u in h.users])


def our_items(data, h: movielens.Histories) -> np.ndarray:
    """[our item id] -> RecBole's internal id (0 pads in both)."""
    ids = data._dataset.field2token_id["item_id"]
    return np.asarray([0] + [ids[t] for t in h.items])


def check_split(data, h: movielens.Histories, inputs: list[np.ndarray], targets: np.ndarray, seq_len: int) -> None:
    """Refuses unless RecBole's rows (history of up to seq_len items, target) equal ours for every user."""
    inter = data._dataset.inter_feat
    rows, to_recbole = rows_in_our_order(data, h), our_items(data, h)
    wrong = []
    for u, r in enumerate(rows):
        length = int(inter["item_length"][r])
        history = inter["item_id_list"][r][:length].numpy()
        if int(inter["item_id"][r]) != to_recbole[targets[u]] or not np.array_equal(
                history, to_recbole[inputs[u][-seq_len:]]):
            wrong.append(h.users[u])
    if wrong or len(rows) != len(inter):
        raise SystemExit(f"RecBole's split differs from ours for {len(wrong)} users (e.g. {wrong[:5]}) "
                         f"or has {len(inter)} rows for {len(rows)} users; the table would not compare like with like")


def scores(model, data, h: movielens.Histories, batch: int = 256) -> np.ndarray:
    """[our users, our items + 1] RecBole's full_sort_predict, columns in our item ids."""
    import torch
    inter = data._dataset.inter_feat
    rows = torch.as_tensor(rows_in_our_order(data, h))
    model.eval()
    with torch.no_grad():
        out = np.concatenate([model.full_sort_predict(inter[rows[i:i + batch]]).numpy()
                              for i in range(0, len(rows), batch)])
    return out[:, our_items(data, h)]


def check_scoring(trainer, data, scores_bi: np.ndarray, targets_b: np.ndarray) -> dict[str, float]:
    """RecBole's own evaluator on the same rows, which must agree with ours: for a sequential model it
    ranks the target among every item, seen ones included (its full-sort loader masks no history), so
    it is compared with our ranking of the same scores without the seen-item mask. Returns RecBole's."""
    theirs = trainer.evaluate(data, load_best_model=False)
    theirs = {"hr10": float(theirs["hit@10"]), "ndcg10": float(theirs["ndcg@10"])}
    unmasked = np.array(scores_bi, np.float64)
    unmasked[:, 0] = -np.inf
    ours = {k: float(v.mean()) for k, v in ranking.hit_ndcg(unmasked, targets_b, recsys.K).items()}
    if abs(theirs["hr10"] - ours["hr"]) > 1e-4 or abs(theirs["ndcg10"] - ours["ndcg"]) > 1e-4:  # RecBole rounds
        raise SystemExit(f"RecBole's evaluator gives {theirs} where our ranking of its scores over every item gives "
                         f"{ours}")
    return theirs


def train_one(model_name: str, seed: int, epochs: int, patience: int, workdir: Path, threads: int,
              data: dict) -> dict:
    """Trains one RecBole model, writing workdir/log.jsonl (an epoch a line) and workdir/result.json
    (the best epoch's validation and test metrics, rewritten after every epoch). data: our configs'
    tfds_dir, num_negatives and negative_seed, so the negatives are our models' own."""
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(threads)
    workdir = workdir.resolve()  # RecBole runs inside it (below)
    workdir.mkdir(parents=True, exist_ok=True)
    h = movielens.histories(data["tfds_dir"])
    split = movielens.leave_one_out(h.sequences)
    refs = recsys.references(h, split, data["num_negatives"], data["negative_seed"])
    root = write_ranked_inter(h, workdir / "data")
    config = recbole_config(model_name, root, seed, epochs)
    init_seed(seed, True)
    with contextlib.chdir(workdir):  # RecBole's trainer opens ./log_tensorboard
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        seq_len = config["MAX_ITEM_LIST_LENGTH"]
        check_split(valid_data, h, *split.validation, seq_len)
        check_split(test_data, h, *split.test, seq_len)
        model = get_model(model_name)(config, train_data._dataset)
        trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)

        def evaluate(data, name: str) -> tuple[dict[str, float], np.ndarray]:
            targets = split.validation[1] if name == "validation" else split.test[1]
            out = {"scores": scores(model, data, h), "target": targets}
            return recsys.corpus_metrics(out, refs[name]), out["scores"]

        best = {"epoch": 0, "val": {"ndcg10": -1.0}}
        started, log = time.time(), workdir / "log.jsonl"
        log.write_text("")
        for epoch in range(1, epochs + 1):
            model.train()
            loss = float(trainer._train_epoch(train_data, epoch - 1)) / len(train_data)
            val, _ = evaluate(valid_data, "validation")
            line = {"epoch": epoch, "train_loss": loss, "val": val, "seconds": time.time() - started}
            with log.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(f"{model_name} seed {seed} epoch {epoch}: loss {loss:.4f} val NDCG@10 {val['ndcg10']:.4f} "
                  f"HR@10 {val['hr10']:.4f} ({line['seconds'] / 60:.1f} min)", flush=True)
            if val["ndcg10"] > best["val"]["ndcg10"]:
                test, test_scores = evaluate(test_data, "test")
                theirs = check_scoring(trainer, test_data, test_scores, split.test[1])
                best = {"epoch": epoch, "val": val, "test": test, "recbole_own_test": theirs}
            stop = epoch - best["epoch"] >= patience
            result = dict(best, model=model_name, seed=seed, epochs_run=epoch, max_epochs=epochs, patience=patience,
                          minutes=(time.time() - started) / 60, status="done" if stop or epoch == epochs else "running")
            (workdir / "result.json").write_text(json.dumps(result, indent=1))
            if stop:
                break
    return result


def require() -> None:
    """Refuses, saying what to install, unless RecBole and the dependencies it imports are here."""
    try:
        import pandas  # noqa: F401
        import recbole.config  # noqa: F401
        import tensorboard  # noqa: F401
        import texttable  # noqa: F401
        import thop  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"RecBole's peers need recbole and its dependencies ({e}): {movielens.RECBOLE}, then "
                         f"{INSTALL}") from None


def train_all(models: list[str], seeds: list[int], epochs: int, patience: int, workdir: Path, jobs: int,
              data: dict) -> dict:
    """{model: [result per seed]}; finished runs (result.json "done") are read, not retrained, and
    one finished under other epochs or patience is refused rather than mixed in or overwritten."""
    require()
    todo, results = [], {m: [] for m in models}
    for m in models:
        for s in seeds:
            path = workdir / m / f"seed{s}" / "result.json"
            done = json.loads(path.read_text()) if path.exists() else {}
            if done.get("status") != "done":
                todo.append((m, s))
            elif (done["max_epochs"], done["patience"]) != (epochs, patience):
                raise SystemExit(f"{path} ran with --recbole-epochs {done['max_epochs']} --recbole-patience "
                                 f"{done['patience']}; pass those, or another --workdir for {epochs} and {patience}")
            else:
                results[m].append(done)
    if todo:
        import concurrent.futures
        import multiprocessing
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_one, m, s, epochs, patience, workdir / m / f"seed{s}", threads, data): m
                       for m, s in todo}
            for f in concurrent.futures.as_completed(futures):
                results[futures[f]].append(f.result())
    return results
