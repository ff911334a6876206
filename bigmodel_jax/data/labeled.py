"""Real labeled datasets for finetuning encoders, as plain Python records.

Tokenization happens later, in the task code; these functions return raw text or words and labels:
- text classification: `(text, label_index)` — `polarity`, `vader_sign`, and from the plays `genre_classification`,
  `play_classification`;
- regression: `(text, value)` — `vader_valence`;
- token tagging (CoNLL-like): `(words, tags)` — `read_conll`, and from the plays `speaker_tagging`;
- extractive QA (SQuAD v1.1 record format): `dict(id, question, context, answers=dict(text,
  answer_start))` — `read_squad`, and from the plays `speaker_qa`.

The plays-derived tasks live in `plays_tasks.py`. Every split is
deterministic: `split_key` hashes a record's identity (text, token, or (play, act, scene)) to [0, 1).
Nothing is downloaded: the file-based sets read a path, by default the copy inside a pip package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bigmodel_jax.data.records import BadRecords, read_raw_lines
from bigmodel_jax.errors import DataError

POLARITY_URL = "https://raw.githubusercontent.com/piskvorky/gensim/4.4.0/gensim/test/test_data/pang_lee_polarity.cor"
VADER_URL = "https://raw.githubusercontent.com/cjhutto/vaderSentiment/master/vaderSentiment/vader_lexicon.txt"


@dataclass
class LabeledSplits:
    train: list
    validation: list
    test: list
    label_names: tuple[str, ...] | None  # None for regression / QA
    description: str  # one line: source, how split, sizes


def make_splits(splits: dict[str, list], label_names: tuple[str, ...] | None, what: str) -> LabeledSplits:
    """LabeledSplits from split_by_key's dict; the description is `what` plus the split sizes."""
    sizes = "/".join(str(len(splits[s])) for s in ("train", "validation", "test"))
    return LabeledSplits(**splits, label_names=label_names, description=f"{what}; train/validation/test = {sizes}")


