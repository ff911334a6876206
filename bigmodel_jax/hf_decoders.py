"""Hugging Face decoder directories <-> our GPT: GPT-2 and Llama (import and export).

A directory is `config.json` + `model.safetensors` (+ tokenizer files), as `save_pretrained`
writes it; only safetensors are read. Each family's tensors are mapped by one table (`_gpt2_pairs`,
`_llama_pairs`) used in both directions, so import and export cannot drift apart. Our kernels are
[in, out]: torch Linear weights ([out, in]) are transposed, GPT-2's Conv1D weights ([in, out]) are
not, and its fused c_attn is split into our query/key/value. HF Llama safetensors use our rotary
layout (halves, not interleaved pairs), so Q/K need no permutation (GGUF files do: gguf_import.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import ml_collections
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from bigmodel_jax.data.bpe_files import DecoderTokenizer
from bigmodel_jax.hf import _read_dir, _set
from bigmodel_jax.models.gpt import GPT

log = logging.getLogger(__name__)

GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
SUPPORTED = "'gpt2', 'llama', 'mistral' (without sliding_window)"


class Pair(NamedTuple):
    """Our parameters <-> one checkpoint tensor. Most pairs hold one parameter; GPT-2's fused c_attn
    holds three (query, key, value)."""
    params: tuple[nnx.Param, ...]
    name: str
    to_ours: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    to_hf: Callable[[tuple[np.ndarray, ...]], np.ndarray]


def _one(var: nnx.Param, name: str, transposed: bool = False) -> Pair:
    if transposed:
        return Pair((var,), name, lambda x: (x.T,), lambda xs: xs[0].T)
    return Pair((var,), name, lambda x: (x,), lambda xs: xs[0])


def _fused(params: tuple[nnx.Param, ...], name: str) -> Pair:
    """Parameters concatenated along the last axis in the checkpoint (GPT-2's c_attn: q, k, v)."""
    return Pair(params, name, lambda x: tuple(np.split(x, len(params), axis=-1)),
                lambda xs: np.concatenate(xs, axis=-1))


# ----------------------------------------------------------------------------- GPT-2
def gpt2_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our GPT `model` config for a transformers GPT2Config dict."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"expected a GPT-2 config (model_type 'gpt2'), got {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in GPT2_ACTIVATIONS:
        raise ValueError(f"unsupported GPT-2 activation_function {act!r}; supported: {sorted(GPT2_ACTIVATIONS)}")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx=true or scale_attn_weights=false is not "
                         "supported (our attention scales by 1/sqrt(head_dim))")
    d = hf["n_embd"]
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], width=d, num_heads=hf["n_head"], num_kv_heads=0,
        mlp_dim=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"], positions="learned", rope_theta=10000.0,
        norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation=GPT2_ACTIVATIONS[act],
        use_bias=True, tie_embeddings=hf.get("tie_word_embeddings", True), dropout=0.0, dtype=dtype))


def _gpt2_pairs(model: GPT) -> list[Pair]:
    """GPT2Model's tensors (no `transformer.` prefix) and, untied, the LM head."""
    pairs = [_one(model.token_embed.embedding, "wte.weight"), _one(model.pos_embed, "wpe.weight"),
             _one(model.final_norm.scale, "ln_f.weight"), _one(model.final_norm.bias, "ln_f.bias")]
    for i, blk in enumerate(model.blocks):
        p, a = f"h.{i}.", blk.attn
        pairs += [_fused((a.query.kernel, a.key.kernel, a.value.kernel), p + "attn.c_attn.weight"),
                  _fused((a.query.bias, a.key.bias, a.value.bias), p + "attn.c_attn.bias")]
        for dense, name in ((a.out, "attn.c_proj"), (blk.mlp.up, "mlp.c_fc"), (blk.mlp.down, "mlp.c_proj")):
            pairs += [_one(dense.kernel, p + name + ".weight"), _one(dense.bias, p + name + ".bias")]
        for norm, name in ((blk.attn_norm, "ln_1"), (blk.mlp_norm, "ln_2")):
            pairs += [_one(norm.scale, p + name + ".weight"), _one(norm.bias, p + name + ".bias")]
    if model.lm_head is not None:
        pairs.append(_one(model.lm_head, "lm_head.weight", transposed=True))
    return pairs


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


def _llama_pairs(model: GPT) -> list[Pair]:
    """LlamaForCausalLM's tensors; torch Linear weights are [out, in], transposed to our kernels."""
    pairs = [_one(model.token_embed.embedding, "model.embed_tokens.weight"),
             _one(model.final_norm.scale, "model.norm.weight")]
    for i, blk in enumerate(model.blocks):
        p, a, m = f"model.layers.{i}.", blk.attn, blk.mlp
        for dense, name in ((a.query, "self_attn.q_proj"), (a.key, "self_attn.k_proj"), (a.value, "self_attn.v_proj"),
                            (a.out, "self_attn.o_proj"), (m.gate, "mlp.gate_proj"), (m.up, "mlp.up_proj"),
                            (m.down, "mlp.down_proj")):
            pairs.append(_one(dense.kernel, p + name + ".weight", transposed=True))
        pairs += [_one(blk.attn_norm.scale, p + "input_layernorm.weight"),
                  _one(blk.mlp_norm.scale, p + "post_attention_layernorm.weight")]
    if model.lm_head is not None:
        pairs.append(_one(model.lm_head, "lm_head.weight", transposed=True))
    return pairs


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
# model_type -> (our config from HF's, the tensor table, the first block's first tensor, HF config from ours)
FAMILIES = {"gpt2": (gpt2_config, _gpt2_pairs, "h.{}.ln_1.weight", _gpt2_hf_config),
            "llama": (llama_config, _llama_pairs, "model.layers.{}.input_layernorm.weight", _llama_hf_config)}
