"""Hugging Face safetensors directories <-> our encoders: BERT and ViT (import and export).

Only safetensors are read (never pickled `.bin` files). A directory is `config.json` +
`model.safetensors`, as `save_pretrained` writes it. BERT and ViT tensors are mapped by one table
per family (`_bert_pairs`, `_vit_pairs`) used in both directions, so import and export cannot
drift apart. Decoders (GPT-2, Llama) are in hf_decoders.py, GGUF files in gguf_import.py; both use
`_read_dir` and `_set` from here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from bigmodel_jax.models.bert import Bert, BertMLM
from bigmodel_jax.models.vit import ViT

if TYPE_CHECKING:
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

log = logging.getLogger(__name__)


def _set(var: nnx.Param, value: np.ndarray, name: str) -> None:
    """Replaces the parameter's value (concrete, or abstract from nnx.eval_shape) after a shape check."""
    if tuple(var.shape) != tuple(value.shape):
        raise ValueError(f"tensor {name}: shape {value.shape} does not fit the model's {var.shape}")
    var.set_value(jnp.asarray(value, jnp.float32))


def _read_dir(directory: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, model.safetensors as numpy arrays); errors name the file."""
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
    return hf_cfg, tensors


# ----------------------------------------------------------------------------- BERT
BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_MLM_PREFIX = "cls.predictions."


def bert_config(hf: dict, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our BERT `model` config for a transformers BertConfig dict."""
    if hf.get("model_type") != "bert":
        raise ValueError(f"expected a BERT config (model_type 'bert'), got {hf.get('model_type')!r}")
    act = hf.get("hidden_act", "gelu")
    if act not in BERT_ACTIVATIONS:
        raise ValueError(f"unsupported BERT hidden_act {act!r}; supported: {sorted(BERT_ACTIVATIONS)}")
    positions = hf.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ValueError(f"unsupported BERT position_embedding_type {positions!r}; only 'absolute' is supported")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    return ml_collections.ConfigDict(dict(
        vocab_size=hf["vocab_size"], num_layers=hf["num_hidden_layers"], width=hf["hidden_size"],
        num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), activation=BERT_ACTIVATIONS[act],
        norm_eps=hf.get("layer_norm_eps", 1e-12), dropout=hf.get("hidden_dropout_prob", 0.1), dtype=dtype))


def _bert_pairs(bert: Bert) -> list[tuple[nnx.Param, str, bool]]:
    """(our parameter, BertModel tensor name, stored transposed?) for the encoder without the pooler.
    torch Linear weights are [out, in]; our kernels are [in, out]."""
    pairs = [(bert.word_embed.embedding, "embeddings.word_embeddings.weight", False),
             (bert.pos_embed, "embeddings.position_embeddings.weight", False),
             (bert.type_embed, "embeddings.token_type_embeddings.weight", False),
             (bert.embed_norm.scale, "embeddings.LayerNorm.weight", False),
             (bert.embed_norm.bias, "embeddings.LayerNorm.bias", False)]
    for i, blk in enumerate(bert.blocks):
        p = f"encoder.layer.{i}."
        for dense, name in ((blk.attn.query, "attention.self.query"), (blk.attn.key, "attention.self.key"),
                            (blk.attn.value, "attention.self.value"), (blk.attn.out, "attention.output.dense"),
                            (blk.mlp.up, "intermediate.dense"), (blk.mlp.down, "output.dense")):
            pairs += [(dense.kernel, p + name + ".weight", True), (dense.bias, p + name + ".bias", False)]
        for norm, name in ((blk.attn_norm, "attention.output.LayerNorm"), (blk.mlp_norm, "output.LayerNorm")):
            pairs += [(norm.scale, p + name + ".weight", False), (norm.bias, p + name + ".bias", False)]
    return pairs


def _pooler_pairs(bert: Bert) -> list[tuple[nnx.Param, str, bool]]:
    return [(bert.pooler.kernel, "pooler.dense.weight", True), (bert.pooler.bias, "pooler.dense.bias", False)]


def _mlm_pairs(model: BertMLM) -> list[tuple[nnx.Param, str, bool]]:
    """The MLM head; its decoder weight is the word embeddings (tied), so it has no pair of its own."""
    p = _MLM_PREFIX + "transform."
    return [(model.mlm_dense.kernel, p + "dense.weight", True), (model.mlm_dense.bias, p + "dense.bias", False),
            (model.mlm_norm.scale, p + "LayerNorm.weight", False), (model.mlm_norm.bias, p + "LayerNorm.bias", False),
            (model.mlm_bias, _MLM_PREFIX + "bias", False)]


