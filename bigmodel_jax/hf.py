"""Hugging Face safetensors directories <-> our encoders: BERT and ViT (import and export).

A directory is `config.json` + `model.safetensors`, as `save_pretrained` writes it; only
safetensors are read (never pickled `.bin` files). Each family has one name table (`bert_groups`,
`vit_groups`) that `weights.load` reads in and `weights.to_file` writes out, so import and export
cannot drift apart. Decoders (GPT-2, Llama) are in hf_decoders.py, GGUF files in gguf_import.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from flax import nnx

from bigmodel_jax import weights
from bigmodel_jax.models import lora
from bigmodel_jax.models.bert import Bert, BertMLM
from bigmodel_jax.models.vit import ViT
from bigmodel_jax.weights import Group, converted, same, transposed

if TYPE_CHECKING:
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- BERT
BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_MLM_PREFIX = "cls.predictions."


def bert_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our BERT `model` config for a transformers BertConfig dict."""
    activation = weights.hf_activation(hf, "BERT", "bert", "hidden_act", "gelu", BERT_ACTIVATIONS)
    positions = hf.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ValueError(f"unsupported BERT position_embedding_type {positions!r}; only 'absolute' is supported")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], width=hf["hidden_size"],
        num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), activation=activation,
        norm_eps=hf.get("layer_norm_eps", 1e-12), dropout=hf.get("hidden_dropout_prob", 0.1), dtype=dtype))


def _encoder_layer_pairs(blocks, attention: tuple[str, ...], norms: tuple[str, str]) -> list:
    """The `encoder.layer.{i}.` tensors of BertModel or ViTModel, every block alike: q, k, v, o and
    the MLP as torch Linears (weight [out, in] + bias) named `attention` then intermediate.dense /
    output.dense, and the two LayerNorms named `norms` (around attention, around the MLP)."""
    pairs = []
    dense_names = (*attention, "intermediate.dense", "output.dense")
    for i, blk in enumerate(blocks):
        prefix = f"encoder.layer.{i}."
        denses = (blk.attn.query, blk.attn.key, blk.attn.value, blk.attn.out, blk.mlp.up, blk.mlp.down)
        for dense, name in zip(denses, dense_names, strict=True):
            pairs += [transposed(dense.kernel, prefix + name + ".weight"), same(dense.bias, prefix + name + ".bias")]
        for norm, name in zip((blk.attn_norm, blk.mlp_norm), norms, strict=True):
            pairs += [same(norm.scale, prefix + name + ".weight"), same(norm.bias, prefix + name + ".bias")]
    return pairs


def bert_groups(model: Bert | BertMLM, pooler: bool = True) -> list[Group]:
    """BertModel's tensor names (BertForMaskedLM's drop their `bert.` prefix first: `bert_names`).
    torch Linear weights are [out, in]; our kernels are [in, out]. The pooler and the MLM head are
    optional: a checkpoint without them gets transformers' fresh init. The MLM decoder is the word
    embeddings (tied), so it has no name of its own."""
    bert = model.bert if isinstance(model, BertMLM) else model
    pairs = [same(bert.word_embed.embedding, "embeddings.word_embeddings.weight"),
             same(bert.pos_embed, "embeddings.position_embeddings.weight"),
             same(bert.type_embed, "embeddings.token_type_embeddings.weight"),
             same(bert.embed_norm.scale, "embeddings.LayerNorm.weight"),
             same(bert.embed_norm.bias, "embeddings.LayerNorm.bias")]
    pairs += _encoder_layer_pairs(bert.blocks, ("attention.self.query", "attention.self.key", "attention.self.value",
                                                "attention.output.dense"),
                                  ("attention.output.LayerNorm", "output.LayerNorm"))
    groups = [Group("BERT encoder", pairs)]
    if pooler:
        groups.append(Group("pooler", [transposed(bert.pooler.kernel, "pooler.dense.weight"),
                                       same(bert.pooler.bias, "pooler.dense.bias")], fresh=weights.hf_init))
    if isinstance(model, BertMLM):
        t = _MLM_PREFIX + "transform."
        groups.append(Group("MLM head (cls.predictions.*)", [
            transposed(model.mlm_dense.kernel, t + "dense.weight"), same(model.mlm_dense.bias, t + "dense.bias"),
            same(model.mlm_norm.scale, t + "LayerNorm.weight"), same(model.mlm_norm.bias, t + "LayerNorm.bias"),
            same(model.mlm_bias, _MLM_PREFIX + "bias")], fresh=weights.hf_init, level=logging.WARNING))
    return groups


