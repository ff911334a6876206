"""Hugging Face decoder directories <-> our GPT: GPT-2 and Llama (import and export).

A directory is `config.json` + `model.safetensors` (+ tokenizer files), as `save_pretrained`
writes it; only safetensors are read. Each family's tensors are mapped by one name table
(`gpt2_groups`, `llama_groups`) that `weights.load` reads in and `weights.to_file` writes out, so
import and export cannot drift apart. Our kernels are
[in, out]: torch Linear weights ([out, in]) are transposed, GPT-2's Conv1D weights ([in, out]) are
not, and its fused c_attn is split into our query/key/value. HF Llama safetensors use our rotary
layout (halves, not interleaved pairs), so Q/K need no permutation (GGUF files do: gguf_import.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import weights
from bigmodel_jax.data.bpe_files import DecoderTokenizer
from bigmodel_jax.models import lora
from bigmodel_jax.models.gpt import GPT
from bigmodel_jax.weights import Group, fused, same, transposed

log = logging.getLogger(__name__)

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
SUPPORTED = "'gpt2', 'llama', 'mistral' (without sliding_window)"


# ----------------------------------------------------------------------------- GPT-2
def gpt2_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our GPT `model` config for a transformers GPT2Config dict."""
    activation = weights.hf_activation(hf, "GPT-2", "gpt2", "activation_function", "gelu_new", GPT2_ACTIVATIONS)
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx=true or scale_attn_weights=false is not "
                         "supported (our attention scales by 1/sqrt(head_dim))")
    d = hf["n_embd"]
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], width=d, num_heads=hf["n_head"], num_kv_heads=0,
        mlp_dim=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"], positions="learned", rope_theta=10000.0,
        norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation=activation,
        use_bias=True, tie_embeddings=hf.get("tie_word_embeddings", True), dropout=0.0, dtype=dtype))


def gpt2_groups(model: GPT) -> list[Group]:
    """GPT2Model's tensors (no `transformer.` prefix) and, untied, the LM head. GPT-2's Conv1D
    weights are already [in, out]."""
    pairs = [same(model.token_embed.embedding, "wte.weight"), same(model.pos_embed, "wpe.weight"),
             same(model.final_norm.scale, "ln_f.weight"), same(model.final_norm.bias, "ln_f.bias")]
    for i, blk in enumerate(model.blocks):
        p, a = f"h.{i}.", blk.attn
        pairs += [fused((a.query.kernel, a.key.kernel, a.value.kernel), p + "attn.c_attn.weight"),
                  fused((a.query.bias, a.key.bias, a.value.bias), p + "attn.c_attn.bias")]
        for dense, name in ((a.out, "attn.c_proj"), (blk.mlp.up, "mlp.c_fc"), (blk.mlp.down, "mlp.c_proj")):
            pairs += [same(dense.kernel, p + name + ".weight"), same(dense.bias, p + name + ".bias")]
        for norm, name in ((blk.attn_norm, "ln_1"), (blk.mlp_norm, "ln_2")):
            pairs += [same(norm.scale, p + name + ".weight"), same(norm.bias, p + name + ".bias")]
    if model.lm_head is not None:
        pairs.append(transposed(model.lm_head, "lm_head.weight"))
    return [Group("GPT-2", pairs)]


def _gpt2_hf_config(c) -> dict:
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.max_len, "n_embd": c.width, "n_layer": c.num_layers, "n_head": c.num_heads,
            "n_inner": c.mlp_dim, "activation_function": "gelu" if c.activation == "gelu" else "gelu_new",
            "layer_norm_epsilon": c.get("norm_eps", 1e-5), "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
            "attn_pdrop": c.dropout, "tie_word_embeddings": c.tie_embeddings}


