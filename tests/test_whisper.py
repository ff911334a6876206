"""Whisper on our encoder-decoder against transformers' WhisperForConditionalGeneration on identical
(random) weights: the encoder's output, teacher-forced logits, and greedy decoding through
generate.py (the path T5 takes) token for token; a wrong tensor shows; other configs are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file
from transformers import WhisperConfig, WhisperForConditionalGeneration

from bigmodel_jax import hf_whisper, weights
from bigmodel_jax.errors import WeightsError
from bigmodel_jax.generate import Sampling, generate
from bigmodel_jax.models.encdec import EncoderDecoder, count_params

FRAMES, MELS = 100, 80  # 2 * max_source_positions: transformers' Whisper takes no other length
PROMPTS = [[1], [1, 7, 9]]  # the start token, and one followed by a task prefix (Whisper's <|en|><|transcribe|>)
NEW = 10


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A small random transformers Whisper, saved and loaded into ours. Weights are spread out
    (std 0.2, randomized norms and biases) so a mis-mapped tensor shows and greedy decoding does
    not repeat one token."""
    path = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=120, num_mel_bins=MELS, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                        max_source_positions=FRAMES // 2, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1, begin_suppress_tokens=None, init_std=0.2)
    hf = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.mul_(1.0 + 0.5 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(path)
    return hf, hf_whisper.load_whisper_dir(path), path


def _features() -> np.ndarray:
    """transformers' input_features [B, M, T]; ours are their transpose [B, T, M]."""
    return np.random.default_rng(0).normal(size=(2, MELS, FRAMES)).astype(np.float32)


def _ours_in() -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(_features().transpose(0, 2, 1)), jnp.ones((2, FRAMES), bool)


def _targets() -> np.ndarray:
    tgt = np.random.default_rng(1).integers(3, 120, (2, 12))
    tgt[:, 0] = 1
    return tgt


def test_encoder_and_logits_match_transformers(pair):
    hf, ours, _ = pair
    feats = torch.tensor(_features())
    with torch.no_grad():
        enc_ref = hf.model.encoder(feats).last_hidden_state.numpy()
        ref = hf(input_features=feats, decoder_input_ids=torch.tensor(_targets())).logits.numpy()
    enc, mask = ours.encode_masked(*_ours_in())
    assert enc.shape == enc_ref.shape and bool(mask.all())
    assert np.abs(np.asarray(enc) - enc_ref).max() < 1e-4
    got = np.asarray(ours(*_ours_in(), jnp.asarray(_targets())))
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(ref).max() > 1.0 and ref.std(-1).min() > 0.1  # the logits are far from flat


def _hf_greedy(hf, feats: np.ndarray, prompt: list[int], steps: int) -> tuple[list[int], float]:
    """transformers' argmax decoding, recomputing the whole prefix each step (no cache): the new
    tokens and the smallest gap between the best and second-best logit on the way."""
    ids, gaps = torch.tensor([prompt]), []
    with torch.no_grad():
        encoded = hf.model.encoder(torch.tensor(feats[None]))
        for _ in range(steps):
            logits = hf(encoder_outputs=encoded, decoder_input_ids=ids).logits[0, -1]
            top = torch.topk(logits, 2).values
            gaps.append(float(top[0] - top[1]))
            ids = torch.cat([ids, logits.argmax().view(1, 1)], 1)
    return ids[0, len(prompt):].tolist(), min(gaps)


def test_greedy_generation_matches_transformers(pair):
    """Left-padded prompts of two lengths, the audio encoded once into the cache, NEW tokens."""
    hf, ours, _ = pair
    refs = [_hf_greedy(hf, f, p, NEW) for f, p in zip(_features(), PROMPTS)]
    assert min(gap for _, gap in refs) > 1e-3  # no near-tie that float noise could flip
    got = generate(ours, PROMPTS, NEW, sampling=Sampling(greedy=True), source=_ours_in())
    assert got == [tokens for tokens, _ in refs]
    assert all(len(set(row)) > 3 for row in got)  # not one token repeated


def test_a_wrong_tensor_changes_the_logits(pair):
    """The comparison above can fail: one perturbed tensor moves the logits far beyond its tolerance."""
    _, ours, path = pair
    tensors = load_file(str(path / "model.safetensors"))
    name = "model.decoder.layers.1.encoder_attn.k_proj.weight"
    tensors[name] = tensors[name] + 0.1 * np.random.default_rng(2).normal(size=tensors[name].shape).astype(np.float32)
    cfg = hf_whisper.whisper_config(weights.read_hf_dir(path)[0])
    other = hf_whisper.load_whisper_tensors(hf_whisper.abstract_whisper(cfg), tensors)
    tgt = jnp.asarray(_targets())
    assert np.abs(np.asarray(other(*_ours_in(), tgt)) - np.asarray(ours(*_ours_in(), tgt))).max() > 1e-2


def test_count_params_matches_the_model(pair):
    _, ours, _ = pair
    assert count_params(ours.cfg) == sum(p.size for p in jax.tree.leaves(nnx.to_pure_dict(nnx.state(ours, nnx.Param))))
    assert EncoderDecoder(ours.cfg, rngs=nnx.Rngs(0)).decoder_bias is None


def test_other_configs_and_files_are_refused(pair, tmp_path):
    _, _, path = pair
    with pytest.raises(ValueError, match="expected a Whisper config \\(model_type 'whisper'\\), got 't5'"):
        hf_whisper.whisper_config({"model_type": "t5"})
    with pytest.raises(ValueError, match="activation_function 'relu'"):
        hf_whisper.whisper_config({"model_type": "whisper", "activation_function": "relu"})
    tensors = load_file(str(path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="expected a Whisper config"):
        hf_whisper.load_whisper_dir(tmp_path)
    cfg = hf_whisper.whisper_config(weights.read_hf_dir(path)[0])
    missing = {k: v for k, v in tensors.items() if "conv2" not in k}
    with pytest.raises(WeightsError, match="conv2"):
        hf_whisper.load_whisper_tensors(hf_whisper.abstract_whisper(cfg), missing)
    deeper = {**tensors, hf_whisper.DECODER_LAYER.format(2): tensors[hf_whisper.DECODER_LAYER.format(0)]}
    with pytest.raises(WeightsError, match="more than the model's 2 decoder layers"):
        hf_whisper.load_whisper_tensors(hf_whisper.abstract_whisper(cfg), deeper)