def _bert_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def _optional(t: dict, pairs: list, what: str, level: int = logging.INFO) -> list:
    """`pairs` if the checkpoint has all of them; if it has none, they are initialized as transformers
    does (weights normal(0, 0.02), LayerNorm scales 1, biases 0; logged) and [] is returned. A partial
    group is an error."""
    missing = [name for _, name, _ in pairs if name not in t]
    if missing and len(missing) < len(pairs):
        raise ValueError(f"the checkpoint's {what} is incomplete: missing {missing}")
    if not missing:
        return pairs
    log.log(level, "the checkpoint has no %s; it is freshly initialized", what)
    rng = np.random.default_rng(0)
    for var, name, _ in pairs:
        if name.endswith("LayerNorm.weight"):
            var.set_value(jnp.ones(var.shape, jnp.float32))
        elif name.endswith("bias"):
            var.set_value(jnp.zeros(var.shape, jnp.float32))
        else:
            var.set_value(jnp.asarray(rng.normal(0.0, 0.02, var.shape), jnp.float32))
    return []


def load_bert_tensors(model: Bert | BertMLM, tensors: dict[str, np.ndarray]) -> Bert | BertMLM:
    """Copies BERT tensors (BertModel names, or `bert.`-prefixed as in BertForMaskedLM) into a `Bert`
    or a `BertMLM`, which may be abstract (`nnx.eval_shape`): every parameter gets a value. The
    pooler and the MLM head are taken when the checkpoint has them, else freshly initialized
    (logged); every encoder tensor must be there."""
    t = _bert_names(tensors)
    mlm = isinstance(model, BertMLM)
    bert = model.bert if mlm else model
    pairs = _bert_pairs(bert)
    missing = [name for _, name, _ in pairs if name not in t]
    if missing:
        raise ValueError(f"not a BERT checkpoint for this model: {len(missing)} tensors missing, e.g. {missing[:4]}")
    if f"encoder.layer.{len(bert.blocks)}.attention.self.query.weight" in t:
        raise ValueError(f"the checkpoint has more than the model's {len(bert.blocks)} layers")
    pairs += _optional(t, _pooler_pairs(bert), "pooler")
    if mlm:
        pairs += _optional(t, _mlm_pairs(model), "MLM head (cls.predictions.*)", logging.WARNING)
    for var, name, transposed in pairs:
        _set(var, t[name].T if transposed else t[name], name)
    decoder = t.get(_MLM_PREFIX + "decoder.weight")
    if mlm and decoder is not None and not np.array_equal(decoder, t["embeddings.word_embeddings.weight"]):
        log.warning("cls.predictions.decoder.weight differs from the word embeddings; ours are tied, it is ignored")
    unset = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
             if isinstance(x, jax.ShapeDtypeStruct)]
    if unset:  # a parameter added to models/bert.py without a name in _bert_pairs
        raise ValueError(f"no checkpoint name is mapped to the model's parameters {unset}")
    ignored = {"embeddings.position_ids", _MLM_PREFIX + "decoder.weight", _MLM_PREFIX + "decoder.bias"}
    unused = sorted(set(t) - {name for _, name, _ in pairs} - ignored)
    if unused:
        log.info("checkpoint tensors not used: %s", unused)
    return model


def _abstract_bert(cfg: ml_collections.ConfigDict, mlm: bool) -> Bert | BertMLM:
    """The model without its random init (each init op compiles for its shape: seconds on this CPU)."""
    return nnx.eval_shape(lambda: BertMLM(cfg, rngs=nnx.Rngs(0)) if mlm else Bert(cfg, rngs=nnx.Rngs(0)))


def load_bert_dir(directory: str | Path, dtype: str = "float32", mlm: bool = False) -> Bert | BertMLM:
    """A BERT model directory (config.json + model.safetensors) as our Bert, or BertMLM with mlm=True."""
    hf_cfg, tensors = _read_dir(Path(directory))
    return load_bert_tensors(_abstract_bert(bert_config(hf_cfg, dtype), mlm), tensors)


