"""Parity with Hugging Face transformers' decoders (PyTorch CPU) on identical weights: GPT-2 and
Llama import (plain and left-padded batches), export of our GPTs, round trips and tokenizer files."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from bigmodel_jax.data.bpe_files import DecoderTokenizer
from bigmodel_jax.hf_decoders import abstract_gpt, load_decoder_dir, load_gpt2_dir, save_decoder_dir
from bigmodel_jax.models import lora
from bigmodel_jax.models.gpt import GPT
from tests.conftest import with_moved_adapters

VOCAB = 97
SHAPE = (3, 16)  # every forward pass has this shape: jax compiles each eager op once per shape
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _perturb_torch(model):
    """Non-trivial norms and biases, so a mis-mapped tensor shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=48, n_layer=2, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = _perturb_torch(GPT2LMHeadModel(cfg).eval())
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def hf_llama(request, tmp_path_factory):
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      num_hidden_layers=2, intermediate_size=128, rope_theta=10000.0, rms_norm_eps=1e-6,
                      max_position_embeddings=64, tie_word_embeddings=request.param)
    model = _perturb_torch(LlamaForCausalLM(cfg).eval())
    path = tmp_path_factory.mktemp(f"llama_{request.param}")
    model.save_pretrained(path)
    return model, path


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(torch.tensor(ids), **{k: torch.tensor(v) for k, v in kw.items()}).logits.numpy()


def test_gpt2_logits_match_transformers(hf_gpt2):
    hf, path = hf_gpt2
    ours = load_gpt2_dir(path)
    ids = np.random.default_rng(0).integers(0, VOCAB, SHAPE)
    np.testing.assert_allclose(np.asarray(ours(ids)[0]), _logits(hf, ids), atol=1e-4, rtol=1e-4)


def test_llama_logits_match_transformers(hf_llama):
    hf, path = hf_llama
    ours, tokenizer = load_decoder_dir(path)
    assert tokenizer is None and ours.cfg.num_kv_heads == 2 and ours.cfg.tie_embeddings == hf.config.tie_word_embeddings
    ids = np.random.default_rng(0).integers(0, VOCAB, SHAPE)
    np.testing.assert_allclose(np.asarray(ours(ids)[0]), _logits(hf, ids), atol=1e-4, rtol=1e-4)


def _check_left_padded_batch(hf, path):
    """Prompts of different lengths, left-padded: each row's own positions (from the mask) and a
    key mask in ours; the same mask and position_ids in transformers."""
    ours, _ = load_decoder_dir(path)
    rng = np.random.default_rng(2)
    lengths, t = [16, 9, 3], SHAPE[1]
    ids = np.zeros(SHAPE, np.int64)
    mask = np.zeros(SHAPE, np.int64)
    for row, n in enumerate(lengths):
        ids[row, t - n:] = rng.integers(1, VOCAB, n)
        mask[row, t - n:] = 1
    positions = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    ref = _logits(hf, ids, attention_mask=mask, position_ids=positions)
    logits = np.asarray(ours(ids, positions_bt=positions, mask_bs=mask.astype(bool))[0])
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], ref[real], atol=1e-4, rtol=1e-4)


def test_gpt2_left_padded_batch_matches_transformers(hf_gpt2):
    _check_left_padded_batch(*hf_gpt2)


def test_llama_left_padded_batch_matches_transformers(hf_llama):
    _check_left_padded_batch(*hf_llama)


def _perturbed_gpt(**overrides) -> GPT:
    """A GPT of our own (the shapes of hf_gpt2 / hf_llama) with random weights, norm scales and
    biases; set from numpy into an abstract model, which skips compiling the random init."""
    cfg = dict(vocab_size=VOCAB, num_layers=2, width=48, num_heads=4, num_kv_heads=0, mlp_dim=192, max_len=32,
               positions="learned", rope_theta=10000.0, norm="layernorm", norm_eps=1e-5, activation="gelu_tanh",
               use_bias=True, tie_embeddings=True, dropout=0.0, dtype="float32")
    cfg.update(overrides)
    model = abstract_gpt(ml_collections.ConfigDict(cfg))
    rng = np.random.default_rng(3)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            value = rng.normal(1.0 if path[-1] == "scale" else 0.0, 0.1 if var.ndim == 1 else 0.05, var.shape)
            var.set_value(jnp.asarray(value, jnp.float32))
    return model


LLAMA_LIKE = dict(positions="rope", norm="rmsnorm", norm_eps=1e-6, activation="swiglu", use_bias=False, width=64,
                  num_kv_heads=2, mlp_dim=128, tie_embeddings=False, rope_theta=500.0)