# ----------------------------------------------------------------------------- Llama
def llama_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our GPT `model` config for a transformers LlamaConfig dict (or a MistralConfig without a
    sliding window: the same model). Refuses what our GPT cannot represent, naming the field."""
    kind = hf.get("model_type")
    if kind not in ("llama", "mistral"):
        raise ValueError(f"expected a Llama config (model_type 'llama' or 'mistral'), got {kind!r}")
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    rope = hf.get("rope_parameters") or {}  # transformers 5; 4.x wrote rope_theta and rope_scaling
    scaling = hf.get("rope_scaling") or {}
    scaling_type = scaling.get("rope_type", scaling.get("type"))
    problems = {
        "rope_scaling": (bool(scaling) and scaling_type != "default",
                         f"{scaling}: our RoPE has no scaling; only rope_scaling=null is supported"),
        "rope_parameters": (rope.get("rope_type", "default") != "default",
                            f"rope_type {rope.get('rope_type')!r}: only 'default' RoPE (no scaling) is supported"),
        "attention_bias": (bool(hf.get("attention_bias")), "our Llama projections have no biases; it must be false"),
        "mlp_bias": (bool(hf.get("mlp_bias")), "our Llama MLP has no biases; it must be false"),
        "head_dim": (hf.get("head_dim") not in (None, d // heads),
                     f"{hf.get('head_dim')}: our head_dim is hidden_size / num_attention_heads = {d // heads}"),
        "hidden_act": (hf.get("hidden_act", "silu") != "silu", f"{hf.get('hidden_act')!r}: only 'silu' (SwiGLU)"),
        "sliding_window": (kind == "mistral" and hf.get("sliding_window") is not None,
                           "our attention is full; a Mistral needs sliding_window=null"),
    }
    for field, (bad, why) in problems.items():
        if bad:
            raise ValueError(f"unsupported {kind} config field {field}: {why}")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], width=d, num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads, mlp_dim=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048), positions="rope", rope_theta=float(theta),
        norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), activation="swiglu", use_bias=False,
        tie_embeddings=hf.get("tie_word_embeddings", False), dropout=0.0, dtype=dtype))


def llama_groups(model: GPT) -> list[Group]:
    """LlamaForCausalLM's tensors; torch Linear weights are [out, in], transposed to our kernels."""
    pairs = [same(model.token_embed.embedding, "model.embed_tokens.weight"),
             same(model.final_norm.scale, "model.norm.weight")]
    for i, blk in enumerate(model.blocks):
        p, a, m = f"model.layers.{i}.", blk.attn, blk.mlp
        for dense, name in ((a.query, "self_attn.q_proj"), (a.key, "self_attn.k_proj"), (a.value, "self_attn.v_proj"),
                            (a.out, "self_attn.o_proj"), (m.gate, "mlp.gate_proj"), (m.up, "mlp.up_proj"),
                            (m.down, "mlp.down_proj")):
            pairs.append(transposed(dense.kernel, p + name + ".weight"))
        pairs += [same(blk.attn_norm.scale, p + "input_layernorm.weight"),
                  same(blk.mlp_norm.scale, p + "post_attention_layernorm.weight")]
    if model.lm_head is not None:
        pairs.append(transposed(model.lm_head, "lm_head.weight"))
    return [Group("Llama", pairs)]


def _llama_hf_config(c) -> dict:
    theta = float(c.rope_theta)
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
            "hidden_size": c.width, "intermediate_size": c.mlp_dim, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads or c.num_heads,
            "head_dim": c.width // c.num_heads, "hidden_act": "silu", "max_position_embeddings": c.max_len,
            "rms_norm_eps": c.get("norm_eps", 1e-5), "rope_theta": theta,  # 4.x reads this, 5.x the next
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "attention_bias": False, "mlp_bias": False, "attention_dropout": c.dropout,
            "tie_word_embeddings": c.tie_embeddings}


# ----------------------------------------------------------------------------- both ways
# model_type -> (our config from HF's, the name table, a block's first tensor, HF config from ours)
FAMILIES = {"gpt2": (gpt2_config, gpt2_groups, "h.{}.ln_1.weight", _gpt2_hf_config),
            "llama": (llama_config, llama_groups, "model.layers.{}.input_layernorm.weight", _llama_hf_config)}
FAMILIES["mistral"] = FAMILIES["llama"]


def _family(hf_cfg: dict, where: Path) -> tuple:
    kind = hf_cfg.get("model_type")
    if kind not in FAMILIES:
        why = " (its q/k/v have biases, o_proj and the MLP none)" if kind == "qwen2" else ""
        raise ValueError(f"{where}: model_type {kind!r} is not a decoder we load{why}; supported: {SUPPORTED}")
    return FAMILIES[kind]


def load_decoder_tensors(model: GPT, tensors: dict[str, np.ndarray], kind: str, source: str = "the tensors") -> GPT:
    """Copies a `kind` ('gpt2', 'llama') checkpoint's tensors into `model`, which may be abstract
    (`nnx.eval_shape`): every parameter must get a value, and no layer may be left over. Old GPT-2
    files carry attn.bias mask buffers and a tied lm_head.weight may be written too: logged as unused."""
    _, groups_of, first_of_block, _ = FAMILIES[kind]
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()} if kind == "gpt2" else tensors
    weights.load(model, t, groups_of(model), source=source, family=kind, layers=(len(model.blocks), first_of_block))
    return model