def bert_params_from_dir(directory: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """(our model config, params as a pure dict) of a BERT directory, for initializing a finetuning
    model by path: {"bert": {...}} plus the MLM head's mlm_dense / mlm_norm / mlm_bias when the
    checkpoint has it. Parts the checkpoint lacks (the pooler of a BertForMaskedLM) are left out."""
    hf_cfg, tensors = _read_dir(Path(directory))
    cfg = bert_config(hf_cfg)
    t = _bert_names(tensors)
    mlm = all(name in t for name in (_MLM_PREFIX + "bias", _MLM_PREFIX + "transform.dense.weight"))
    model = load_bert_tensors(_abstract_bert(cfg, mlm), tensors)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if not mlm:
        params = {"bert": params}
    if "pooler.dense.weight" not in t:
        del params["bert"]["pooler"]
    return cfg, params


def save_bert_dir(model: Bert | BertMLM, directory: str | Path, tokenizer: WordPieceTokenizer | None = None) -> Path:
    """Writes a directory transformers loads: config.json, model.safetensors (BertModel names for a
    Bert; BertForMaskedLM's, `bert.`-prefixed with cls.predictions.* and the tied decoder, for a
    BertMLM) and, given a WordPieceTokenizer, its files. The pooler is always written."""
    mlm = isinstance(model, BertMLM)
    bert = model.bert if mlm else model
    c = bert.cfg
    if tokenizer is not None and tokenizer.vocab_size != c.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model's vocab_size is {c.vocab_size}")
    prefix = "bert." if mlm else ""
    pairs = [(var, prefix + name, tr) for var, name, tr in _bert_pairs(bert) + _pooler_pairs(bert)]
    if mlm:
        pairs += _mlm_pairs(model)
    tensors = {name: np.asarray(var[...], np.float32).T if tr else np.asarray(var[...], np.float32)
               for var, name, tr in pairs}
    if mlm:  # tied in torch; written out for loaders that do not tie
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
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


# ----------------------------------------------------------------------------- ViT
def vit_config(hf: dict, dtype: str = "float32", num_classes: int | None = None) -> ml_collections.ConfigDict:
    """Our ViT `model` config for a transformers ViTConfig dict (num_classes: its id2label's size
    unless given)."""
    if hf.get("model_type") != "vit":
        raise ValueError(f"expected a ViT config (model_type 'vit'), got {hf.get('model_type')!r}")
    act = hf.get("hidden_act", "gelu")
    if act not in BERT_ACTIVATIONS:
        raise ValueError(f"unsupported ViT hidden_act {act!r}; supported: {sorted(BERT_ACTIVATIONS)}")
    if not hf.get("qkv_bias", True):
        raise ValueError("ViT with qkv_bias=false is not supported (our attention projections have biases)")
    if num_classes is None:
        num_classes = len(hf.get("id2label") or {}) or 2  # transformers' default is 2 labels
    return ml_collections.ConfigDict(dict(
        image_size=hf.get("image_size", 224), patch_size=hf.get("patch_size", 16), num_channels=hf.get("num_channels", 3),
        num_classes=num_classes, num_layers=hf["num_hidden_layers"], width=hf["hidden_size"],
        num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], pool="cls",
        activation=BERT_ACTIVATIONS[act], norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.0), drop_path=0.0, dtype=dtype))


def _vit_pairs(model: ViT) -> list[tuple[nnx.Param, str, Callable, Callable]]:
    """(our parameter, ViTModel tensor name, HF -> ours, ours -> HF) for the encoder (no classifier).
    torch Linear weights are [out, in] (ours [in, out]); the patch conv is [D, C, p, p], ours the
    [p*p*C, D] matrix of the flattened (row, column, channel) patch."""
    c = model.cfg
    p, ch, d = c.patch_size, c.num_channels, c.width
    same, T = (lambda x: x), (lambda x: x.T)
    pairs = [(model.patch_embed.kernel, "embeddings.patch_embeddings.projection.weight",
              lambda w: w.transpose(2, 3, 1, 0).reshape(p * p * ch, d), lambda k: k.reshape(p, p, ch, d).transpose(3, 2, 0, 1)),
             (model.patch_embed.bias, "embeddings.patch_embeddings.projection.bias", same, same),
             (model.pos_embed, "embeddings.position_embeddings", lambda x: x[0], lambda x: x[None]),
             (model.cls_token, "embeddings.cls_token", lambda x: x[0, 0], lambda x: x[None, None]),
             (model.final_norm.scale, "layernorm.weight", same, same),
             (model.final_norm.bias, "layernorm.bias", same, same)]
    for i, blk in enumerate(model.blocks):
        q = f"encoder.layer.{i}."
        for dense, name in ((blk.attn.query, "attention.attention.query"), (blk.attn.key, "attention.attention.key"),
                            (blk.attn.value, "attention.attention.value"), (blk.attn.out, "attention.output.dense"),
                            (blk.mlp.up, "intermediate.dense"), (blk.mlp.down, "output.dense")):
            pairs += [(dense.kernel, q + name + ".weight", T, T), (dense.bias, q + name + ".bias", same, same)]
        for norm, name in ((blk.attn_norm, "layernorm_before"), (blk.mlp_norm, "layernorm_after")):
            pairs += [(norm.scale, q + name + ".weight", same, same), (norm.bias, q + name + ".bias", same, same)]
    return pairs


