"""Character-level and byte-level BPE tokenizers, trained on the train split and saved in the workdir.

Both expose the same small interface: encode(str) -> list[int], decode(ids) -> str, vocab_size,
save(dir). The saved file is what `sample` reloads, so a model is never paired with another vocab.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import tokenizers

from bigmodel_jax.data.prepare import save_whole

CHAR_FILE, BPE_FILE = "tokenizer_char.json", "tokenizer_bpe.json"


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids) -> str: ...

    def save(self, directory: str | Path) -> Path: ...


class CharTokenizer:
    """One id per character seen in training; id 0 is <unk> for characters never seen."""

    def __init__(self, chars: list[str]):
        self.chars = ["\ufffd"] + sorted(set(chars) - {"\ufffd"})
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, 0) for c in text]

    def encode_array(self, text: str) -> np.ndarray:
        """Fast path for whole corpora: a lookup table over code points."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.zeros(max(int(codes.max(initial=0)), max(map(ord, self.chars))) + 1, np.int32)
        for c, i in self.index.items():
            table[ord(c)] = i
        return table[codes]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] if 0 <= int(i) < self.vocab_size else "\ufffd" for i in ids)

    def save(self, directory: str | Path) -> Path:
        text = json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False)
        return save_whole(lambda tmp: tmp.write_text(text), Path(directory) / CHAR_FILE)


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from Hugging Face `tokenizers`; no <unk>: every byte encodes."""

    def __init__(self, tok: tokenizers.Tokenizer):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
        # Train on chunks (scenes): one huge string would be a single "sentence" to the trainer.
        tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_array(self, text: str) -> np.ndarray:
        chunks = text.split("\n")  # encode_batch runs in parallel; rejoin the newlines as tokens
        encs = self.tok.encode_batch([c + "\n" for c in chunks[:-1]] + chunks[-1:])
        return np.fromiter((i for e in encs for i in e.ids), dtype=np.int32)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def save(self, directory: str | Path) -> Path:
        return save_whole(lambda tmp: self.tok.save(str(tmp)), Path(directory) / BPE_FILE)


def train_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(text)
    return BPETokenizer.train(text, vocab_size)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    directory = Path(directory)
    if (directory / CHAR_FILE).exists():
        path = directory / CHAR_FILE
        try:
            return CharTokenizer(json.loads(path.read_text())["chars"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"corrupt tokenizer file {path}: {e}") from e
    if (directory / BPE_FILE).exists():
        path = directory / BPE_FILE
        try:
            return BPETokenizer(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as e:
            raise ValueError(f"corrupt tokenizer file {path}: {e}") from e
    raise FileNotFoundError(f"no tokenizer ({CHAR_FILE} or {BPE_FILE}) in {directory}")