def abstract_gpt(cfg: ml_collections.ConfigDict) -> GPT:
    """Our GPT without its random init (each init op compiles for its shape: seconds on this CPU)."""
    return nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))


def load_decoder_dir(directory: str | Path, dtype: str = "float32") -> tuple[GPT, DecoderTokenizer | None]:
    """(our GPT, its tokenizer or None) of a GPT-2 / Llama directory (config.json + model.safetensors,
    plus tokenizer.json or vocab.json + merges.txt when it has a tokenizer)."""
    directory = Path(directory)
    hf_cfg, tensors = weights.read_hf_dir(directory)
    make_config = _family(hf_cfg, directory / "config.json")[0]
    model = load_decoder_tensors(abstract_gpt(make_config(hf_cfg, dtype)), tensors,
                                 "gpt2" if hf_cfg["model_type"] == "gpt2" else "llama",
                                 str(directory / "model.safetensors"))
    return model, dir_tokenizer(directory)


def dir_tokenizer(directory: str | Path) -> DecoderTokenizer | None:
    """A Hugging Face directory's tokenizer (tokenizer.json, or vocab.json + merges.txt); None without one."""
    has_tokenizer = any((Path(directory) / name).is_file() for name in ("tokenizer.json", "vocab.json"))
    return DecoderTokenizer.from_dir(directory) if has_tokenizer else None


def load_gpt2_weights(model: GPT, tensors: dict[str, np.ndarray]) -> GPT:
    """GPT-2 tensors (`transformer.`-prefixed or not) into `model`."""
    return load_decoder_tensors(model, tensors, "gpt2")


def load_gpt2_dir(directory: str | Path, dtype: str = "float32") -> GPT:
    """A GPT-2 model directory as our GPT (without its tokenizer)."""
    hf_cfg, tensors = weights.read_hf_dir(directory)
    return load_decoder_tensors(abstract_gpt(gpt2_config(hf_cfg, dtype)), tensors, "gpt2",
                                str(Path(directory) / "model.safetensors"))


def decoder_kind(cfg) -> str:
    """'gpt2' or 'llama': the transformers family that computes exactly what this GPT config does."""
    gpt2 = (cfg.positions == "learned" and cfg.norm == "layernorm" and cfg.use_bias
            and cfg.activation in ("gelu", "gelu_tanh") and cfg.num_kv_heads in (0, cfg.num_heads))
    llama = cfg.positions == "rope" and cfg.norm == "rmsnorm" and cfg.activation == "swiglu" and not cfg.use_bias
    if gpt2 or llama:
        return "gpt2" if gpt2 else "llama"
    raise ValueError(
        "this GPT has no transformers equivalent: export needs either GPT-2's shape (positions='learned', "
        "norm='layernorm', use_bias=True, activation 'gelu' or 'gelu_tanh', no GQA) or Llama's (positions='rope', "
        f"norm='rmsnorm', activation='swiglu', use_bias=False); got positions={cfg.positions!r}, norm={cfg.norm!r}, "
        f"activation={cfg.activation!r}, use_bias={cfg.use_bias}, num_kv_heads={cfg.num_kv_heads}")


def save_decoder_dir(model: GPT, directory: str | Path, tokenizer: DecoderTokenizer | None = None) -> Path:
    """Writes a directory `transformers.AutoModelForCausalLM` loads: GPT2LMHeadModel for a GPT-2
    shaped GPT, LlamaForCausalLM for a Llama shaped one (see `decoder_kind`); config.json,
    model.safetensors (f32) and, given a tokenizer, its tokenizer.json + tokenizer_config.json.
    LoRA adapters are merged in (lora.merged)."""
    model = lora.merged(model)
    c = model.cfg
    kind = decoder_kind(c)
    if tokenizer is not None and tokenizer.vocab_size > c.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
                         f"vocab_size {c.vocab_size}")
    _, groups_of, _, hf_config_of = FAMILIES[kind]
    prefix = "transformer." if kind == "gpt2" else ""
    tensors = {name if name == "lm_head.weight" else prefix + name: value
               for name, value in weights.to_file(groups_of(model)).items()}
    hf_cfg = {**hf_config_of(c), "dtype": "float32", "use_cache": True}
    if tokenizer is not None:
        hf_cfg.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    return weights.write_hf_dir(directory, tensors, hf_cfg, tokenizer)
