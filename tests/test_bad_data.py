"""Bad records in users' data files (pairs, CoNLL, SQuAD): with data.on_bad_record="stop" the
read stops naming the file, the line or record and the problem; with "skip" the record is left
out and counted in the log. A file with nothing usable, or not of its format at all, always stops."""

import json
import logging
import types

import pytest

from bigmodel_jax.data import labeled, pairs
from bigmodel_jax.data.records import MAX_RECORD_CHARS
from bigmodel_jax.errors import DataError

GOOD_TSV = b"a b\tb a\n"
GOOD_JSONL = json.dumps({"source": "x y", "target": "y x"}).encode() + b"\n"
GOOD_CONLL = b"EU B-ORG\nrejects O\n\n"
# (file name, bytes, what the stop message says, records kept when skipping)
PAIRS = [
    ("broken.jsonl", GOOD_JSONL + b'{"source": "x"\n' + GOOD_JSONL, r"broken.jsonl:2: expected a JSON object", 2),
    ("no_target.jsonl", GOOD_JSONL + b'{"source": "x"}\n', r"no_target.jsonl:2: expected a JSON object", 1),
    ("list.jsonl", b"[1, 2]\n" + GOOD_JSONL, r"list.jsonl:1: expected a JSON object", 1),
    ("three.tsv", GOOD_TSV + b"a\tb\tc\n" + GOOD_TSV, r"three.tsv:2: expected source<TAB>target, got 3 columns", 2),
    ("one.tsv", b"no tab here\n" + GOOD_TSV, r"one.tsv:1: expected source<TAB>target, got 1 columns", 1),
    ("empty_side.tsv", GOOD_TSV + b"source only\t \n", r"empty_side.tsv:2: empty source or target", 1),
    ("latin1.tsv", GOOD_TSV + "caf\u00e9\tcoffee\n".encode("latin-1"), r"latin1.tsv:2: not UTF-8", 1),
    ("huge.tsv", b"x" * (MAX_RECORD_CHARS + 1) + b"\n" + GOOD_TSV, r"huge.tsv:1: 1,000,001 bytes without a line", 1),
]


@pytest.mark.parametrize("name,data,message,kept", PAIRS, ids=[p[0] for p in PAIRS])
def test_a_bad_pair_line_stops_or_is_skipped(tmp_path, caplog, name, data, message, kept):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=message + r".*on_bad_record='skip'"):
        pairs.read_pairs(path)
    with caplog.at_level(logging.WARNING):
        assert len(pairs.read_pairs(path, "skip")) == kept
    assert f"{path}: left out 1 bad record(s)" in caplog.text


def test_a_pair_file_with_nothing_usable_always_stops(tmp_path):
    (tmp_path / "empty.tsv").write_bytes(b"")
    (tmp_path / "all_bad.tsv").write_bytes(b"x\n\xff\xfe\n")
    for policy in ("stop", "skip"):
        with pytest.raises(DataError, match=r"empty.tsv: no pairs"):
            pairs.read_pairs(tmp_path / "empty.tsv", policy)
    with pytest.raises(DataError, match=r"all_bad.tsv: no pairs \(2 bad lines left out\)"):
        pairs.read_pairs(tmp_path / "all_bad.tsv", "skip")


CONLL = [
    ("short.conll", GOOD_CONLL + b"Peter B-PER\nBlackburn\n\n" + GOOD_CONLL,
     r"short.conll:5: expected 'word ... tag'", 2),
    ("latin1.conll", GOOD_CONLL + "Caf\u00e9 O\n".encode("latin-1") + b"\n" + GOOD_CONLL,
     r"latin1.conll:4: not UTF-8", 2),
    ("huge.conll", b"x" * (MAX_RECORD_CHARS + 1) + b"\n\n" + GOOD_CONLL, r"huge.conll:1: 1,000,001 bytes", 1),
]


@pytest.mark.parametrize("name,data,message,kept", CONLL, ids=[c[0] for c in CONLL])
def test_a_bad_conll_line_drops_its_sentence_or_stops(tmp_path, name, data, message, kept):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=message):
        labeled.read_conll(path)
    sentences = labeled.read_conll(path, on_bad_record="skip")
    assert len(sentences) == kept and all(len(w) == len(t) for w, t in sentences)


def test_a_tag_the_training_file_never_has_is_a_bad_record(tmp_path, caplog):
    from bigmodel_jax.tasks import tag

    (tmp_path / "train.conll").write_bytes(GOOD_CONLL * 3)
    (tmp_path / "dev.conll").write_bytes(GOOD_CONLL + b"Paris B-LOC\n\n")
    d = types.SimpleNamespace(train_file=str(tmp_path / "train.conll"), validation_file=str(tmp_path / "dev.conll"),
                              test_file=str(tmp_path / "train.conll"), on_bad_record="stop")
    with pytest.raises(DataError, match=r"dev.conll: sentence 2: tags \['B-LOC'\] never occur in the training file"):
        tag._conll(d)
    d.on_bad_record = "skip"
    assert len(tag._conll(d).validation) == 1


def _squad(**change) -> dict:
    qa = {"id": "q1", "question": "Who?", "answers": [{"text": "Hamlet", "answer_start": 0}]}
    qa.update(change)
    good = {"id": "q2", "question": "What?", "answers": [{"text": "prince", "answer_start": 10}]}
    return {"data": [{"paragraphs": [{"context": "Hamlet, a prince of Denmark.", "qas": [qa, good]}]}]}


SQUAD = [
    ("no_question.json", _squad(question=None) | {}, "question 0 .*'question'"),
    ("bad_start.json", _squad(answers=[{"text": "Hamlet", "answer_start": 99}]), "question 0 .*outside its context"),
    ("no_answers.json", _squad(answers=None), "question 0 .*malformed"),
]


@pytest.mark.parametrize("name,obj,message", SQUAD, ids=[s[0] for s in SQUAD])
def test_a_bad_squad_question_stops_or_is_skipped(tmp_path, name, obj, message):
    if name == "no_question.json":
        del obj["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=rf"{name}: article 0, paragraph 0, {message}"):
        labeled.read_squad(path)
    assert [r["id"] for r in labeled.read_squad(path, on_bad_record="skip")] == ["q2"]


def test_a_file_that_is_not_squad_always_stops(tmp_path):
    (tmp_path / "cut.json").write_text('{"data": [')
    (tmp_path / "other.json").write_text('{"rows": []}')
    for name, message in (("cut.json", "cannot read SQuAD JSON"), ("other.json", "not SQuAD JSON")):
        with pytest.raises(DataError, match=message):
            labeled.read_squad(tmp_path / name, on_bad_record="skip")
