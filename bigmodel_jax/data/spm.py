"""A sentencepiece vocabulary with T5's special ids (pad 0, eos 1, unk 2; no bos), trained on a
run's training split or read from a T5 directory: its `spiece.model`, or, in a directory that has
only the fast tokenizer's `tokenizer.json` (many re-uploads of T5 models do), that file read with
`tokenizers` (`load` picks whichever is there).

model_type "unigram" for text (one joint vocabulary for English and Japanese: character_coverage
0.9995 keeps rare kanji as pieces instead of <unk>); "word" for already-segmented symbols (G2P's
letters and phonemes, each one token).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

FILE = "spiece.model"
JSON_FILE = "tokenizer.json"
PAD, EOS, UNK = 0, 1, 2


def kept_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    """The ids a decode turns into text: up to the first eos, pads dropped, and ids past the last
    piece dropped (a model's embedding table is often padded beyond its tokenizer: T5's has 32,128
    rows for 32,100 pieces, and an untrained or random model may pick those rows)."""
    ids = [int(i) for i in ids]
    if EOS in ids:
        ids = ids[:ids.index(EOS)]
    return [i for i in ids if i != PAD and 0 <= i < vocab_size]


class SentencePieceTokenizer:
    pad_id, eos_id, unk_id = PAD, EOS, UNK

    def __init__(self, model_proto: bytes):
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if (self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id()) != (PAD, EOS, UNK):
            raise ValueError(f"a T5 vocabulary has pad 0, eos 1, unk 2; this one has pad {self.sp.pad_id()}, "
                             f"eos {self.sp.eos_id()}, unk {self.sp.unk_id()}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram",
              symbols: Sequence[str] = ()) -> "SentencePieceTokenizer":
        """symbols: pieces kept whole at ids 3, 4, ... (span corruption's sentinels)."""
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            pad_id=PAD, eos_id=EOS, unk_id=UNK, bos_id=-1, character_coverage=0.9995, hard_vocab_limit=False,
            input_sentence_size=2_000_000, shuffle_input_sentence=False, num_threads=2, minloglevel=2,
            user_defined_symbols=list(symbols))
        return cls(model.getvalue())

    @classmethod
    def from_dir(cls, directory: str | Path) -> "SentencePieceTokenizer":
        path = Path(directory) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (a T5 vocabulary is a sentencepiece {FILE} or a {JSON_FILE})")
        try:
            return cls(path.read_bytes())
        except RuntimeError as e:
            raise ValueError(f"{path}: not a sentencepiece model ({e})") from None

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FILE).write_bytes(self.proto)
        return directory

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str], eos: bool = True) -> list[list[int]]:
        """Token ids per text, each ended by eos (as T5 inputs and targets are)."""
        return [ids + [EOS] if eos else ids for ids in self.sp.encode(list(texts))]

    def piece_id(self, piece: str) -> int:
        """A piece's id; a KeyError when the vocabulary lacks it."""
        i = self.sp.piece_to_id(piece)
        if i == UNK and piece != self.sp.id_to_piece(UNK):
            raise KeyError(f"{piece!r} is not in the vocabulary")
        return i

    def decode(self, ids: Sequence[int]) -> str:
        """The text of kept_ids(ids): up to the first eos, without pads or ids past the last piece."""
        return self.sp.decode(kept_ids(ids, self.vocab_size))


class TokenizerJsonT5:
    """A T5 vocabulary from a fast tokenizer's tokenizer.json, with SentencePieceTokenizer's methods.
    Inputs get their eos here, not from the file's post-processor, as the sentencepiece path does."""
    pad_id, eos_id, unk_id = PAD, EOS, UNK

    def __init__(self, text: str, path: Path | str = JSON_FILE):
        from tokenizers import Tokenizer

        try:
            self.tk = Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(f"{path}: not a tokenizers file ({e})") from None
        self.tk.no_padding()
        self.tk.no_truncation()
        specials = tuple(self.tk.id_to_token(i) for i in (PAD, EOS, UNK))
        if specials != ("<pad>", "</s>", "<unk>"):
            raise ValueError(f"{path}: a T5 vocabulary has <pad> 0, </s> 1, <unk> 2; this one has {specials}")
        self.text = text

    @classmethod
    def from_dir(cls, directory: str | Path) -> "TokenizerJsonT5":
        path = Path(directory) / JSON_FILE
        return cls(path.read_text(encoding="utf-8"), path)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / JSON_FILE).write_text(self.text, encoding="utf-8")
        return directory

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: Sequence[str], eos: bool = True) -> list[list[int]]:
        rows = [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]
        return [ids + [EOS] if eos else ids for ids in rows]

    def piece_id(self, piece: str) -> int:
        i = self.tk.token_to_id(piece)
        if i is None:
            raise KeyError(f"{piece!r} is not in the vocabulary")
        return i

    def decode(self, ids: Sequence[int]) -> str:
        """As SentencePieceTokenizer.decode; sentinels stay in the text."""
        return self.tk.decode(kept_ids(ids, self.vocab_size), skip_special_tokens=False)


T5Vocabulary = SentencePieceTokenizer | TokenizerJsonT5


def present(directory: str | Path) -> bool:
    """Whether a folder holds a T5 vocabulary load can read."""
    return any((Path(directory) / name).is_file() for name in (FILE, JSON_FILE))


def load(directory: str | Path) -> T5Vocabulary:
    """spiece.model when the folder has it (the reference T5 tokenizer), else tokenizer.json."""
    directory = Path(directory)
    if not (directory / FILE).is_file() and (directory / JSON_FILE).is_file():
        return TokenizerJsonT5.from_dir(directory)
    return SentencePieceTokenizer.from_dir(directory)