@pytest.mark.parametrize("overrides", [{}, {"activation": "gelu", "tie_embeddings": False}, LLAMA_LIKE],
                         ids=["gpt2", "gpt2-untied", "llama"])
def test_exported_gpt_matches_transformers_and_round_trips(overrides, tmp_path):
    ours = _perturbed_gpt(**overrides)
    save_decoder_dir(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(hf).__name__ == ("LlamaForCausalLM" if overrides.get("positions") == "rope" else "GPT2LMHeadModel")
    ids = np.random.default_rng(4).integers(0, VOCAB, SHAPE)
    np.testing.assert_allclose(_logits(hf, ids), np.asarray(ours(ids)[0]), atol=1e-4, rtol=1e-4)
    again, _ = load_decoder_dir(tmp_path)
    assert again.cfg == ours.cfg
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(again, nnx.Param)),
                 nnx.to_pure_dict(nnx.state(ours, nnx.Param)))


@pytest.mark.parametrize("overrides", [{}, LLAMA_LIKE], ids=["gpt2", "llama"])
def test_a_lora_adapted_gpt_exports_merged_and_matches_transformers(overrides, tmp_path):
    ours = with_moved_adapters(_perturbed_gpt(**overrides))
    ids = np.random.default_rng(5).integers(0, VOCAB, SHAPE)
    adapted = np.asarray(ours(ids)[0])
    save_decoder_dir(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    np.testing.assert_allclose(_logits(hf, ids), adapted, atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, lora.Adapter) for _, m in nnx.iter_graph(ours))  # the model keeps its adapters
    np.testing.assert_array_equal(np.asarray(ours(ids)[0]), adapted)


def test_imported_llama_round_trips_exactly(hf_llama, tmp_path):
    imported, _ = load_decoder_dir(hf_llama[1])
    again, _ = load_decoder_dir(save_decoder_dir(imported, tmp_path))
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(again, nnx.Param)),
                 nnx.to_pure_dict(nnx.state(imported, nnx.Param)))


# ----------------------------------------------------------------------------- tokenizer files
TEXTS = ["Hello world, hello tokenizer.", " leading space and 12345 digits", "tabs\tand\n\nnewlines  x",
         "unicode: café 日本 😀", "a<|endoftext|>b<|im_start|>user\nhi<|im_end|>\n", ""]