FAMILIES["mistral"] = FAMILIES["llama"]


def _family(hf_cfg: dict, where: Path) -> tuple:
    kind = hf_cfg.get("model_type")
    if kind not in FAMILIES:
        why = " (its q/k/v have biases, o_proj and the MLP none)" if kind == "qwen2" else ""
        raise ValueError(f"{where}: model_type {kind!r} is not a decoder we load{why}; supported: {SUPPORTED}")
    return FAMILIES[kind]


def load_decoder_tensors(model: GPT, tensors: dict[str, np.ndarray], kind: str) -> GPT:
    """Copies a `kind` ('gpt2', 'llama') checkpoint's tensors into `model`, which may be abstract
    (`nnx.eval_shape`): every parameter must get a value, and no layer may be left over."""
    _, pairs_of, first_of_block, _ = FAMILIES[kind]
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()} if kind == "gpt2" else tensors
    pairs = pairs_of(model)
    missing = [p.name for p in pairs if p.name not in t]
    if missing:
        raise ValueError(f"not a {kind} checkpoint for this model: {len(missing)} tensors missing, e.g. {missing[:4]}")
    if first_of_block.format(len(model.blocks)) in t:
        raise ValueError(f"the checkpoint has more than the model's {len(model.blocks)} layers")
    for p in pairs:
        for var, value in zip(p.params, p.to_ours(t[p.name]), strict=True):
            _set(var, value, p.name)
    unset = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
             if isinstance(x, jax.ShapeDtypeStruct)]
    if unset:  # a parameter added to models/gpt.py without a name in the table
        raise ValueError(f"no checkpoint name is mapped to the model's parameters {unset}")
    unused = sorted(set(t) - {p.name for p in pairs})
    if unused:  # old GPT-2 files carry attn.bias mask buffers; a tied lm_head.weight may be written too
        log.info("checkpoint tensors not used: %s", unused[:8])
    return model


def abstract_gpt(cfg: ml_collections.ConfigDict) -> GPT:
    """Our GPT without its random init (each init op compiles for its shape: seconds on this CPU)."""
    return nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))


def load_decoder_dir(directory: str | Path, dtype: str = "float32") -> tuple[GPT, DecoderTokenizer | None]:
    """(our GPT, its tokenizer or None) of a GPT-2 / Llama directory (config.json + model.safetensors,
    plus tokenizer.json or vocab.json + merges.txt when it has a tokenizer)."""
    directory = Path(directory)
    hf_cfg, tensors = _read_dir(directory)
    make_config = _family(hf_cfg, directory / "config.json")[0]
    model = load_decoder_tensors(abstract_gpt(make_config(hf_cfg, dtype)), tensors,
                                 "gpt2" if hf_cfg["model_type"] == "gpt2" else "llama")
    has_tokenizer = any((directory / name).is_file() for name in ("tokenizer.json", "vocab.json"))
    return model, DecoderTokenizer.from_dir(directory) if has_tokenizer else None


def load_gpt2_weights(model: GPT, tensors: dict[str, np.ndarray]) -> GPT:
    """GPT-2 tensors (`transformer.`-prefixed or not) into `model`."""
    return load_decoder_tensors(model, tensors, "gpt2")


def load_gpt2_dir(directory: str | Path, dtype: str = "float32") -> GPT:
    """A GPT-2 model directory as our GPT (without its tokenizer)."""
    hf_cfg, tensors = _read_dir(Path(directory))
    return load_decoder_tensors(abstract_gpt(gpt2_config(hf_cfg, dtype)), tensors, "gpt2")


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
    model.safetensors (f32) and, given a tokenizer, its tokenizer.json + tokenizer_config.json."""
    c = model.cfg
    kind = decoder_kind(c)
    if tokenizer is not None and tokenizer.vocab_size > c.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
                         f"vocab_size {c.vocab_size}")
    _, pairs_of, _, hf_config_of = FAMILIES[kind]
    prefix = "transformer." if kind == "gpt2" else ""
    tensors = {}
    for p in pairs_of(model):
        name = p.name if p.name == "lm_head.weight" else prefix + p.name
        tensors[name] = np.ascontiguousarray(p.to_hf(tuple(np.asarray(v[...], np.float32) for v in p.params)))
    hf_cfg = {**hf_config_of(c), "dtype": "float32", "use_cache": True}
    if tokenizer is not None:
        hf_cfg.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
