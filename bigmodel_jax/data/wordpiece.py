"""BERT WordPiece tokenizer (HF `tokenizers` underneath) for the encoder tasks: MLM, classification, QA, tagging.

Loads a Hugging Face model directory (tokenizer.json, or vocab.txt + tokenizer_config.json) or trains a new
vocab, and saves in the layout `transformers.AutoTokenizer` reads, so our ids and HF's are the same ids.
`encode` returns padded int32 numpy batches plus the offsets / sequence ids QA needs to map answers back.
Padding is done here in numpy, and truncation is switched on only for the duration of one call, so the
underlying `tokenizers.Tokenizer` is always saved (and used by `encode_plain`) without either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # train() gives them ids 0..4 in this order
PADDINGS = ("max_length", "longest")
TRUNCATIONS = ("longest_first", "only_second")


def _bert_pipeline(model: models.WordPiece, lowercase: bool, strip_accents: bool | None = None,
                   chinese_chars: bool = True) -> Tokenizer:
    """The pipeline BERT (and transformers' BertTokenizer) uses; strip_accents=None follows lowercase."""
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese_chars,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-download or re-save the tokenizer") from e


class WordPieceTokenizer:
    """[CLS] A [SEP] (B [SEP]) encoding with a BERT WordPiece vocab; see the module docstring."""

    def __init__(self, tok: Tokenizer, lowercase: bool, model_max_length: int = 512, source: str = "tokenizer"):
        tok.no_padding()  # a tokenizer.json may carry its own padding/truncation; ours are per call
        tok.no_truncation()
        missing = [name for name in SPECIALS if tok.token_to_id(name) is None]
        if missing:
            raise ValueError(f"{source}: vocabulary lacks {missing}; a BERT WordPiece vocab needs all of {SPECIALS}")
        tok.add_special_tokens(list(SPECIALS))  # never split them in text, and let decode skip them
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (tok.token_to_id(s) for s in SPECIALS)
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
        if tok.decoder is None:
            tok.decoder = decoders.WordPiece()
        self._tok = tok
        self.lowercase = lowercase
        self.model_max_length = model_max_length
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)
        self.special_ids: frozenset[int] = frozenset(tok.token_to_id(s) for s in SPECIALS)

    @classmethod
    def from_dir(cls, directory: str | Path) -> "WordPieceTokenizer":
        """A HF model dir: tokenizer.json if present, else vocab.txt (+ tokenizer_config.json's do_lower_case)."""
        directory = Path(directory)
        config_path = directory / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        max_len = int(config.get("model_max_length", 512))
        if max_len > 1_000_000:  # transformers writes int(1e30) for "no limit"
            max_len = 512
        json_path, vocab_path = directory / "tokenizer.json", directory / "vocab.txt"
        if json_path.is_file():
            try:
                tok = Tokenizer.from_file(str(json_path))
            except Exception as e:  # tokenizers raises a bare Exception for bad JSON / unknown types
                raise ValueError(f"{json_path} could not be loaded by tokenizers ({e}); is it corrupt?") from e
            lowercase = getattr(tok.normalizer, "lowercase", config.get("do_lower_case", True))
            return cls(tok, bool(lowercase), max_len, source=str(json_path))
        if vocab_path.is_file():
            try:
                model = models.WordPiece.from_file(str(vocab_path), unk_token="[UNK]", max_input_chars_per_word=100)
            except Exception as e:
                raise ValueError(f"{vocab_path} could not be read as a WordPiece vocab ({e})") from e
            lowercase = bool(config.get("do_lower_case", True))
            tok = _bert_pipeline(model, lowercase, config.get("strip_accents"),
                                 config.get("tokenize_chinese_chars", True))
            return cls(tok, lowercase, max_len, source=str(vocab_path))
        what = "directory does not exist" if not directory.is_dir() else "it has neither tokenizer.json nor vocab.txt"
        raise FileNotFoundError(f"no WordPiece tokenizer in {directory}: {what}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True,
              min_frequency: int = 2) -> "WordPieceTokenizer":
        """Train a vocab on raw lines; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4."""
        tok = _bert_pipeline(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100), lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIALS), continuing_subword_prefix="##",
                                            show_progress=False)  # its progress bar litters logs with blank lines
        tok.train_from_iterator(texts, trainer=trainer)
        # The trainer numbers pieces in a hash map's order, new in every process: renumber them in
        # sorted order, so that the same texts give the same ids (a killed run that trains its
        # vocabulary again, a second seed). WordPiece's longest-match encoding depends on the set
        # alone, which is stable on real text (the trainer breaks ties between merges of equal
        # count by those ids, so on a toy corpus the set itself can vary).
        pieces = [p for p in sorted(tok.get_vocab()) if p not in SPECIALS]
        tok.model = models.WordPiece({p: i for i, p in enumerate([*SPECIALS, *pieces])}, unk_token="[UNK]",
                                     max_input_chars_per_word=100, continuing_subword_prefix="##")
        return cls(tok, lowercase, source="trained tokenizer")

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json, vocab.txt and the two config files transformers' BertTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        by_id = sorted(self._tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        assert [i for _, i in by_id] == list(range(len(by_id))), "vocab ids must be 0..V-1 for vocab.txt"
        (directory / "vocab.txt").write_text("".join(token + "\n" for token, _ in by_id), encoding="utf-8")
        names = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIALS))
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "model_max_length": self.model_max_length, **names}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (directory / "special_tokens_map.json").write_text(json.dumps(names, indent=2))
        return directory

    def _encode(self, inputs: list, max_len: int, truncation: str, is_pretokenized: bool) -> list[Encoding]:
        self._tok.enable_truncation(max_len, strategy=truncation)
        try:
            return self._tok.encode_batch(inputs, is_pretokenized=is_pretokenized)
        except Exception as e:  # tokenizers raises a bare Exception("Truncation error: ...")
            if truncation == "only_second":
                raise ValueError(f"max_len={max_len} is too small to hold a question plus 3 special tokens "
                                 f"(only_second never truncates the question); raise max_len ({e})") from e
            raise ValueError(f"could not encode with max_len={max_len} ({e})") from e
        finally:
            self._tok.no_truncation()

    def _arrays(self, encodings: list[Encoding], length: int) -> dict[str, np.ndarray]:
        """Right-pad to `length`: pad id, attention 0, offsets (0,0), sequence/word ids -1."""
        n = len(encodings)
        out = {"input_ids": np.full((n, length), self.pad_id, np.int32),
               "token_type_ids": np.zeros((n, length), np.int32), "attention_mask": np.zeros((n, length), np.int32),
               "offsets": np.zeros((n, length, 2), np.int32), "sequence_ids": np.full((n, length), -1, np.int32),
               "word_ids": np.full((n, length), -1, np.int32)}
        for row, enc in enumerate(encodings):
            t = len(enc.ids)
            out["input_ids"][row, :t] = enc.ids
            out["token_type_ids"][row, :t] = enc.type_ids
            out["attention_mask"][row, :t] = 1
            if t:
                out["offsets"][row, :t] = enc.offsets
            out["sequence_ids"][row, :t] = [-1 if s is None else s for s in enc.sequence_ids]
            out["word_ids"][row, :t] = [-1 if w is None else w for w in enc.word_ids]
        return out

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_len: int = 128,
               padding: str = "max_length", truncation: str = "longest_first") -> dict[str, np.ndarray]:
        """Batch-encode to int32 arrays input_ids, token_type_ids, attention_mask, sequence_ids [N,T], offsets [N,T,2].

        offsets index into the token's own segment (texts[i] or pairs[i]); sequence_ids is 0/1 for the
        segment and -1 for specials and padding. T = max_len, or the longest row for padding="longest".
        """
        if isinstance(texts, str) or isinstance(pairs, str):
            raise TypeError("encode takes a list of strings; wrap a single text as [text]")
        if padding not in PADDINGS or truncation not in TRUNCATIONS:
            raise ValueError(f"padding must be one of {PADDINGS} and truncation one of {TRUNCATIONS}; "
                             f"got padding={padding!r}, truncation={truncation!r}")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"texts and pairs must have the same length; got {len(texts)} and {len(pairs)}")
        if truncation == "only_second" and pairs is None:
            raise ValueError("truncation='only_second' needs pairs (question in texts, context in pairs)")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = self._encode(inputs, max_len, truncation, is_pretokenized=False)
        length = max_len if padding == "max_length" else max((len(e.ids) for e in encodings), default=0)
        out = self._arrays(encodings, length)
        del out["word_ids"]
        return out

    def encode_plain(self, text: str) -> list[int]:
        """Ids without special tokens or truncation, for packing pretraining text into fixed-length blocks."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokenize_words(self, words: Sequence[str], max_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Encode one pre-split sentence (CoNLL-style) as 1-D [max_len] arrays, plus word_ids [max_len].

        word_ids[t] is the index into `words` of token t (-1 for specials/pad); a tagger labels the first
        token of each word, i.e. where word_ids changes. Words past max_len are truncated away.
        """
        if isinstance(words, str):
            raise TypeError("tokenize_words takes a list of words, e.g. sentence.split()")
        out = self._arrays(self._encode([list(words)], max_len, "longest_first", is_pretokenized=True), max_len)
        word_ids = out.pop("word_ids")[0]
        return {k: v[0] for k, v in out.items()}, word_ids

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(int(i))

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text for ids (numpy or list); pad ids are skipped along with the other specials by default."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)
