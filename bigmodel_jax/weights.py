"""The one routine that copies a weights file's tensors into our models, and our parameters back
out: every importer (BERT, ViT, GPT-2, Llama, GGUF) is a name table plus a call to `load`.

A family's *name table* is a list of `Group`s of `Pair`s. A Pair ties one tensor name in the file
to one or more of our parameters, with the conversion each way (torch Linear weights are
[out, in] and ours [in, out]; GPT-2's c_attn fuses q, k and v; llama.cpp permutes Q/K rows).
A Group is a part of the model that a file has whole or not at all: required (the encoder), or
optional with a fresh initialization when it is absent (BERT's pooler and MLM head, ViT's
classifier). `load` then does, the same way for every family:

1. every tensor of a required group is there, an optional group is there whole or not at all;
2. the file has no layer beyond the model's (the name of the first block past the last);
3. each tensor, converted, has the shape of its parameter, which then takes its value;
4. every parameter of the model was given a value (a parameter added to a model file without a
   name in its table is an error, not a silently random weight);
5. what the file holds and the table does not use is logged (or refused, where it would change
   the model's output).

Errors are `WeightsError`s naming the file, the tensor and, for a shape clash, the shape the
model expects against the one found, both in the file's layout. Only safetensors and GGUF files
are read; a pickled file is never opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from bigmodel_jax.errors import WeightsError

log = logging.getLogger(__name__)


class Pair(NamedTuple):
    """Our parameters <-> one tensor of the file; most pairs hold one parameter."""
    params: tuple[nnx.Param, ...]
    name: str
    to_ours: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    to_file: Callable[[tuple[np.ndarray, ...]], np.ndarray]


def same(var: nnx.Param, name: str) -> Pair:
    return Pair((var,), name, lambda x: (x,), lambda xs: xs[0])


def transposed(var: nnx.Param, name: str) -> Pair:
    """A torch Linear weight ([out, in]) for our kernel ([in, out])."""
    return Pair((var,), name, lambda x: (x.T,), lambda xs: xs[0].T)


def converted(var: nnx.Param, name: str, to_ours: Callable[[np.ndarray], np.ndarray],
              to_file: Callable[[np.ndarray], np.ndarray]) -> Pair:
    return Pair((var,), name, lambda x: (to_ours(x),), lambda xs: to_file(xs[0]))


def fused(params: tuple[nnx.Param, ...], name: str) -> Pair:
    """Parameters concatenated along the last axis in the file (GPT-2's c_attn: q, k, v)."""
    return Pair(params, name, lambda x: tuple(np.split(x, len(params), axis=-1)),
                lambda xs: np.concatenate(xs, axis=-1))


@dataclass
class Group:
    """Pairs a file has all of or none of. fresh=None: required. Otherwise, when the file has none
    of them, each parameter is set to fresh(tensor name, shape) and that is logged at `level`."""
    what: str
    pairs: list[Pair]
    fresh: Callable[[str, tuple[int, ...]], np.ndarray] | None = None
    level: int = logging.INFO


def _set(var: nnx.Param, value: np.ndarray) -> None:
    var.set_value(jnp.asarray(value, jnp.float32))


def _file_shape(pair: Pair) -> tuple[int, ...]:
    """The shape the model expects in the file's layout (only for error messages)."""
    return tuple(pair.to_file(tuple(np.empty(v.shape, np.float32) for v in pair.params)).shape)


def load(model: nnx.Module, tensors: Mapping[str, Any], groups: Sequence[Group], *, source: str, family: str,
         layers: tuple[int, str] | None = None, read: Callable[[Any], np.ndarray] = np.asarray,
         ignored: Sequence[str] = (), refuse_unused: bool = False) -> list[str]:
    """Copies `tensors` ({file name: tensor}, read to numpy by `read`) into `model`, which may be
    abstract (`nnx.eval_shape`), by the name table `groups`. layers: (the model's number of blocks,
    the name format of a block's first tensor): the file must not hold block number `layers[0]`
    (a deeper model would load silently truncated). ignored: names the file may hold
    that the model has no use for (buffers, tied copies). refuse_unused: any other unused tensor is
    an error (it would change what the model computes). Returns the optional groups that were
    absent and freshly initialized."""
    fresh, used = [], set()
    for group in groups:
        missing = [p.name for p in group.pairs if p.name not in tensors]
        if missing and (group.fresh is None or len(missing) < len(group.pairs)):
            kind = f"not a {family} checkpoint for this model" if group.fresh is None else f"incomplete {group.what}"
            raise WeightsError(source, f"{kind}: {len(missing)} tensors missing, e.g. {missing[:4]}")
        if missing:
            log.log(group.level, "%s has no %s; it is freshly initialized", source, group.what)
            for pair in group.pairs:
                for var in pair.params:
                    _set(var, group.fresh(pair.name, tuple(var.shape)))
            fresh.append(group.what)
            continue
        for pair in group.pairs:
            value = read(tensors[pair.name])
            parts = pair.to_ours(value)
            if any(tuple(v.shape) != tuple(x.shape) for v, x in zip(pair.params, parts, strict=True)):
                raise WeightsError(source, "does not fit the model", pair.name, _file_shape(pair), tuple(value.shape))
            for var, x in zip(pair.params, parts):
                _set(var, x)
            used.add(pair.name)
    if layers is not None and layers[1].format(layers[0]) in tensors:
        raise WeightsError(source, f"the file has more than the model's {layers[0]} layers "
                           f"({layers[1].format(layers[0])!r} is there)")
    set_ids = {id(v) for g in groups for p in g.pairs for v in p.params}
    unmapped = ["/".join(map(str, path)) for path, node in nnx.iter_graph(model)
                if isinstance(node, nnx.Param) and id(node) not in set_ids]
    if unmapped:  # a parameter added to a model file without a name in its family's table
        raise WeightsError(source, f"no tensor name of the {family} table is mapped to the model's parameters "
                           f"{unmapped[:8]}")
    unused = sorted(set(tensors) - used - set(ignored))
    if unused and refuse_unused:
        raise WeightsError(source, f"tensors this loader does not understand: {unused[:8]}")
    if unused:
        log.info("%s: tensors not used: %s", source, unused[:8])
    return fresh


def to_file(groups: Sequence[Group], prefix: str = "") -> dict[str, np.ndarray]:
    """Our parameters as the file's tensors (f32, contiguous), named by the table (+ prefix)."""
    return {prefix + p.name: np.ascontiguousarray(p.to_file(tuple(np.asarray(v[...], np.float32) for v in p.params)))
            for g in groups for p in g.pairs}


# ----------------------------------------------------------------------------- Hugging Face directories
def read_hf_dir(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, model.safetensors as numpy arrays) of a `save_pretrained`
    directory; errors name the file."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing (a Hugging Face directory holds config.json "
                                    "and model.safetensors; .bin files are not read)")
    try:
        hf_cfg = json.loads((directory / "config.json").read_text())
    except ValueError as e:
        raise WeightsError(str(directory / "config.json"), f"not valid JSON ({e})") from e
    try:
        tensors = load_file(str(directory / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types on truncated or foreign files
        raise WeightsError(str(directory / "model.safetensors"), f"not a readable safetensors file ({e})") from e
    return hf_cfg, tensors


def read_hf_model(directory: str | Path, to_config: Callable[[dict, str], Any], dtype: str = "float32"
                  ) -> tuple[Any, dict[str, np.ndarray]]:
    """(our model config, the tensors) of a `save_pretrained` directory: to_config(config.json, dtype)
    refuses another architecture with a ValueError, raised here as config.json's WeightsError."""
    directory = Path(directory)
    hf_cfg, tensors = read_hf_dir(directory)
    try:
        return to_config(hf_cfg, dtype), tensors
    except ValueError as e:
        raise WeightsError(str(directory / "config.json"), str(e)) from None


def write_hf_dir(directory: str | Path, tensors: dict[str, np.ndarray], hf_cfg: dict, tokenizer=None) -> Path:
    """Writes config.json + model.safetensors (+ the tokenizer's files) as `save_pretrained` does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def hf_activation(hf_cfg: dict, family: str, model_type: str, key: str, default: str,
                  table: dict[str, str]) -> str:
    """Checks a transformers config.json is of `model_type` and maps its activation field `key`
    through `table` to ours; a ValueError names what is wrong and what would be supported."""
    if hf_cfg.get("model_type") != model_type:
        raise ValueError(f"expected a {family} config (model_type {model_type!r}), got {hf_cfg.get('model_type')!r}")
    act = hf_cfg.get(key, default)
    if act not in table:
        raise ValueError(f"unsupported {family} {key} {act!r}; supported: {sorted(table)}")
    return table[act]


def hf_init(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """transformers' initialization of a part a checkpoint lacks: LayerNorm scales 1, biases 0,
    weights normal(0, 0.02) (seeded by the tensor's name, so a load is deterministic)."""
    if name.endswith(("LayerNorm.weight", "layernorm.weight")):
        return np.ones(shape, np.float32)
    if name.endswith("bias"):
        return np.zeros(shape, np.float32)
    seed = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).normal(0.0, 0.02, shape).astype(np.float32)


def zeros(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, np.float32)
