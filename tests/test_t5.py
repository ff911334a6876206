"""The T5 encoder-decoder against transformers' T5ForConditionalGeneration on identical weights
(v1.0: ReLU, tied and scaled head; v1.1: gated GELU, untied head): logits on padded batches,
greedy and beam generation, export, and cached decoding against full recomputation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file, save_file
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from bigmodel_jax import hf_t5
from bigmodel_jax.errors import WeightsError
from bigmodel_jax.generate import Sampling, beam_search, generate
from bigmodel_jax.models.encdec import EncoderDecoder, count_params, relative_bucket

SOURCES = [[5, 17, 42, 8, 3, 60, 61, 70, 71], [3, 9], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74,
                                                      75, 76, 77, 78, 79, 80, 81, 82, 83]]


def _hf(v11: bool, path, decoder_layers: int = 2) -> T5ForConditionalGeneration:
    """A small random transformers T5 with spread-out weights (so a mis-mapped tensor shows and
    generation does not repeat one token), saved to path."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=99, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=decoder_layers,
                   num_heads=4, feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11,
                   dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                   decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(1.0 + 0.5 * torch.randn_like(p)) if "layer_norm" in name else p.mul_(2.0)
        if v11:
            model.lm_head.weight = torch.nn.Parameter(torch.randn(99, 32))
    model.save_pretrained(path)
    model.generation_config.update(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    return model


def _padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


@pytest.fixture(scope="module", params=[False, True], ids=["v1.0", "v1.1"])
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("t5")
    hf = _hf(request.param, path)
    return hf, hf_t5.load_t5_dir(path)


def test_relative_buckets_match_transformers():
    rel = np.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            ref = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional, buckets, distance).numpy()
            np.testing.assert_array_equal(np.asarray(relative_bucket(jnp.asarray(rel), bidirectional, buckets,
                                                                     distance)), ref)


@pytest.mark.parametrize("v11", [False, True], ids=["v1.0", "v1.1"])
def test_logits_match_transformers_on_padded_batches(v11, tmp_path):
    hf = _hf(v11, tmp_path, decoder_layers=3)  # a deeper decoder than encoder
    ours = hf_t5.load_t5_dir(tmp_path)
    src, src_mask = _padded(SOURCES)
    tgt = np.random.default_rng(0).integers(2, 99, (3, 30))
    tgt[:, 0] = 0
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(src), attention_mask=torch.tensor(src_mask),
                 decoder_input_ids=torch.tensor(tgt)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(src), jnp.asarray(src_mask, bool), jnp.asarray(tgt)))
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max() / 10)
    assert ours.cfg.tie_embeddings == (not v11) and (ours.lm_head is None) == (not v11)


def _trim(row: list[int], eos: int = 1) -> list[int]:
    """transformers' output row without its start token, cut after the first eos (pads follow)."""
    row = row[1:]
    return row[:row.index(eos) + 1] if eos in row else row


def test_greedy_and_beam_match_transformers_generate(pair):
    hf, ours = pair
    ids, mask = _padded(SOURCES)
    with torch.no_grad():
        greedy = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=20,
                             do_sample=False, num_beams=1)
        beams = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=20,
                            do_sample=False, num_beams=3, length_penalty=1.0)
    start = [[0]] * len(SOURCES)
    got = generate(ours, start, 20, sampling=Sampling(greedy=True), stop_tokens=[1], source=SOURCES)
    assert got == [_trim(r) for r in greedy.tolist()]
    if ours.lm_head is not None:  # a random tied head repeats the last token (its embedding is in the residual)
        assert len({tuple(r) for r in got}) == len(got) and any(len(set(r)) > 3 for r in got)
    got_beams, _ = beam_search(ours, start, 20, num_beams=3, stop_tokens=[1], source=SOURCES)
    assert got_beams == [_trim(r) for r in beams.tolist()]


