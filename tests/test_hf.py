"""Parity with Hugging Face transformers' GPT-2 (PyTorch CPU) on identical weights."""

import jax
import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bigmodel_jax.generate import generate
from bigmodel_jax.hf import load_gpt2_dir


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "ln" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def test_gpt2_logits_match_transformers(hf_gpt2):
    hf, path = hf_gpt2
    ours = load_gpt2_dir(path)
    ids = np.random.default_rng(0).integers(0, 97, (3, 20))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    logits, _ = ours(ids)
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4, rtol=1e-4)


def test_gpt2_greedy_generation_matches_transformers(hf_gpt2):
    hf, path = hf_gpt2
    ours = load_gpt2_dir(path)
    prompt = np.array([[5, 17, 42, 8]])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False, pad_token_id=0).numpy()
    out = generate(ours, prompt, 12, jax.random.PRNGKey(0), greedy=True)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_missing_safetensors_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2_dir(tmp_path)