def bert_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoint names as BertModel's: BertForMaskedLM & co's `bert.` prefix dropped, old TF-port
    LayerNorm `gamma`/`beta` read as weight/bias, the MLM bias taken from the decoder when alone."""
    t = {}
    for name, value in tensors.items():
        name = name.removeprefix("bert.")
        if name.endswith(("LayerNorm.gamma", "LayerNorm.beta")):
            name = name.rsplit(".", 1)[0] + (".weight" if name.endswith("gamma") else ".bias")
        t[name] = value
    if _MLM_PREFIX + "bias" not in t and _MLM_PREFIX + "decoder.bias" in t:
        t[_MLM_PREFIX + "bias"] = t[_MLM_PREFIX + "decoder.bias"]
    return t


def load_bert_tensors(model: Bert | BertMLM, tensors: dict[str, np.ndarray], source: str = "the tensors"
                      ) -> Bert | BertMLM:
    """Copies BERT tensors (BertModel names, or `bert.`-prefixed as in BertForMaskedLM) into a `Bert`
    or a `BertMLM`, which may be abstract (`nnx.eval_shape`): every parameter gets a value. The
    pooler and the MLM head are taken when the checkpoint has them, else freshly initialized
    (logged); every encoder tensor must be there."""
    t = bert_names(tensors)
    bert = model.bert if isinstance(model, BertMLM) else model
    weights.load(model, t, bert_groups(model), source=source, family="BERT",
                 layers=(len(bert.blocks), "encoder.layer.{}.attention.self.query.weight"),
                 ignored=("embeddings.position_ids", _MLM_PREFIX + "decoder.weight", _MLM_PREFIX + "decoder.bias"))
    decoder = t.get(_MLM_PREFIX + "decoder.weight")
    if (isinstance(model, BertMLM) and decoder is not None
            and not np.array_equal(decoder, t["embeddings.word_embeddings.weight"])):
        log.warning("%s: cls.predictions.decoder.weight differs from the word embeddings; ours are tied, it is "
                    "ignored", source)
    return model


def _abstract_bert(cfg: ml_collections.ConfigDict, mlm: bool) -> Bert | BertMLM:
    """The model without its random init (each init op compiles for its shape: seconds on this CPU)."""
    return nnx.eval_shape(lambda: BertMLM(cfg, rngs=nnx.Rngs(0)) if mlm else Bert(cfg, rngs=nnx.Rngs(0)))


def load_bert_dir(directory: str | Path, dtype: str = "float32", mlm: bool = False) -> Bert | BertMLM:
    """A BERT model directory (config.json + model.safetensors) as our Bert, or BertMLM with mlm=True."""
    hf_cfg, tensors = weights.read_hf_dir(directory)
    return load_bert_tensors(_abstract_bert(bert_config(hf_cfg, dtype), mlm), tensors,
                             str(Path(directory) / "model.safetensors"))


def bert_params_from_dir(directory: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """(our model config, params as a pure dict) of a BERT directory, for initializing a finetuning
    model by path: {"bert": {...}} plus the MLM head's mlm_dense / mlm_norm / mlm_bias when the
    checkpoint has it. Parts the checkpoint lacks (the pooler of a BertForMaskedLM) are left out."""
    hf_cfg, tensors = weights.read_hf_dir(directory)
    cfg = bert_config(hf_cfg)
    t = bert_names(tensors)
    mlm = all(name in t for name in (_MLM_PREFIX + "bias", _MLM_PREFIX + "transform.dense.weight"))
    model = load_bert_tensors(_abstract_bert(cfg, mlm), tensors, str(Path(directory) / "model.safetensors"))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if not mlm:
        params = {"bert": params}
    if "pooler.dense.weight" not in t:
        del params["bert"]["pooler"]
    return cfg, params


def save_bert_dir(model: Bert | BertMLM, directory: str | Path, tokenizer: WordPieceTokenizer | None = None) -> Path:
    """Writes a directory transformers loads: config.json, model.safetensors (BertModel names for a
    Bert; BertForMaskedLM's, `bert.`-prefixed with cls.predictions.* and the tied decoder, for a
    BertMLM) and, given a WordPieceTokenizer, its files. The pooler is always written. LoRA
    adapters are merged in (lora.merged)."""
    model = lora.merged(model)
    mlm = isinstance(model, BertMLM)
    bert = model.bert if mlm else model
    c = bert.cfg
    if tokenizer is not None and tokenizer.vocab_size != c.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model's vocab_size is {c.vocab_size}")
    groups = bert_groups(model)
    tensors = weights.to_file(groups[:2], prefix="bert." if mlm else "")  # encoder + pooler
    if mlm:
        tensors.update(weights.to_file(groups[2:]))
        # tied in torch; written out for loaders that do not tie
        tensors[_MLM_PREFIX + "decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].copy()
        tensors[_MLM_PREFIX + "decoder.bias"] = tensors[_MLM_PREFIX + "bias"].copy()
    hf_cfg = {
        "architectures": ["BertForMaskedLM" if mlm else "BertModel"], "model_type": "bert",
        "vocab_size": c.vocab_size, "hidden_size": c.width, "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads, "intermediate_size": c.mlp_dim,
        "hidden_act": "gelu" if c.activation == "gelu" else "gelu_new",
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout,
        "max_position_embeddings": c.max_len, "type_vocab_size": c.type_vocab_size, "initializer_range": 0.02,
        "layer_norm_eps": c.norm_eps, "pad_token_id": 0 if tokenizer is None else tokenizer.pad_id,
        "position_embedding_type": "absolute", "tie_word_embeddings": True, "dtype": "float32"}
    return weights.write_hf_dir(directory, tensors, hf_cfg, tokenizer)


# ----------------------------------------------------------------------------- ViT
def vit_config(hf: dict, dtype: str = "float32", num_classes: int | None = None) -> ml_collections.ConfigDict:
    """Our ViT `model` config for a transformers ViTConfig dict (num_classes: its id2label's size
    unless given)."""
    activation = weights.hf_activation(hf, "ViT", "vit", "hidden_act", "gelu", BERT_ACTIVATIONS)
    if not hf.get("qkv_bias", True):
        raise ValueError("ViT with qkv_bias=false is not supported (our attention projections have biases)")
    if num_classes is None:
        num_classes = len(hf.get("id2label") or {}) or 2  # transformers' default is 2 labels
    return ml_collections.ConfigDict(dict(
        image_size=hf.get("image_size", 224), patch_size=hf.get("patch_size", 16),
        num_channels=hf.get("num_channels", 3),
        num_classes=num_classes, num_layers=hf["num_hidden_layers"], width=hf["hidden_size"],
        num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], pool="cls",
        activation=activation, norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.0), drop_path=0.0, dtype=dtype))


def vit_groups(model: ViT, classifier: bool = True) -> list[Group]:
    """ViTModel's tensor names (ViTForImageClassification's drop their `vit.` prefix first) and,
    optional, its classifier (absent: our head starts at zero). torch Linear weights are [out, in]
    (ours [in, out]); the patch conv is [D, C, p, p], ours the [p*p*C, D] matrix of the flattened
    (row, column, channel) patch."""
    c = model.cfg
    p, ch, d = c.patch_size, c.num_channels, c.width
    pairs = [converted(model.patch_embed.kernel, "embeddings.patch_embeddings.projection.weight",
                       lambda w: w.transpose(2, 3, 1, 0).reshape(p * p * ch, d),
                       lambda k: k.reshape(p, p, ch, d).transpose(3, 2, 0, 1)),
             same(model.patch_embed.bias, "embeddings.patch_embeddings.projection.bias"),
             converted(model.pos_embed, "embeddings.position_embeddings", lambda x: x[0], lambda x: x[None]),
             same(model.final_norm.scale, "layernorm.weight"), same(model.final_norm.bias, "layernorm.bias")]
    if model.cls_token is not None:  # HF's ViT always has one; a pool="mean" ViT of ours does not
        pairs.append(converted(model.cls_token, "embeddings.cls_token", lambda x: x[0, 0], lambda x: x[None, None]))
    pairs += _encoder_layer_pairs(model.blocks, ("attention.attention.query", "attention.attention.key",
                                                 "attention.attention.value", "attention.output.dense"),
                                  ("layernorm_before", "layernorm_after"))
    groups = [Group("ViT encoder", pairs)]
    if classifier:
        groups.append(Group("classifier", [transposed(model.head.kernel, "classifier.weight"),
                                           same(model.head.bias, "classifier.bias")], fresh=weights.zeros))
    return groups


def load_vit_tensors(model: ViT, tensors: dict[str, np.ndarray], source: str = "the tensors") -> ViT:
    """Copies ViTModel tensors (or ViTForImageClassification's: `vit.`-prefixed plus `classifier.*`)
    into our ViT, which may be abstract (`nnx.eval_shape`). Without a classifier in the checkpoint
    the head starts at zero (logged); every encoder tensor must be there."""
    t = {name.removeprefix("vit."): value for name, value in tensors.items()}
    weights.load(model, t, vit_groups(model), source=source, family="ViT",
                 layers=(len(model.blocks), "encoder.layer.{}.attention.attention.query.weight"))
    return model  # ViTModel's pooler and a mask token, if present, are logged as unused


def _vit_from_dir(directory: str | Path, dtype: str) -> tuple[ml_collections.ConfigDict, ViT, bool]:
    """(our config, the loaded ViT, whether the checkpoint has a classifier)."""
    hf_cfg, tensors = weights.read_hf_dir(directory)
    cfg = vit_config(hf_cfg, dtype)
    model = load_vit_tensors(nnx.eval_shape(lambda: ViT(cfg, rngs=nnx.Rngs(0))), tensors,
                             str(Path(directory) / "model.safetensors"))
    return cfg, model, "classifier.weight" in tensors


def load_vit_dir(directory: str | Path, dtype: str = "float32") -> ViT:
    """A ViT directory (config.json + model.safetensors, ViTModel or ViTForImageClassification) as our ViT."""
    return _vit_from_dir(directory, dtype)[1]


def vit_params_from_dir(directory: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """(our model config, params as a pure dict) for `init_from`; the head is left out when the
    checkpoint has no classifier."""
    cfg, model, has_classifier = _vit_from_dir(directory, "float32")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if not has_classifier:
        del params["head"]
    return cfg, params


def save_vit_dir(model: ViT, directory: str | Path, classifier: bool = True,
                 class_names: list[str] | None = None) -> Path:
    """Writes a directory transformers loads: ViTForImageClassification (`vit.` prefix + classifier)
    or, with classifier=False, ViTModel (without the pooler our ViT does not have: load it with
    `add_pooling_layer=False`). LoRA adapters are merged in (lora.merged)."""
    model = lora.merged(model)
    c = model.cfg
    if c.pool != "cls":
        raise ValueError("transformers' ViT classifies from [CLS]; only a model.pool='cls' ViT can be exported")
    encoder, *head = vit_groups(model, classifier)
    tensors = {**weights.to_file([encoder], prefix="vit." if classifier else ""), **weights.to_file(head)}
    names = class_names or [str(i) for i in range(c.num_classes)]
    hf_cfg = {
        "architectures": ["ViTForImageClassification" if classifier else "ViTModel"], "model_type": "vit",
        "hidden_size": c.width, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "intermediate_size": c.mlp_dim, "hidden_act": "gelu" if c.activation == "gelu" else "gelu_new",
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout, "initializer_range": 0.02,
        "layer_norm_eps": c.norm_eps, "image_size": c.image_size, "patch_size": c.patch_size,
        "num_channels": c.num_channels, "qkv_bias": True, "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)}, "dtype": "float32"}
    return weights.write_hf_dir(directory, tensors, hf_cfg)


def params_from_dir(directory: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """(our model config, params) of any supported Hugging Face encoder directory, by its model_type
    (`init_from` an HF directory)."""
    path = Path(directory) / "config.json"
    try:
        kind = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if kind == "bert":
        return bert_params_from_dir(directory)
    if kind == "vit":
        return vit_params_from_dir(directory)
    if kind == "t5":
        from bigmodel_jax.hf_t5 import t5_params_from_dir  # hf_t5 reads through weights, like this module

        return t5_params_from_dir(directory)
    raise ValueError(f"{Path(directory) / 'config.json'}: model_type {kind!r} cannot initialize a model here "
                     "(supported: 'bert', 'vit', 't5')")
