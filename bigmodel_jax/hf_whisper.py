"""Hugging Face `WhisperForConditionalGeneration` directories into our EncoderDecoder
(`source="audio"`), through weights.load.

Whisper's key projections have no bias and ours have one: a file without them (every Whisper
file) gives them zeros, which is exact (a constant added to all of one query's scores leaves its
softmax unchanged). The head is the decoder's token embedding, unscaled; transformers 5 does not
write the tied `proj_out.weight`, an untied file does. transformers keeps `scale_embedding` in the
config but never applies it, so neither do we.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import weights
from bigmodel_jax.errors import WeightsError
from bigmodel_jax.models.encdec import EncoderDecoder
from bigmodel_jax.weights import Group, converted, same, transposed

ENCODER_LAYER = "model.encoder.layers.{}.self_attn_layer_norm.weight"  # a block's first tensor
DECODER_LAYER = "model.decoder.layers.{}.self_attn_layer_norm.weight"


def whisper_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our model section for a transformers Whisper config.json."""
    if hf.get("model_type") != "whisper":
        raise ValueError(f"expected a Whisper config (model_type 'whisper'), got {hf.get('model_type')!r}")
    if hf.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"unsupported Whisper activation_function {hf['activation_function']!r}; supported: ['gelu']")
    width = hf.get("d_model", 384)
    heads, mlp = hf.get("decoder_attention_heads", 6), hf.get("decoder_ffn_dim", 1536)
    if (hf.get("encoder_attention_heads", 6), hf.get("encoder_ffn_dim", 1536)) != (heads, mlp):
        raise ValueError("encoder and decoder of different head counts or ffn dims are not supported (every "
                         "released Whisper has them equal)")
    return ml_collections.ConfigDict(dict(
        source="audio", positions="learned", norm="layernorm", use_bias=True, scale_scores=True, scale_head=False,
        vocab_size=hf.get("vocab_size", 51865), width=width, num_layers=hf.get("encoder_layers", 4),
        num_decoder_layers=hf.get("decoder_layers", 4), num_heads=heads, head_dim=width // heads, mlp_dim=mlp,
        activation="gelu", tie_embeddings=hf.get("tie_word_embeddings", True) is not False,
        num_mels=hf.get("num_mel_bins", 80), max_frames=hf.get("max_source_positions", 1500), conv_stride=2,
        max_len=hf.get("max_target_positions", 448), norm_eps=1e-5, dropout=hf.get("dropout", 0.0), dtype=dtype,
        remat="none"))


def _conv(dense, prefix: str) -> list:
    """torch Conv1d [C_out, C_in, 3] <-> our Dense kernel [3 * C_in, C_out] in (tap, channel) order."""
    c_in = dense.kernel.shape[0] // 3
    return [converted(dense.kernel, f"{prefix}.weight", lambda w: w.transpose(2, 1, 0).reshape(3 * c_in, -1),
                      lambda k: k.reshape(3, c_in, -1).transpose(2, 1, 0)),
            same(dense.bias, f"{prefix}.bias")]


def _linear(dense, name: str) -> list:
    return [transposed(dense.kernel, f"{name}.weight"), same(dense.bias, f"{name}.bias")]


def _norm(norm, name: str) -> list:
    return [same(norm.scale, f"{name}.weight"), same(norm.bias, f"{name}.bias")]


def _attention(attn, prefix: str) -> list:
    """The projections but the key's bias (whisper_groups gives those a group of their own)."""
    return [*_linear(attn.query, f"{prefix}.q_proj"), transposed(attn.key.kernel, f"{prefix}.k_proj.weight"),
            *_linear(attn.value, f"{prefix}.v_proj"), *_linear(attn.out, f"{prefix}.out_proj")]


def whisper_groups(model: EncoderDecoder) -> list[Group]:
    enc, dec = "model.encoder", "model.decoder"
    pairs = [*_conv(model.encoder.conv1, f"{enc}.conv1"), *_conv(model.encoder.conv2, f"{enc}.conv2"),
             same(model.encoder.pos_embed, f"{enc}.embed_positions.weight"),
             *_norm(model.encoder.final_norm, f"{enc}.layer_norm"),
             same(model.shared.embedding, f"{dec}.embed_tokens.weight"),
             same(model.decoder_positions, f"{dec}.embed_positions.weight"),
             *_norm(model.decoder_norm, f"{dec}.layer_norm")]
    key_biases = []
    for i, block in enumerate(model.encoder.blocks):
        p = f"{enc}.layers.{i}"
        pairs += [*_norm(block.attn_norm, f"{p}.self_attn_layer_norm"), *_attention(block.attn, f"{p}.self_attn"),
                  *_norm(block.mlp_norm, f"{p}.final_layer_norm"), *_linear(block.mlp.up, f"{p}.fc1"),
                  *_linear(block.mlp.down, f"{p}.fc2")]
        key_biases.append(same(block.attn.key.bias, f"{p}.self_attn.k_proj.bias"))
    for i, layer in enumerate(model.decoder):
        p = f"{dec}.layers.{i}"
        pairs += [*_norm(layer.attn_norm, f"{p}.self_attn_layer_norm"), *_attention(layer.attn, f"{p}.self_attn"),
                  *_norm(layer.cross_norm, f"{p}.encoder_attn_layer_norm"),
                  *_attention(layer.cross, f"{p}.encoder_attn"), *_norm(layer.mlp_norm, f"{p}.final_layer_norm"),
                  *_linear(layer.mlp.up, f"{p}.fc1"), *_linear(layer.mlp.down, f"{p}.fc2")]
        key_biases += [same(layer.attn.key.bias, f"{p}.self_attn.k_proj.bias"),
                       same(layer.cross.key.bias, f"{p}.encoder_attn.k_proj.bias")]
    if model.lm_head is not None:
        pairs.append(transposed(model.lm_head, "proj_out.weight"))
    return [Group("Whisper encoder-decoder", pairs),
            Group("key projection biases (Whisper has none)", key_biases, fresh=weights.zeros, level=logging.DEBUG)]


def load_whisper_tensors(model: EncoderDecoder, tensors: dict[str, np.ndarray], source: str = "the tensors"
                         ) -> EncoderDecoder:
    """Copies a WhisperForConditionalGeneration checkpoint's tensors into `model` (which may be abstract)."""
    c = model.cfg
    extra = DECODER_LAYER.format(c.num_decoder_layers)
    if extra in tensors:
        raise WeightsError(source, f"the file has more than the model's {c.num_decoder_layers} decoder layers "
                           f"({extra!r} is there)")
    ignored = ["proj_out.weight"] if model.lm_head is None else []  # a tied copy of the token embedding
    weights.load(model, tensors, whisper_groups(model), source=source, family="Whisper",
                 layers=(c.num_layers, ENCODER_LAYER), ignored=ignored, refuse_unused=True)
    return model


def abstract_whisper(cfg: ml_collections.ConfigDict) -> EncoderDecoder:
    return nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(0)))


def load_whisper_dir(directory: str | Path, dtype: str = "float32") -> EncoderDecoder:
    """Our EncoderDecoder of a WhisperForConditionalGeneration directory (config.json + model.safetensors).
    It reads log-mel features [B, T, num_mels], channels last (transformers' input_features transposed)."""
    cfg, tensors = weights.read_hf_model(directory, whisper_config, dtype)
    return load_whisper_tensors(abstract_whisper(cfg), tensors, str(Path(directory) / "model.safetensors"))
