"""Config files, `--config.a.b=v` overrides, and the checks that run before anything compiles.

Config files are Python files with `get_config(variant: str = "") -> ml_collections.ConfigDict`,
parsed by `ml_collections.config_flags` as in the Flax examples and big_vision:
`--config=path.py[:variant]` picks the file (and passes the variant to get_config), every
`--config.section.key=value` overrides one field, parsed as the type of the value it replaces, and
`--flagfile=FILE` reads more of these from a file. Each parse has its own absl FlagValues, so
`main(argv)` can be called again and again (tests). A field whose default is None cannot be
overridden from the command line by config_flags; give it a type with
`ml_collections.config_dict.placeholder(int)` instead (no config needs one today).

What config_flags reports as an exception (an unknown key, a wrong type, a missing file, a bad
variant) becomes a ConfigError naming the key, the value and what would be valid; `validate` then
checks values against each other, before anything compiles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from bigmodel_jax import sharding, tasks, transfer
from bigmodel_jax.data.records import POLICIES as BAD_RECORD_POLICIES
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.eval_metrics import EVAL_METRICS
from bigmodel_jax.models import lora
from bigmodel_jax.models.attention import ATTENTION_IMPLS, cudnn_missing
from bigmodel_jax.optim import NONFINITE_POLICIES

CHOICES = {
    "model.dtype": ("float32", "bfloat16"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.activation": ("gelu", "gelu_tanh", "swiglu", "relu", "geglu"),
    "data.spm_model_type": ("unigram", "bpe", "word", "char"),
    "model.positions": ("learned", "rope"),
    "data.tokenizer": ("char", "bpe"),
    "optim.name": ("adamw", "adam", "sgd"),
    "optim.schedule": ("cosine", "constant"),
    "model.remat": ("none", "full", "dots_saveable"),
    "model.attention_impl": ATTENTION_IMPLS,  # ("plain", "xla", "cudnn")
    "parallel.mode": ("jit", "pmap"),
    "train.loss": ("cross_entropy", "mse"),  # classification tasks only; the others' configs lack it
    "train.on_nonfinite": NONFINITE_POLICIES,
    "data.on_bad_record": BAD_RECORD_POLICIES,  # the families that read users' files
}
POSITIVE_INTS = ("model.num_layers", "model.width", "model.num_heads", "model.mlp_dim", "model.max_len",
                 "model.image_size", "model.patch_size", "model.head_dim", "model.num_decoder_layers",
                 "data.source_len", "data.target_len",
                 "data.seq_len", "train.num_steps", "train.batch_size", "train.eval_every", "train.eval_batches",
                 "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.grad_accum_steps",
                 "train.max_nonfinite_skips")

PROGRAM = "bigmodel_jax"  # argv[0] for absl, which skips it


class ParsedArgs(NamedTuple):
    config: ml_collections.ConfigDict
    rest: list[str]  # the arguments that are not --config / --config.* / --flagfile (e.g. --workdir)
    overrides: dict[str, Any]  # {"model.num_layers": 6, ...}: what the command line set


def parse_config_args(argv: Sequence[str]) -> ParsedArgs:
    """Pulls `--config FILE[:variant]`, every `--config.KEY=VALUE` and `--flagfile` out of argv."""
    fv = flags.FlagValues()
    argv = [PROGRAM, *argv]
    holder = config_flags.DEFINE_config_file("config", None, "a config file: path.py[:variant]", flag_values=fv,
                                             lock_config=True, sys_argv=argv)
    expanded = fv.read_flags_from_files(argv, force_gnu=False)  # --flagfile contents in place
    spec = _config_spec(expanded)
    if spec is None:
        raise ConfigError("--config", None, "pass --config configs/<experiment>.py")
    if not Path(spec.partition(":")[0]).expanduser().is_file():
        raise ConfigError("--config", spec, f"no config file at {Path(spec.partition(':')[0]).expanduser().absolute()}")
    try:
        rest = fv(argv, known_only=True)[1:]
    except (flags.Error, AttributeError, KeyError, ValueError) as e:
        raise _explain(e, spec, expanded) from None
    cfg = ml_collections.ConfigDict(holder.value.to_dict())  # unlocked: the trainer adds what the data decides
    return ParsedArgs(cfg, rest, dict(config_flags.get_override_values(fv["config"])))


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """spec is 'path/to/config.py' or 'path/to/config.py:variant'."""
    return parse_config_args([f"--config={spec}"]).config


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """A copy of cfg with overrides applied: ['train.num_steps=100', ...] (the text after
    '--config.'), parsed by config_flags exactly as on the command line."""
    fv = flags.FlagValues()
    argv = [PROGRAM, *(f"--config.{item}" for item in overrides)]
    base = ml_collections.ConfigDict(cfg.to_dict())
    try:  # config_flags defines a flag per override here, so an unknown key already fails
        holder = config_flags.DEFINE_config_dict("config", base, flag_values=fv, lock_config=True, sys_argv=argv)
        fv(argv)
    except (flags.Error, AttributeError, KeyError, ValueError) as e:
        raise _explain(e, None, argv, cfg) from None
    return ml_collections.ConfigDict(holder.value.to_dict())


def _config_spec(argv: Sequence[str]) -> str | None:
    """The value of --config in argv (the last one wins, as in absl)."""
    spec = None
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            spec = argv[i + 1]
        elif re.match(r"^--?config=", arg):
            spec = arg.split("=", 1)[1]
    return spec


def _explain(error: Exception, spec: str | None, argv: Sequence[str],
             base: ml_collections.ConfigDict | None = None) -> ConfigError:
    """The ConfigError for what config_flags raised: which override (or file) is wrong, and why."""
    text = str(error)
    if spec is not None and "Error whilst parsing config file" in text:  # get_config raised (a bad variant)
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return ConfigError("--config", spec, last.split(": ", 1)[-1])
    if base is None:
        base = load_config_file(spec)
    for arg in argv:
        m = re.match(r"^--?(?:no)?config\.([^=]+)(?:=(.*))?$", arg)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        node, leaf = _lookup(base, key)  # raises for an unknown section or key
        if f"--config.{key}" in text:  # absl names the flag whose value did not parse
            current = node[leaf]
            return ConfigError(key, value, f"expected a {type(current).__name__} (current value {current!r})")
    return ConfigError("--config", spec, f"{type(error).__name__}: {text}")


def _lookup(cfg: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    parts = key.split(".")
    node, path = cfg, []
    for part in parts[:-1]:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(key, None, f"unknown section '{'.'.join(path + [part])}'; valid: {valid}")
        node, path = node[part], path + [part]
    if parts[-1] not in node or isinstance(node[parts[-1]], ml_collections.ConfigDict):
        prefix = ".".join(path)
        valid = sorted(f"{prefix}.{k}" if prefix else k for k, v in node.items()
                       if not isinstance(v, ml_collections.ConfigDict))
        raise ConfigError(key, None, f"unknown key; valid keys here: {valid}")
    return node, parts[-1]


def _get(cfg: ml_collections.ConfigDict, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _has(cfg: ml_collections.ConfigDict, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def validate(cfg: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> None:
    """Every check that can fail without compiling anything (the task's own `validate` adds its
    family's). Raises ConfigError."""
    task = tasks.get(cfg.task)
    for key, choices in CHOICES.items():
        if _has(cfg, key) and _get(cfg, key) not in choices:
            raise ConfigError(key, _get(cfg, key), f"one of {list(choices)}")
    for key in POSITIVE_INTS:
        if not _has(cfg, key):  # a field of another family's config (GPT vs BERT)
            continue
        value = _get(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(key, value, "a positive integer")
    m = cfg.model
    if m.get("attention_impl") == "cudnn" and (why := cudnn_missing(m.dtype)):
        raise ConfigError("model.attention_impl", "cudnn", why)
    if "num_heads" in m and m.width % m.num_heads:
        raise ConfigError("model.num_heads", m.num_heads, f"must divide model.width={m.width}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError("model.dropout", m.dropout, "a rate in [0, 1)")
    if cfg.optim.lr <= 0:
        raise ConfigError("optim.lr", cfg.optim.lr, "a positive learning rate")
    if cfg.optim.warmup_steps < 0:
        raise ConfigError("optim.warmup_steps", cfg.optim.warmup_steps, "0 or more steps")
    for key in ("optim.l1", "optim.l2"):  # a negative penalty would reward large weights
        if _has(cfg, key) and _get(cfg, key) < 0:
            raise ConfigError(key, _get(cfg, key), "0 (off) or a positive penalty strength")
    bad_lora = lora.check(cfg)
    if bad_lora:
        raise ConfigError(*bad_lora)
    dp_clip, dp_noise = cfg.optim.get("dp_clip", 0.0), cfg.optim.get("dp_noise", 0.0)
    if dp_clip < 0 or dp_noise < 0 or (dp_noise > 0 and dp_clip == 0):
        raise ConfigError("optim.dp_noise" if dp_clip >= 0 else "optim.dp_clip", dp_noise if dp_clip >= 0 else dp_clip,
                          "DP-SGD needs optim.dp_clip > 0 (the per-example norm bound) and optim.dp_noise >= 0")
    if dp_clip > 0 and cfg.parallel.mode == "pmap":
        raise ConfigError("parallel.mode", "pmap", "DP-SGD (optim.dp_clip > 0) runs in mode 'jit'")
    if not 0 <= cfg.optim.get("dp_delta", 0.0) < 1:
        raise ConfigError("optim.dp_delta", cfg.optim.dp_delta, "in [0, 1) (0 = 1 / examples^1.1)")
    if cfg.train.eval_metric not in EVAL_METRICS:
        raise ConfigError("train.eval_metric", cfg.train.eval_metric,
                          f"one of {sorted(EVAL_METRICS)} that the task reports")
    if cfg.train.patience < 0:
        raise ConfigError("train.patience", cfg.train.patience, "0 (off) or a positive number of evaluations")

    if cfg.train.eval_metric not in task.METRICS:
        raise ConfigError("train.eval_metric", cfg.train.eval_metric,
                          f"one of {list(task.METRICS)} for task {cfg.task}")
    if cfg.init_from:
        transfer.source_model(cfg.init_from, task.FAMILY)  # a source that exists and is of the task's family
    task.validate(cfg)

    mesh = sharding.mesh_shape(cfg, num_devices)
    if cfg.parallel.mode == "pmap" and mesh["data"] != num_devices:
        raise ConfigError("parallel.mode", "pmap", f"pmap is data parallelism only: set parallel.fsdp=1 and "
                          f"parallel.tensor=1 (now {mesh['fsdp']} and {mesh['tensor']}), or use mode 'jit'")
    batch_shards = mesh["data"] * mesh["fsdp"]
    micro = cfg.train.batch_size // cfg.train.grad_accum_steps
    if cfg.train.batch_size % cfg.train.grad_accum_steps:
        raise ConfigError("train.grad_accum_steps", cfg.train.grad_accum_steps,
                          f"must divide train.batch_size={cfg.train.batch_size}")
    if micro % batch_shards:
        raise ConfigError("train.batch_size", cfg.train.batch_size,
                          f"the micro-batch ({micro} = batch_size / grad_accum_steps) must divide over the "
                          f"{batch_shards} data shards (parallel.data x parallel.fsdp = "
                          f"{mesh['data']} x {mesh['fsdp']})")
    if cfg.train.batch_size % num_processes:
        raise ConfigError("train.batch_size", cfg.train.batch_size, f"must divide over {num_processes} processes")