def test_cached_decoding_equals_full_recomputation(pair):
    """Each step of the decode loop (one token through the KV cache and the precomputed
    cross-attention keys/values) gives the logits teacher forcing gives at that position."""
    _, ours = pair
    src, src_mask = (jnp.asarray(a) for a in _padded(SOURCES))
    src_mask = src_mask.astype(bool)
    tgt = jnp.asarray(np.random.default_rng(1).integers(2, 99, (3, 12))).at[:, 0].set(0)
    full = ours(src, src_mask, tgt)
    cache = ours.init_cache(3, 16, source=(src, src_mask))
    x, cache = ours.hidden(tgt[:, :1], cache=cache, prefill=True, mask_bs=jnp.ones((3, 16), bool).at[:, 1:].set(False))
    steps = [ours.logits(x)[:, 0]]
    for i in range(1, 12):
        mask = jnp.arange(16)[None, :].repeat(3, 0) <= i
        x, cache = ours.hidden(tgt[:, i:i + 1], cache=cache, cache_index=i, mask_bs=mask)
        steps.append(ours.logits(x)[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), np.asarray(full), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("activation,tied", [("relu", True), ("geglu", False)])
def test_export_reloads_in_transformers_with_the_same_logits(activation, tied, tmp_path):
    cfg = hf_t5.t5_config({"model_type": "t5", "vocab_size": 97, "d_model": 24, "d_kv": 8, "d_ff": 40, "num_layers": 2,
                           "num_decoder_layers": 1, "num_heads": 3, "relative_attention_num_buckets": 16,
                           "feed_forward_proj": "relu" if tied else "gated-gelu", "tie_word_embeddings": tied})
    assert cfg.activation == activation
    ours = EncoderDecoder(cfg, rngs=nnx.Rngs(3))
    assert count_params(cfg) == sum(p.size for p in jax.tree.leaves(nnx.to_pure_dict(nnx.state(ours, nnx.Param))))
    hf_t5.save_t5_dir(ours, tmp_path)
    hf = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    src, src_mask = _padded(SOURCES)
    tgt = np.random.default_rng(2).integers(2, 97, (3, 9))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(src), attention_mask=torch.tensor(src_mask),
                 decoder_input_ids=torch.tensor(tgt)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(src), jnp.asarray(src_mask, bool), jnp.asarray(tgt)))
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, np.abs(ref).max() / 10))
    again = hf_t5.load_t5_dir(tmp_path)
    np.testing.assert_array_equal(np.asarray(again.shared.embedding[...]), np.asarray(ours.shared.embedding[...]))