def _classifier_pairs(model: ViT) -> list:
    T, same = (lambda x: x.T), (lambda x: x)
    return [(model.head.kernel, "classifier.weight", T, T), (model.head.bias, "classifier.bias", same, same)]


def load_vit_tensors(model: ViT, tensors: dict[str, np.ndarray]) -> ViT:
    """Copies ViTModel tensors (or ViTForImageClassification's: `vit.`-prefixed plus `classifier.*`)
    into our ViT, which may be abstract (`nnx.eval_shape`). Without a classifier in the checkpoint
    the head starts at zero (logged); every encoder tensor must be there."""
    t = {name.removeprefix("vit."): value for name, value in tensors.items()}
    pairs = _vit_pairs(model)
    missing = [name for _, name, _, _ in pairs if name not in t]
    if missing:
        raise ValueError(f"not a ViT checkpoint for this model: {len(missing)} tensors missing, e.g. {missing[:4]}")
    if f"encoder.layer.{len(model.blocks)}.attention.attention.query.weight" in t:
        raise ValueError(f"the checkpoint has more than the model's {len(model.blocks)} layers")
    head = _classifier_pairs(model)
    if all(name in t for _, name, _, _ in head):
        pairs += head
    else:
        log.info("the checkpoint has no classifier; the head starts at zero")
        model.head.kernel.set_value(jnp.zeros(model.head.kernel.shape, jnp.float32))
        model.head.bias.set_value(jnp.zeros(model.head.bias.shape, jnp.float32))
    for var, name, to_ours, _ in pairs:
        _set(var, to_ours(t[name]), name)
    unused = sorted(set(t) - {name for _, name, _, _ in pairs})
    if unused:
        log.info("checkpoint tensors not used: %s", unused)  # ViTModel's pooler, a mask token
    return model


def _vit_from_dir(directory: str | Path, dtype: str) -> tuple[ml_collections.ConfigDict, ViT, bool]:
    """(our config, the loaded ViT, whether the checkpoint has a classifier)."""
    hf_cfg, tensors = _read_dir(Path(directory))
    cfg = vit_config(hf_cfg, dtype)
    model = load_vit_tensors(nnx.eval_shape(lambda: ViT(cfg, rngs=nnx.Rngs(0))), tensors)
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
    `add_pooling_layer=False`)."""
    c = model.cfg
    if c.pool != "cls":
        raise ValueError("transformers' ViT classifies from [CLS]; only a model.pool='cls' ViT can be exported")
    prefix = "vit." if classifier else ""
    tensors = {prefix + name: to_hf(np.asarray(var[...], np.float32)) for var, name, _, to_hf in _vit_pairs(model)}
    if classifier:
        tensors.update({name: to_hf(np.asarray(var[...], np.float32)) for var, name, _, to_hf in _classifier_pairs(model)})
    names = class_names or [str(i) for i in range(c.num_classes)]
    hf_cfg = {
        "architectures": ["ViTForImageClassification" if classifier else "ViTModel"], "model_type": "vit",
        "hidden_size": c.width, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "intermediate_size": c.mlp_dim, "hidden_act": "gelu" if c.activation == "gelu" else "gelu_new",
        "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.dropout, "initializer_range": 0.02,
        "layer_norm_eps": c.norm_eps, "image_size": c.image_size, "patch_size": c.patch_size,
        "num_channels": c.num_channels, "qkv_bias": True, "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)}, "dtype": "float32"}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return directory


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
    raise ValueError(f"{Path(directory) / 'config.json'}: model_type {kind!r} cannot initialize a model here "
                     "(supported: 'bert', 'vit')")
