"""Hugging Face `T5ForConditionalGeneration` directories in and out: T5 v1.0 (ReLU, tied head with
its input scaled by d_model**-0.5) and v1.1 (gated GELU, untied head), through weights.load.

A transformers 5 config writes `scale_decoder_outputs` beside `tie_word_embeddings`; older ones
(the Hub's t5-small, t5-v1_1-*) only the latter, False for v1.1. Both read the same here.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import weights
from bigmodel_jax.errors import WeightsError
from bigmodel_jax.models import lora
from bigmodel_jax.models.encdec import EncoderDecoder
from bigmodel_jax.weights import Group, same, transposed

ACTIVATIONS = {"relu": "relu", "gated-gelu": "geglu"}  # transformers' feed_forward_proj -> ours
FIRST_OF_BLOCK = "{}.block.{}.layer.0.layer_norm.weight"


def t5_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our model section for a transformers T5 config.json."""
    if hf.get("model_type") != "t5":
        raise ValueError(f"expected a T5 config (model_type 't5'), got {hf.get('model_type')!r}")
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in ACTIVATIONS:
        raise ValueError(f"unsupported T5 feed_forward_proj {proj!r}; supported: {sorted(ACTIVATIONS)}")
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    return ml_collections.ConfigDict(dict(
        vocab_size=hf.get("vocab_size", 32128), width=hf.get("d_model", 512), num_layers=hf.get("num_layers", 6),
        num_decoder_layers=hf.get("num_decoder_layers") or hf.get("num_layers", 6), num_heads=hf.get("num_heads", 8),
        head_dim=hf.get("d_kv", 64), mlp_dim=hf.get("d_ff", 2048), activation=ACTIVATIONS[proj],
        tie_embeddings=bool(scaled), rel_buckets=hf.get("relative_attention_num_buckets", 32),
        rel_max_distance=hf.get("relative_attention_max_distance", 128), norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        dropout=hf.get("dropout_rate", 0.1), dtype=dtype, max_len=hf.get("n_positions", 512), remat="none"))


def _attention_pairs(attn, prefix: str) -> list:
    return [transposed(getattr(attn, ours).kernel, f"{prefix}.{theirs}.weight")
            for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))]


def _mlp_pairs(mlp, prefix: str) -> list:
    if mlp.gate is not None:
        return [transposed(mlp.gate.kernel, f"{prefix}.wi_0.weight"),
                transposed(mlp.up.kernel, f"{prefix}.wi_1.weight"), transposed(mlp.down.kernel, f"{prefix}.wo.weight")]
    return [transposed(mlp.up.kernel, f"{prefix}.wi.weight"), transposed(mlp.down.kernel, f"{prefix}.wo.weight")]