def test_bad_directories_name_the_problem(pair, tmp_path):
    hf, _ = pair
    hf.save_pretrained(tmp_path)
    cfg = hf_t5.t5_config(hf.config.to_dict())
    tensors = load_file(str(tmp_path / "model.safetensors"))
    deeper = dict(tensors)
    deeper["decoder.block.2.layer.0.layer_norm.weight"] = tensors["decoder.block.0.layer.0.layer_norm.weight"]
    with pytest.raises(WeightsError, match="more than the model's 2 decoder layers"):
        hf_t5.load_t5_tensors(hf_t5.abstract_t5(cfg), deeper)
    missing = {k: v for k, v in tensors.items() if "EncDecAttention.q" not in k}
    with pytest.raises(WeightsError, match="EncDecAttention.q.weight"):
        hf_t5.load_t5_tensors(hf_t5.abstract_t5(cfg), missing)
    save_file({**tensors, "encoder.block.0.layer.0.SelfAttention.q.bias": np.zeros(32, np.float32)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="does not understand.*q.bias"):
        hf_t5.load_t5_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bart"}')
    with pytest.raises(WeightsError, match="expected a T5 config"):
        hf_t5.load_t5_dir(tmp_path)


def test_sample_runs_on_an_exported_t5_directory_with_its_vocabulary(tmp_path, capsys):
    from bigmodel_jax import sample
    from bigmodel_jax.data.spm import SentencePieceTokenizer

    tok = SentencePieceTokenizer.train(["the cat sat on the mat", "a dog ran in the park"] * 40, 40)
    cfg = hf_t5.t5_config({"model_type": "t5", "vocab_size": tok.vocab_size, "d_model": 16, "d_kv": 4, "d_ff": 32,
                           "num_layers": 1, "num_heads": 4, "feed_forward_proj": "gated-gelu",
                           "tie_word_embeddings": False, "n_positions": 32})
    hf_t5.save_t5_dir(EncoderDecoder(cfg, rngs=nnx.Rngs(0)), tmp_path, tok)
    assert (tmp_path / "spiece.model").is_file()
    assert sample.main(["--model", str(tmp_path), "--prompt", "the cat", "--greedy", "--max-new-tokens", "8"]) == 0
    assert sample.main(["--model", str(tmp_path), "--prompt", "the cat", "--beams", "2", "--max-new-tokens", "8"]) == 0
    (tmp_path / "spiece.model").unlink()
    with pytest.raises(SystemExit, match="spiece.model is missing"):
        sample.main(["--model", str(tmp_path), "--prompt", "the cat"])


def test_a_t5_directory_with_only_tokenizer_json_encodes_and_decodes_as_transformers(tmp_path, capsys):
    """Many T5 uploads ship only the fast tokenizer's file; it must give transformers' own ids."""
    from transformers import T5TokenizerFast

    from bigmodel_jax import sample
    from bigmodel_jax.data import spm

    texts = ["the cat sat on the mat", "a dog ran in the park", "The Cat, in the  hat!"]
    tok = spm.SentencePieceTokenizer.train(texts[:2] * 40, 40, symbols=["<extra_id_0>", "<extra_id_1>"])
    tok.save(tmp_path / "spm")
    fast = T5TokenizerFast.from_pretrained(tmp_path / "spm", extra_ids=0)  # converts the sentencepiece model
    fast.save_pretrained(tmp_path / "hf")
    for name in ("spiece.model", "special_tokens_map.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink(missing_ok=True)
    ours = spm.load(tmp_path / "hf")
    assert isinstance(ours, spm.TokenizerJsonT5) and ours.vocab_size == len(fast)
    texts += ["<extra_id_0> sat on <extra_id_1>", "zebra ünïcode"]
    assert ours.encode(texts) == fast(texts)["input_ids"]  # eos appended, as T5's post-processor does
    ids = ours.encode(texts)
    for row, text in zip(ids, texts):
        assert ours.decode(row + [0, 0]) == fast.decode(row, skip_special_tokens=False).removesuffix("</s>").strip()
    assert ours.piece_id("<extra_id_1>") == fast.convert_tokens_to_ids("<extra_id_1>")
    with pytest.raises(KeyError):
        ours.piece_id("<extra_id_7>")
    cfg = hf_t5.t5_config({"model_type": "t5", "vocab_size": ours.vocab_size, "d_model": 16, "d_kv": 4, "d_ff": 32,
                           "num_layers": 1, "num_heads": 4, "feed_forward_proj": "gated-gelu",
                           "tie_word_embeddings": False, "n_positions": 32})
    hf_t5.save_t5_dir(EncoderDecoder(cfg, rngs=nnx.Rngs(0)), tmp_path / "hf", ours)
    assert not (tmp_path / "hf" / "spiece.model").exists()
    assert spm.load(tmp_path / "hf").encode(["the cat"]) == ours.encode(["the cat"])
    assert sample.main(["--model", str(tmp_path / "hf"), "--prompt", "the cat", "--greedy",
                        "--max-new-tokens", "4"]) == 0
    (tmp_path / "hf" / "tokenizer.json").write_text("{not json")
    with pytest.raises(SystemExit, match="tokenizer.json: not a tokenizers file"):
        sample.main(["--model", str(tmp_path / "hf"), "--prompt", "the cat"])


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_remat_gives_the_same_loss_and_gradients_and_keeps_less_for_the_backward_pass():
    """model.remat recomputes each encoder and decoder layer in the backward pass: the numbers are
    the unrematerialized ones (dropout included: the same rngs draw the same masks), and what autodiff
    keeps from the forward pass shrinks (full < dots_saveable < none)."""
    from bigmodel_jax.tasks import seq2seq

    cfg = {"model_type": "t5", "vocab_size": 64, "d_model": 64, "d_kv": 16, "d_ff": 256, "num_layers": 3,
           "num_decoder_layers": 3, "num_heads": 4, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
           "dropout_rate": 0.1}
    rng = np.random.default_rng(0)
    batch = {"source": jnp.asarray(rng.integers(3, 64, (4, 48)), jnp.int32),
             "source_mask": jnp.ones((4, 48), jnp.int32),
             "decoder_in": jnp.asarray(rng.integers(3, 64, (4, 40)), jnp.int32),
             "target": jnp.asarray(rng.integers(3, 64, (4, 40)), jnp.int32),
             "target_mask": jnp.ones((4, 40), jnp.int32)}
    batch["source_mask"] = batch["source_mask"].at[1, 30:].set(0)
    kept, results = {}, {}
    for policy in ("none", "dots_saveable", "full"):
        model_cfg = hf_t5.t5_config(cfg)
        model_cfg.remat = policy
        graphdef, params = nnx.split(EncoderDecoder(model_cfg, rngs=nnx.Rngs(0)))

        def loss(p):
            model = nnx.merge(graphdef, p)
            return seq2seq.loss_fn(model, batch, nnx.Rngs(dropout=jax.random.PRNGKey(1)))[0]

        value, backward = jax.vjp(loss, params)
        kept[policy] = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(backward))
        results[policy] = (value, backward(jnp.ones_like(value))[0])
    for policy in ("dots_saveable", "full"):
        np.testing.assert_allclose(results[policy][0], results["none"][0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[policy][1],
                     results["none"][1])
    assert kept["full"] < kept["dots_saveable"] < kept["none"], kept
