"""Hugging Face safetensors directories <-> our models. GPT-2 so far (BERT and ViT: later issues).

Only safetensors are read (never pickled `.bin` files). A directory is `config.json` +
`model.safetensors`, as `save_pretrained` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from bigmodel_jax.models.gpt import GPT


def gpt2_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our `model` config for a transformers GPT2Config dict."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"expected a GPT-2 config (model_type 'gpt2'), got {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        raise ValueError(f"unsupported GPT-2 activation {act!r}")
    d = hf["n_embd"]
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["n_layer"], width=d, num_heads=hf["n_head"], num_kv_heads=0,
        mlp_dim=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"], positions="learned", rope_theta=10000.0,
        norm="layernorm", activation="gelu" if act == "gelu" else "gelu_tanh", use_bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True), dropout=0.0, dtype=dtype))


def _set(var: nnx.Param, value: np.ndarray, name: str) -> None:
    if tuple(var[...].shape) != tuple(value.shape):
        raise ValueError(f"tensor {name}: shape {value.shape} does not fit the model's {var[...].shape}")
    var[...] = jnp.asarray(value, jnp.float32)


def load_gpt2_weights(model: GPT, tensors: dict[str, np.ndarray]) -> GPT:
    """Copies GPT-2 tensors (Conv1D weights are [in, out], as our kernels) into `model`."""
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    missing = [k for k in ("wte.weight", "wpe.weight", "ln_f.weight") if k not in t]
    if missing:
        raise ValueError(f"not a GPT-2 checkpoint: missing {missing}")
    _set(model.token_embed.embedding, t["wte.weight"], "wte.weight")
    _set(model.pos_embed, t["wpe.weight"], "wpe.weight")
    d = model.cfg.width
    for i, blk in enumerate(model.blocks):
        p = f"h.{i}."
        _set(blk.attn_norm.scale, t[p + "ln_1.weight"], p + "ln_1.weight")
        _set(blk.attn_norm.bias, t[p + "ln_1.bias"], p + "ln_1.bias")
        qkv_w, qkv_b = t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"]
        for j, dense in enumerate((blk.attn.query, blk.attn.key, blk.attn.value)):
            _set(dense.kernel, qkv_w[:, j * d:(j + 1) * d], p + "attn.c_attn.weight")
            _set(dense.bias, qkv_b[j * d:(j + 1) * d], p + "attn.c_attn.bias")
        _set(blk.attn.out.kernel, t[p + "attn.c_proj.weight"], p + "attn.c_proj.weight")
        _set(blk.attn.out.bias, t[p + "attn.c_proj.bias"], p + "attn.c_proj.bias")
        _set(blk.mlp_norm.scale, t[p + "ln_2.weight"], p + "ln_2.weight")
        _set(blk.mlp_norm.bias, t[p + "ln_2.bias"], p + "ln_2.bias")
        _set(blk.mlp.up.kernel, t[p + "mlp.c_fc.weight"], p + "mlp.c_fc.weight")
        _set(blk.mlp.up.bias, t[p + "mlp.c_fc.bias"], p + "mlp.c_fc.bias")
        _set(blk.mlp.down.kernel, t[p + "mlp.c_proj.weight"], p + "mlp.c_proj.weight")
        _set(blk.mlp.down.bias, t[p + "mlp.c_proj.bias"], p + "mlp.c_proj.bias")
    _set(model.final_norm.scale, t["ln_f.weight"], "ln_f.weight")
    _set(model.final_norm.bias, t["ln_f.bias"], "ln_f.bias")
    if model.lm_head is not None:
        _set(model.lm_head, t["lm_head.weight"].T, "lm_head.weight")
    return model


def load_gpt2_dir(directory: str | Path, dtype: str = "float32") -> GPT:
    """A GPT-2 model directory (config.json + model.safetensors) as our GPT."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing (a Hugging Face directory holds config.json "
                                    "and model.safetensors; .bin files are not read)")
    try:
        hf_cfg = json.loads((directory / "config.json").read_text())
    except ValueError as e:
        raise ValueError(f"corrupt {directory / 'config.json'}: {e}") from e
    try:
        tensors = load_file(str(directory / "model.safetensors"))
    except Exception as e:
        raise ValueError(f"corrupt {directory / 'model.safetensors'}: {e}") from e
    model = GPT(gpt2_config(hf_cfg, dtype), rngs=nnx.Rngs(0))
    return load_gpt2_weights(model, tensors)
