"""The labeled finetuning sets on the real data: plays-derived tasks, polarity, VADER, the CoNLL and
SQuAD readers, and the TF-IDF baselines."""

import collections
import importlib.metadata
import json

import pytest

from bigmodel_jax import baselines
from bigmodel_jax.data import labeled, plays_tasks
from bigmodel_jax.data.plays import GENRES, default_plays_dir, list_plays

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def speeches(tfds_dir):
    return plays_tasks.plays_speeches(tfds_dir)


@pytest.fixture(scope="module")
def genre(tfds_dir):
    return plays_tasks.genre_classification(tfds_dir)


def test_split_key_is_stable_and_in_unit_interval():
    assert labeled.split_key("hamlet", "ACT I", 0) == 0.4954330267827579  # measured once
    keys = [labeled.split_key("x", i) for i in range(2000)]
    assert all(0 <= k < 1 for k in keys) and 0.45 < sum(keys) / len(keys) < 0.55
    assert labeled.split_key("a", 1) != labeled.split_key("a1")


def test_plays_speeches(speeches):
    assert 25_000 < len(speeches) < 40_000  # 31,331 measured
    assert all(s["speaker"].strip() and s["text"].strip() for s in speeches)
    assert len({s["play"] for s in speeches}) == 38
    folder_of = {play: genre for genre, play, _ in list_plays(default_plays_dir())}
    assert all(s["genre"] == folder_of[s["play"]] for s in speeches)
    first = speeches[0]
    assert (first["play"], first["speaker"], first["act"], first["scene"]) == ("a-midsummer-night-s-dream", "THESEUS",
                                                                               "ACT I", 0)
    assert first["text"].startswith("Now, fair Hippolyta, our nuptial hour\nDraws on apace;")
    speakers = collections.Counter(s["speaker"] for s in speeches)
    assert speakers["HAMLET"] > 300 and speakers["Clown"] > 200  # minor roles are not all caps
    assert "ROSENCRANTZ & GUILDENSTERN" in speakers  # the source's 'ROSENCRANTZ: & GUILDENSTERN:' heading
    assert not any(sp.startswith(("SCENE", "Enter", "Exit", "Exeunt")) or ":" in sp for sp in speakers)
    assert not any(line.startswith("[") and line.endswith("]") for s in speeches for line in s["text"].split("\n"))


def _scene_of_text(speeches):
    """speech text -> its (play, act, scene), for texts that occur in one scene only."""
    scenes = collections.defaultdict(set)
    for s in speeches:
        scenes[s["text"]].add((s["play"], s["act"], s["scene"]))
    return {text: next(iter(where)) for text, where in scenes.items() if len(where) == 1}


def test_genre_classification_splits_by_scene(genre, speeches):
    scene_of = _scene_of_text(speeches)
    folder_of = {play: g for g, play, _ in list_plays(default_plays_dir())}
    assert genre.label_names == GENRES
    scenes_in = {}
    for split in SPLITS:
        records = getattr(genre, split)
        assert {genre.label_names[label] for _, label in records} == set(GENRES), split
        assert all(len(text.split()) >= 8 for text, _ in records)
        found = [(scene_of[text], label) for text, label in records if text in scene_of]
        assert len(found) > 0.95 * len(records)
        assert all(genre.label_names[label] == folder_of[play] for (play, _, _), label in found)
        scenes_in[split] = {scene for scene, _ in found}
    assert not scenes_in["train"] & scenes_in["validation"]
    assert not scenes_in["train"] & scenes_in["test"] and not scenes_in["validation"] & scenes_in["test"]
    total = sum(len(getattr(genre, s)) for s in SPLITS)
    assert 0.75 < len(genre.train) / total < 0.85  # 17,418 / 1,945 / 2,481 measured
    assert "17418/1945/2481" in genre.description


def test_per_class_cap_is_deterministic(tfds_dir, genre):
    capped = plays_tasks.genre_classification(tfds_dir, max_per_class=50, seed=1)
    assert capped == plays_tasks.genre_classification(tfds_dir, max_per_class=50, seed=1)
    assert collections.Counter(label for _, label in capped.train) == {i: 50 for i in range(6)}
    assert capped.validation == genre.validation and capped.test == genre.test
    assert set(capped.train) <= set(genre.train)
    assert capped.train != plays_tasks.genre_classification(tfds_dir, max_per_class=50, seed=2).train