def split_key(*parts) -> float:
    """A stable hash of the parts in [0, 1): the same on every run and machine (Python's hash() of a
    str is salted per process, so it cannot make a reproducible split)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_name(key: float, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """'train' / 'validation' / 'test' for a split_key value: fractions are (train, validation)."""
    if key < fractions[0]:
        return "train"
    return "validation" if key < fractions[0] + fractions[1] else "test"


def split_by_key(records: Sequence, keys: Sequence[float], fractions: tuple[float, float] = (0.8, 0.1)
                 ) -> dict[str, list]:
    """{'train': [...], 'validation': [...], 'test': [...]}, records in their original order."""
    out: dict[str, list] = {"train": [], "validation": [], "test": []}
    for rec, key in zip(records, keys):
        out[split_name(key, fractions)].append(rec)
    return out


def package_file(package: str, relative: str, install: str, url: str) -> Path:
    """A data file shipped inside a pip package, located without importing the package."""
    try:
        path = Path(importlib.metadata.distribution(package).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{relative} ships with the `{package}` package: {install}; "
                                f"or download {url} and pass path=") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed `{package}` package; reinstall it "
                                f"({install}) or download {url} and pass path=")
    return path


# ------------------------------------------------------------------ text classification / regression

def polarity(path: str | Path | None = None) -> LabeledSplits:
    """Pang & Lee movie-review sentences (gensim's test copy, 100 neg + 100 pos): (sentence, label)
    with labels ('neg', 'pos'); split 60/20/20 by split_key(text). The file is cp1252 (it has 0x97
    dashes), lowercased and tokenized with spaces, one `__label__neg|pos text` line per sentence."""
    path = Path(path) if path else package_file("gensim", "gensim/test/test_data/pang_lee_polarity.cor",
                                                 "pip install --no-deps gensim==4.4.0", POLARITY_URL)
    label_names = ("neg", "pos")
    records = []
    for lineno, line in enumerate(_read_lines(path, encoding="cp1252"), 1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        label = tag.removeprefix("__label__")
        if label not in label_names or not text.strip():
            raise ValueError(f"{path}:{lineno}: expected '__label__neg <text>' or '__label__pos <text>', "
                             f"got {line[:80]!r}")
        records.append((text.strip(), label_names.index(label)))
    splits = split_by_key(records, [split_key(text) for text, _ in records], (0.6, 0.2))
    return make_splits(splits, label_names, f"Pang & Lee polarity sentences in {path.name} ({len(records)}) "
                                            "-> neg/pos; split 60/20/20 by split_key(text)")


def vader_valence(path: str | Path | None = None) -> LabeledSplits:
    """VADER lexicon: (token, mean human-rated valence in [-4, 4]); split 80/10/10 by split_key(token).
    A token listed twice keeps its last line, as vaderSentiment's own loader does (14 tokens, e.g.
    'lol' 2.9 then 1.8)."""
    path = Path(path) if path else package_file("vaderSentiment", "vaderSentiment/vader_lexicon.txt",
                                                 "pip install vaderSentiment", VADER_URL)
    valence: dict[str, float] = {}
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        try:
            if len(cols) < 2 or not cols[0]:
                raise ValueError
            valence[cols[0]] = float(cols[1])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 'token<TAB>mean valence<TAB>std<TAB>[ratings]', "
                             f"got {line[:80]!r}") from None
    records = list(valence.items())
    splits = split_by_key(records, [split_key(token) for token, _ in records])
    return make_splits(splits, None, f"VADER lexicon {path.name}: {len(records)} tokens -> mean valence; "
                                     "split 80/10/10 by split_key(token)")


def vader_sign(path: str | Path | None = None) -> LabeledSplits:
    """The VADER lexicon as word sentiment: (token, 0 negative / 1 positive mean valence), the same
    80/10/10 split as vader_valence. A classification task a pretrained encoder's vocabulary already
    half-knows and a bag of character n-grams mostly cannot (it sees spelling, not meaning), so a
    learning curve over few labels shows what pretraining brings. Tokens rated exactly 0 (none in the
    3.3.2 lexicon) are dropped."""
    valence = vader_valence(path)
    signs = {name: [(token, int(value > 0)) for token, value in getattr(valence, name) if value != 0]
             for name in ("train", "validation", "test")}
    return make_splits(signs, ("negative", "positive"),
                       valence.description.split(";")[0].replace("-> mean valence", "-> sign of the mean valence"))


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    try:
        return path.read_text(encoding=encoding).splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e


# ------------------------------------------------------------------ standard formats

def read_conll(path: str | Path, tag_column: int = -1,
               on_bad_record: str = "stop") -> list[tuple[list[str], list[str]]]:
    """CoNLL-2003 layout: one token per line, columns separated by spaces or tabs (word first, the tag
    in `tag_column`), a blank line between sentences, `-DOCSTART-` lines skipped. A bad line (too
    few columns, not UTF-8, huge) stops the read or, with on_bad_record="skip", drops its sentence."""
    path = Path(path)
    if tag_column == 0:
        raise ValueError("tag_column=0 is the word column; the tag is usually the last column (-1)")
    bad = BadRecords(path, on_bad_record)
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    broken = False  # the sentence being read has a bad line: left out whole
    for lineno, raw in enumerate(read_raw_lines(path, "a CoNLL-format file"), 1):
        line = bad.decode(raw, lineno)
        cols = [] if line is None else line.split()
        if line is not None and (not cols or cols[0] == "-DOCSTART-"):
            if words and not broken:
                sentences.append((words, tags))
            words, tags, broken = [], [], False
            continue
        if line is None:
            broken = True
        elif len(cols) < 2:
            bad.bad(lineno, f"expected 'word ... tag' (2+ columns), got {line!r}")
            broken = True
        elif not -len(cols) <= tag_column < len(cols):
            bad.bad(lineno, f"tag_column={tag_column} but the line has {len(cols)} columns: {line!r}")
            broken = True
        else:
            words.append(cols[0])
            tags.append(cols[tag_column])
    if words and not broken:
        sentences.append((words, tags))
    bad.report()
    return sentences


def read_squad(path: str | Path, on_bad_record: str = "stop") -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON (data -> paragraphs -> qas) flattened to one dict per question:
    dict(id, question, context, answers=dict(text=[...], answer_start=[...])); v2 unanswerable
    questions get empty lists. A malformed question (a missing field, an answer outside its
    context) stops the read or is left out, as on_bad_record says; a file that is not SQuAD JSON
    at all always stops it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (SQuAD JSON)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read SQuAD JSON {path}: {e}") from e
    except (KeyError, TypeError):
        raise DataError(f"{path}: not SQuAD JSON (expected a top-level object with a 'data' list)") from None
    bad = BadRecords(path, on_bad_record)
    records = []
    try:
        for a, article in enumerate(data):
            for p, paragraph in enumerate(article["paragraphs"]):
                context = paragraph["context"]
                for q, qa in enumerate(paragraph["qas"]):
                    where = f"article {a}, paragraph {p}, question {q} (id {qa.get('id', '?')!r})"
                    try:
                        answers = [] if qa.get("is_impossible") else qa["answers"]
                        record = {"id": str(qa["id"]), "question": qa["question"], "context": context,
                                  "answers": {"text": [x["text"] for x in answers],
                                              "answer_start": [int(x["answer_start"]) for x in answers]}}
                    except (KeyError, TypeError, ValueError) as e:
                        bad.bad(where, f"malformed SQuAD record (missing or bad field {e})")
                        continue
                    spans = zip(record["answers"]["text"], record["answers"]["answer_start"])
                    if any(not 0 <= s <= len(context) - len(t) for t, s in spans):
                        bad.bad(where, "an answer_start outside its context")
                        continue
                    records.append(record)
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: malformed SQuAD article or paragraph after {len(records)} questions "
                        f"(missing or bad field {e})") from None
    bad.report()
    return records
