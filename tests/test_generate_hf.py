"""Generation against transformers' `generate` on identical weights: batched greedy decoding of
prompts of different lengths (left padding, attention mask) and beam search with length penalty,
for a GPT-2 and a Llama (RoPE, GQA, SwiGLU, RMSNorm) with small random configs."""

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from bigmodel_jax.generate import Sampling, beam_search, generate
from bigmodel_jax.hf_decoders import load_decoder_dir

PROMPTS = [[5, 17, 42, 8, 3, 60, 61], [3, 9], [60, 61, 62, 63, 64]]


def _random(kind: str, path):
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=97, n_positions=64, n_embd=48, n_layer=2, n_head=4, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2)
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
        model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or "bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.eval().save_pretrained(path, safe_serialization=True)
    ours, _ = load_decoder_dir(path)
    return model, ours


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    return _random(request.param, tmp_path_factory.mktemp(request.param))


def _padded(prompts, pad=0):
    n = max(map(len, prompts))
    ids = torch.tensor([[pad] * (n - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, n


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_batched_greedy_50_tokens_match_transformers(pair, penalty):
    """A random GPT-2 soon repeats one token greedily; the repetition penalty (which also has to
    match) keeps its paths varied."""
    hf, ours = pair
    ids, mask, n = _padded(PROMPTS)
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=50, min_new_tokens=50, do_sample=False,
                          repetition_penalty=penalty, pad_token_id=0).numpy()[:, n:]
    out = generate(ours, PROMPTS, 50, sampling=Sampling(greedy=True, repetition_penalty=penalty))
    if penalty > 1:
        assert len({tuple(row) for row in out}) == 3 and all(len(set(row)) > 3 for row in out)
    np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", [(4, 1.0, False), (3, -0.5, True),
                                                                     (4, 2.0, "never")])
def test_beam_search_matches_transformers(pair, num_beams, length_penalty, early_stopping):
    hf, ours = pair
    free = generate(ours, PROMPTS, 8, sampling=Sampling(greedy=True))
    eos = [free[0][2], free[2][4]]  # tokens the model does produce, so beams finish at different lengths
    ids, mask, n = _padded(PROMPTS)
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, num_beams=num_beams,
                          length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos,
                          pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    out, scores = beam_search(ours, PROMPTS, 16, num_beams=num_beams, length_penalty=length_penalty,
                              early_stopping=early_stopping, stop_tokens=eos)
    for row, seq in zip(out, ref.sequences[:, n:].tolist()):
        assert row == seq[:len(row)]
        # transformers fills the rest with pad_token_id, or eos when the pad id is 0 (`0 or eos`)
        assert all(t == eos[0] for t in seq[len(row):]) and (len(row) == 16 or row[-1] in eos)
    np.testing.assert_allclose(scores, ref.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)