def test_play_classification(tfds_dir, genre):
    plays = plays_tasks.play_classification(tfds_dir)
    assert len(plays.label_names) == 38 and plays.label_names == tuple(sorted(plays.label_names))
    plays_in = {split: {label for _, label in getattr(plays, split)} for split in SPLITS}
    # ~20 scenes a play, 10% of them held out: a few plays miss validation or test (32 and 36 measured).
    assert len(plays_in["train"]) == 38 and len(plays_in["validation"]) >= 30 and len(plays_in["test"]) >= 34
    assert [t for t, _ in plays.test] == [t for t, _ in genre.test]  # same speeches, same scene split


def test_polarity():
    data = labeled.polarity()
    records = data.train + data.validation + data.test
    assert len(records) == 200 and data.label_names == ("neg", "pos")
    assert collections.Counter(label for _, label in records) == {0: 100, 1: 100}
    assert min(len(s) for s in (data.train, data.validation, data.test)) >= 30
    assert not {t for t, _ in data.train} & {t for t, _ in data.test}
    assert any("—" in text for text, _ in records)  # the cp1252 0x97 dash decoded


def test_vader_valence():
    data = labeled.vader_valence()
    records = data.train + data.validation + data.test
    assert 7_400 < len(records) < 7_600 and data.label_names is None  # 7,506 tokens (14 listed twice)
    assert all(-4 <= v <= 4 for _, v in records)
    valence = dict(records)
    assert valence["good"] == 1.9 and valence["lol"] == 1.8  # 'lol' is listed as 2.9, then 1.8: last wins
    assert 0.75 < len(data.train) / len(records) < 0.85


def test_vader_sign_keeps_the_valence_split():
    valence, sign = labeled.vader_valence(), labeled.vader_sign()
    assert sign.label_names == ("negative", "positive")
    for name in ("train", "validation", "test"):
        assert getattr(sign, name) == [(t, int(v > 0)) for t, v in getattr(valence, name) if v != 0]
    assert "sign of the mean valence" in sign.description and "6072/709/725" in sign.description