@pytest.fixture(scope="module")
def tiny_bpe():
    """A byte-level BPE trained on a few sentences, with ChatML specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Hello world, hello tokenizer.", "The quick brown fox jumps over the lazy dog.",
                             "Numbers 12345 and more words."] * 3, trainer=trainer)
    return DecoderTokenizer(tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            unk_token="<|endoftext|>", chat_template=CHATML)


def test_tokenizer_files_round_trip(tiny_bpe, tmp_path):
    tiny_bpe.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    ours = DecoderTokenizer.from_dir(tmp_path)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf(text)["input_ids"] == tiny_bpe.encode(text), text
        assert ours.decode(ids) == hf.decode(ids) == text
        assert ours.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True)
    assert ours.eos_ids == (hf.convert_tokens_to_ids("<|im_end|>"), hf.convert_tokens_to_ids("<|endoftext|>"))
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    for gen in (True, False):
        assert ours.apply_chat_template(messages, gen) == hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=gen)


def test_vocab_json_and_merges_txt_read_as_gpt2(tiny_bpe, tmp_path):
    tiny_bpe._tok.model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's two files
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    ours = DecoderTokenizer.from_dir(tmp_path)
    assert ours.eos_id == hf.eos_token_id and ours.chat_template is None
    for text in TEXTS:
        assert ours.encode(text) == hf(text)["input_ids"], text


def test_save_with_tokenizer_loads_in_transformers(tiny_bpe, tmp_path):
    ours = _perturbed_gpt(vocab_size=tiny_bpe.vocab_size, **LLAMA_LIKE)
    save_decoder_dir(ours, tmp_path, tokenizer=tiny_bpe)
    model, tokenizer = load_decoder_dir(tmp_path)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.encode(TEXTS[4]) == hf_tok(TEXTS[4])["input_ids"]
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == tiny_bpe.eos_id
    with pytest.raises(ValueError, match="more than the model's vocab_size"):
        save_decoder_dir(_perturbed_gpt(vocab_size=8, **LLAMA_LIKE), tmp_path / "small", tokenizer=tiny_bpe)


def test_sample_cli_reads_a_hugging_face_directory(tiny_bpe, tmp_path, capsys):
    """`python -m bigmodel_jax.sample --model HF_DIR`: chat template from the directory, the reply
    decoded without special tokens; --no-chat continues raw text."""
    from bigmodel_jax import sample

    save_decoder_dir(_perturbed_gpt(vocab_size=tiny_bpe.vocab_size, **LLAMA_LIKE), tmp_path, tokenizer=tiny_bpe)
    base = ["--model", str(tmp_path), "--prompt", "Hello", "--max-new-tokens", "6", "--greedy"]
    assert sample.main(base) == 0
    chat = capsys.readouterr().out
    assert sample.main(base + ["--no-chat", "--no-stream"]) == 0
    raw = capsys.readouterr().out
    assert raw.startswith("Hello") and "<|im_start|>" not in chat + raw
    assert sample.main(base + ["--beams", "2"]) == 0


# ----------------------------------------------------------------------------- errors
def test_missing_safetensors_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2_dir(tmp_path)


def test_missing_tokenizer_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json, or vocab.json"):
        DecoderTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        DecoderTokenizer.from_dir(tmp_path)


def _with_config(hf_llama, tmp_path, **changes):
    """A copy of the Llama directory with config.json fields changed."""
    src = hf_llama[1]
    cfg = {**json.loads((src / "config.json").read_text()), **changes}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").symlink_to(src / "model.safetensors")
    return tmp_path


@pytest.mark.parametrize("changes, match", [
    ({"model_type": "qwen2"}, "supported: 'gpt2', 'llama', 'mistral'"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters"),
    ({"attention_bias": True}, "attention_bias"),
    ({"head_dim": 32}, "head_dim"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"model_type": "mistral", "sliding_window": 16}, "sliding_window"),
])
def test_unsupported_configs_are_refused(hf_llama, tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        load_decoder_dir(_with_config(hf_llama, tmp_path, **changes))


def test_mistral_without_sliding_window_is_a_llama(hf_llama, tmp_path):
    ours, _ = load_decoder_dir(_with_config(hf_llama, tmp_path, model_type="mistral", sliding_window=None))
    ids = np.random.default_rng(5).integers(0, VOCAB, SHAPE)
    np.testing.assert_allclose(np.asarray(ours(ids)[0]), _logits(hf_llama[0], ids), atol=1e-4, rtol=1e-4)


def test_export_refuses_a_gpt_transformers_cannot_compute(tmp_path):
    model = _perturbed_gpt(positions="rope")  # GPT-2's shape but rotary positions
    with pytest.raises(ValueError, match="no transformers equivalent"):
        save_decoder_dir(model, tmp_path)


def test_a_gpt_run_starts_from_a_hugging_face_decoder_with_its_tokenizer(tiny_bpe, tfds_dir, tmp_path):
    """init_from a Llama directory: its architecture and tokenizer replace the config's, every weight
    comes from it (with LoRA the base is still bit-equal after training), and the workdir keeps the
    tokenizer, so the run resumes and samples with it."""
    from bigmodel_jax import train, transfer
    from bigmodel_jax.data.tokenizers import load_tokenizer
    from tests.conftest import tiny_config

    source = _perturbed_gpt(vocab_size=tiny_bpe.vocab_size, **LLAMA_LIKE)
    save_decoder_dir(source, tmp_path / "hf", tokenizer=tiny_bpe)
    cfg = tiny_config(tfds_dir, **{"init_from": str(tmp_path / "hf"), "model.lora.rank": 2, "train.num_steps": 2,
                                   "train.eval_every": 2, "train.checkpoint_every": 2})
    result = train.train(cfg, tmp_path / "run")
    assert np.isfinite(result.train_losses[2])
    text = "The quick brown fox, 12345.\n"
    assert load_tokenizer(tmp_path / "run").encode(text) == tiny_bpe.encode(text)
    model, saved, _ = transfer.load_trained(tmp_path / "run")
    assert (saved.model.positions, saved.model.num_kv_heads, saved.model.vocab_size) == ("rope", 2, tiny_bpe.vocab_size)
    _, base = lora.split(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    want = transfer.flat_params(nnx.to_pure_dict(nnx.state(source, nnx.Param)))
    assert base.keys() and all(np.array_equal(np.asarray(v), want["/".join(map(str, k))]) for k, v in base.items())


def test_init_from_a_decoder_is_refused_for_another_family(tmp_path):
    from bigmodel_jax import transfer
    from bigmodel_jax.errors import ConfigError

    save_decoder_dir(_perturbed_gpt(), tmp_path)
    with pytest.raises(ConfigError, match="pretrained decoder.*not a BERT"):
        transfer.source_model(str(tmp_path), "bert")