def t5_groups(model: EncoderDecoder) -> list[Group]:
    pairs = [same(model.shared.embedding, "shared.weight"),
             same(model.encoder_bias.table, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
             same(model.decoder_bias.table, "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
             same(model.encoder_norm.scale, "encoder.final_layer_norm.weight"),
             same(model.decoder_norm.scale, "decoder.final_layer_norm.weight")]
    for i, layer in enumerate(model.encoder):
        p = f"encoder.block.{i}.layer"
        pairs += [same(layer.attn_norm.scale, f"{p}.0.layer_norm.weight"),
                  *_attention_pairs(layer.attn, f"{p}.0.SelfAttention"),
                  same(layer.mlp_norm.scale, f"{p}.1.layer_norm.weight"),
                  *_mlp_pairs(layer.mlp, f"{p}.1.DenseReluDense")]
    for i, layer in enumerate(model.decoder):
        p = f"decoder.block.{i}.layer"
        pairs += [same(layer.attn_norm.scale, f"{p}.0.layer_norm.weight"),
                  *_attention_pairs(layer.attn, f"{p}.0.SelfAttention"),
                  same(layer.cross_norm.scale, f"{p}.1.layer_norm.weight"),
                  *_attention_pairs(layer.cross, f"{p}.1.EncDecAttention"),
                  same(layer.mlp_norm.scale, f"{p}.2.layer_norm.weight"),
                  *_mlp_pairs(layer.mlp, f"{p}.2.DenseReluDense")]
    if model.lm_head is not None:
        pairs.append(transposed(model.lm_head, "lm_head.weight"))
    return [Group("T5 encoder-decoder", pairs)]


def load_t5_tensors(model: EncoderDecoder, tensors: dict[str, np.ndarray], source: str = "the tensors"
                    ) -> EncoderDecoder:
    """Copies a T5ForConditionalGeneration checkpoint's tensors into `model` (which may be
    abstract). An untied model whose file has no lm_head.weight (transformers 5 ties it even
    when unscaled) takes the embedding as its head."""
    c = model.cfg
    extra = FIRST_OF_BLOCK.format("decoder", c.num_decoder_layers)
    if extra in tensors:
        raise WeightsError(source, f"the file has more than the model's {c.num_decoder_layers} decoder layers "
                           f"({extra!r} is there)")
    if model.lm_head is not None and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        tensors = {**tensors, "lm_head.weight": tensors["shared.weight"]}
    ignored = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
    if model.lm_head is None:
        ignored.append("lm_head.weight")  # a tied copy of shared.weight
    weights.load(model, tensors, t5_groups(model), source=source, family="T5",
                 layers=(c.num_layers, FIRST_OF_BLOCK.format("encoder", "{}")), ignored=ignored, refuse_unused=True)
    return model


def abstract_t5(cfg: ml_collections.ConfigDict) -> EncoderDecoder:
    return nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(0)))


def load_t5_dir(directory: str | Path, dtype: str = "float32") -> EncoderDecoder:
    """Our EncoderDecoder of a T5ForConditionalGeneration directory (config.json + model.safetensors)."""
    cfg, tensors = weights.read_hf_model(directory, t5_config, dtype)
    return load_t5_tensors(abstract_t5(cfg), tensors, str(Path(directory) / "model.safetensors"))


def t5_params_from_dir(directory: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """(our model config, params as a pure dict) of a T5 directory: `init_from` starts a seq2seq
    run from it."""
    return t5_config(weights.read_hf_dir(directory)[0]), nnx.to_pure_dict(nnx.state(load_t5_dir(directory),
                                                                                    nnx.Param))


def t5_hf_config(c) -> dict:
    """config.json of a transformers T5ForConditionalGeneration computing what our model does."""
    return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": c.vocab_size,
            "d_model": c.width, "d_kv": c.head_dim, "d_ff": c.mlp_dim, "num_layers": c.num_layers,
            "num_decoder_layers": c.num_decoder_layers, "num_heads": c.num_heads,
            "relative_attention_num_buckets": c.rel_buckets, "relative_attention_max_distance": c.rel_max_distance,
            "dropout_rate": c.dropout, "layer_norm_epsilon": c.norm_eps,
            "feed_forward_proj": {v: k for k, v in ACTIVATIONS.items()}[c.activation],
            "tie_word_embeddings": bool(c.tie_embeddings), "is_encoder_decoder": True, "pad_token_id": 0,
            "eos_token_id": 1, "decoder_start_token_id": 0, "dtype": "float32", "use_cache": True}


def save_t5_dir(model: EncoderDecoder, directory: str | Path, tokenizer=None) -> Path:
    """Writes a directory transformers' T5ForConditionalGeneration loads (f32 safetensors; LoRA
    adapters merged in)."""
    model = lora.merged(model)
    if model.cfg.activation not in ACTIVATIONS.values():
        raise ValueError(f"activation {model.cfg.activation!r} has no T5 feed_forward_proj; T5 has "
                         f"{sorted(ACTIVATIONS.values())}")
    return weights.write_hf_dir(directory, weights.to_file(t5_groups(model)), t5_hf_config(model.cfg), tokenizer)