def test_file_sets_name_the_package_or_file(tmp_path, monkeypatch):
    bad = tmp_path / "polarity.cor"
    bad.write_text("__label__pos fine .\n__label__meh what ?\n")
    with pytest.raises(ValueError, match=r"polarity.cor:2: expected '__label__neg"):
        labeled.polarity(bad)
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.txt"):
        labeled.vader_valence(tmp_path / "missing.txt")
    (tmp_path / "vader.txt").write_text("good\t1.9\t0.9\t[2]\nbad\tterrible\n")
    with pytest.raises(ValueError, match=r"vader.txt:2: expected 'token<TAB>mean valence"):
        labeled.vader_valence(tmp_path / "vader.txt")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(labeled.importlib.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps gensim==4.4.0.*pass path="):
        labeled.polarity()
    with pytest.raises(FileNotFoundError, match=r"pip install vaderSentiment.*vader_lexicon.txt and pass path="):
        labeled.vader_valence()


def test_speaker_tagging_tags_headings_not_names_in_dialogue(tfds_dir):
    data = plays_tasks.speaker_tagging(tfds_dir, words_per_example=64)
    assert data.label_names == ("O", "B-SPK", "I-SPK")
    records = data.train + data.validation + data.test
    assert len(records) > 10_000  # 14,460 measured
    for words, tags in records:
        assert len(words) == len(tags) and 0 < len(words) <= 64
        assert all(t in data.label_names for t in tags)
        assert all(tags[i - 1] != "O" for i, t in enumerate(tags) if t == "I-SPK")  # no heading cut
        assert not any(w.endswith(":") for w, t in zip(words, tags) if t != "O")
    # Richard II, Act I scene IV opens with a stage direction naming the king, then his speech.
    window = next(r for r in records if r[0][:4] == ["SCENE", "IV.", "The", "court."] and "Aumerle," in r[0])
    tagged = list(zip(*window))
    i = tagged.index(("observe.", "O"))
    assert tagged[i - 5:i + 3] == [("KING", "B-SPK"), ("RICHARD", "I-SPK"), ("II", "I-SPK"), ("We", "O"),
                                   ("did", "O"), ("observe.", "O"), ("Cousin", "O"), ("Aumerle,", "O")]
    assert tagged[4:7] == [("Enter", "O"), ("KING", "O"), ("RICHARD", "O")]  # a stage direction
    j = tagged.index(("DUKE", "B-SPK"))
    assert tagged[j:j + 5] == [("DUKE", "B-SPK"), ("OF", "I-SPK"), ("AUMERLE", "I-SPK"), ("I", "O"), ("brought", "O")]
    assert ("AUMERLE", "O") in tagged  # the same name in the stage direction


def test_speaker_qa_spans_are_valid(tfds_dir):
    data = plays_tasks.speaker_qa(tfds_dir, speeches_per_context=4)
    records = data.train + data.validation + data.test
    assert len(records) > 20_000 and data.label_names is None  # 31,022 measured
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        (text,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
        context = r["context"]
        assert context[start:start + len(text)] == text and context[start + len(text)] == ":"
        assert start == 0 or context[start - 2:start] == "\n\n"
        quote = r["question"].removeprefix('Who says "').removesuffix('"?')
        speech = context[start + len(text) + 2:].split("\n\n")[0]
        assert " ".join(speech.split()).startswith(quote)
    first = data.train[0]
    assert first["question"] == 'Who says "Now, fair Hippolyta, our nuptial hour Draws on"?'
    assert first["answers"] == {"text": ["THESEUS"], "answer_start": [0]}
    assert first["context"].count("\n\n") == 3  # four speeches


def test_read_conll(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman\tJJ\tB-NP\tB-MISC\n\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\nLondon NNP B-NP B-LOC")
    assert labeled.read_conll(path) == [(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
                                        (["Peter", "Blackburn"], ["B-PER", "I-PER"]), (["London"], ["B-LOC"])]
    assert labeled.read_conll(path, tag_column=1)[1] == (["Peter", "Blackburn"], ["NNP", "NNP"])
    bad = tmp_path / "bad.conll"
    bad.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"bad.conll:2: expected 'word ... tag'"):
        labeled.read_conll(bad)
    with pytest.raises(ValueError, match=r"eng.train:3: tag_column=5 but the line has 4 columns"):
        labeled.read_conll(path, tag_column=5)


def test_read_squad(tmp_path):
    context = "Hamlet is a tragedy by William Shakespeare."
    squad = {"version": "v2.0", "data": [{"title": "Hamlet", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Who wrote Hamlet?", "is_impossible": False,
         "answers": [{"text": "William Shakespeare", "answer_start": 23}]},
        {"id": "q2", "question": "Who wrote Faust?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "William Shakespeare", "answer_start": 23}]}]}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(squad))
    records = labeled.read_squad(path)
    assert records[0] == {"id": "q1", "question": "Who wrote Hamlet?", "context": context,
                          "answers": {"text": ["William Shakespeare"], "answer_start": [23]}}
    assert records[1]["answers"] == {"text": [], "answer_start": []}
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [')
    with pytest.raises(ValueError, match="broken.json"):
        labeled.read_squad(bad)
    del squad["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path.write_text(json.dumps(squad))
    with pytest.raises(ValueError, match=r"dev-v2.0.json: article 0, paragraph 0, question 0 .*malformed SQuAD "
                                         r"record .*'question'"):
        labeled.read_squad(path)


def test_baselines(tfds_dir):
    polarity = labeled.polarity()
    result = baselines.tfidf_logreg(polarity.train, polarity.test)
    assert set(result) == {"accuracy", "majority_accuracy"} and all(0 <= v <= 1 for v in result.values())
    genre = plays_tasks.genre_classification(tfds_dir, max_per_class=1000)
    result = baselines.tfidf_logreg(genre.train, genre.test)
    assert result["accuracy"] > result["majority_accuracy"] + 0.05  # 0.41 vs 0.24 measured
    vader = labeled.vader_valence()
    result = baselines.tfidf_ridge(vader.train, vader.test)
    assert result["mse"] < 0.6 * result["mean_baseline_mse"]  # 1.01 vs 2.88 measured
    signs = labeled.vader_sign()
    words = baselines.tfidf_logreg(signs.train, signs.test)  # a word's unigrams are unseen at test time
    chars = baselines.tfidf_logreg(signs.train, signs.test, chars=True)
    assert words["accuracy"] < chars["accuracy"] - 0.1  # 0.58 (majority) vs 0.88 measured
