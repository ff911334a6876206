"""The task registry: config `task` name -> the module that implements it (the protocol every
task module follows is in `tasks/protocol.py`)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import ml_collections
import jax
from flax import nnx

from bigmodel_jax import sharding
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models import lora
from bigmodel_jax.tasks import (bert4rec, causal_lm, classify, ctc, image_classify, mlm, qa, regress, sasrec, seq2seq,
                                tag)

TASKS: dict[str, ModuleType] = {"causal_lm": causal_lm, "mlm": mlm, "classify": classify, "regress": regress,
                                "tag": tag, "qa": qa, "image_classify": image_classify, "seq2seq": seq2seq,
                                "sasrec": sasrec, "bert4rec": bert4rec, "ctc": ctc}


def get(name: str) -> ModuleType:
    if name not in TASKS:
        raise ConfigError("task", name, f"one of {sorted(TASKS)}")
    return TASKS[name]


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
    """The task's model with LoRA adapters where model.lora asks for them (models/lora.py); the
    adapters draw their init after the base's, so the base is the same as without them."""
    return lora.add_adapters(get(cfg.task).build_model(cfg, rngs), cfg.model.get("lora"), rngs)


def abstract_model(cfg: ml_collections.ConfigDict) -> tuple[Any, dict, dict]:
    """(graphdef, params as a pure dict of ShapeDtypeStructs, their logical specs) of the config's
    model, without allocating it."""
    model = nnx.eval_shape(lambda: build_model(cfg, nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise TypeError(f"the model holds non-Param state the trainer would drop: {rest}")
    return graphdef, lora.store_frozen(cfg, nnx.to_pure_dict(params)), sharding.param_specs(model)
