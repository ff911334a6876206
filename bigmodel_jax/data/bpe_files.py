"""The tokenizer of a Hugging Face decoder directory (GPT-2, Llama, SmolLM2...) as `DecoderTokenizer`.

Reads what `transformers.AutoTokenizer` reads, so our ids are its ids: `tokenizer.json` (any
`tokenizers` pipeline), or GPT-2's `vocab.json` + `merges.txt` (byte-level BPE) when there is no
tokenizer.json; `tokenizer_config.json` (or `special_tokens_map.json`) for the bos/eos/pad/unk
tokens and the chat template (`chat_template.jinja` first, as transformers 5 saves it). Special
tokens are added to an encoding only by the pipeline's post-processor, as transformers does: GPT-2
and SmolLM2 add none. Chat templates are rendered with jinja2 in a sandbox, with the environment
transformers gives them (trim_blocks, lstrip_blocks, loopcontrols, tojson, raise_exception).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

# Besides the eos token, the end-of-turn tokens chat models end an answer with (ChatML, GPT-2,
# Llama 3): a chat loop stops on any of them. `eos_ids` lists those the vocabulary has.
CHAT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-download or re-save the tokenizer") from e


def _token_str(value) -> str | None:
    """A special token as tokenizer_config.json spells it: a string, or {"content": ...} (older files)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], split_regex: str | None = None) -> Tokenizer:
    """GPT-2's byte-level BPE pipeline, as transformers' GPT2Tokenizer builds it. split_regex: a
    pre-split pattern in place of GPT-2's (Llama 3's and others'), applied before the byte mapping."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    if split_regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split_regex), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _from_vocab_merges(directory: Path, config: dict) -> Tokenizer:
    """GPT-2's two files; the config's special tokens (and added_tokens_decoder) are never split."""
    vocab = _read_json(directory / "vocab.json")
    merges_path = directory / "merges.txt"
    if not merges_path.is_file():
        raise FileNotFoundError(f"{merges_path} is missing (vocab.json needs merges.txt beside it)")
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tok = byte_level_bpe(vocab, merges)
    specials = {_token_str(config.get(name, "<|endoftext|>")) for name in SPECIAL_NAMES}
    specials |= {_token_str(v) for v in (config.get("added_tokens_decoder") or {}).values()}
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in sorted(specials - {None})
                            if s in vocab])
    if config.get("add_bos_token") and _token_str(config.get("bos_token")) in vocab:
        bos = _token_str(config["bos_token"])
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, vocab[bos])])
    return tok


def _chat_template(directory: Path, config: dict) -> str | None:
    path = directory / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    return template


class DecoderTokenizer:
    """encode / decode / chat templates of a decoder's tokenizer; see the module docstring.

    eos_ids: every id a chat should stop on: the eos token plus whichever of CHAT_STOP_TOKENS the
    vocabulary has (SmolLM2's eos is <|im_end|>, and it may also end with <|endoftext|>).
    """

    def __init__(self, tok: Tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, unk_token: str | None = None, chat_template: str | None = None):
        self._tok = tok
        self.specials = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        self.chat_template = chat_template
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (
            self._id(t) for t in (bos_token, eos_token, pad_token, unk_token))
        stops = [self.eos_id] + [tok.token_to_id(t) for t in CHAT_STOP_TOKENS]
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(i for i in stops if i is not None))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    @classmethod
    def from_dir(cls, directory: str | Path) -> "DecoderTokenizer":
        directory = Path(directory)
        config = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            if (directory / name).is_file():
                config.update(_read_json(directory / name))
        if (directory / "tokenizer.json").is_file():
            path = directory / "tokenizer.json"
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # tokenizers raises a bare Exception for bad JSON / unknown types
                raise ValueError(f"{path} could not be loaded by tokenizers ({e}); is it corrupt?") from e
        elif (directory / "vocab.json").is_file():
            tok = _from_vocab_merges(directory, config)
        else:
            raise FileNotFoundError(f"no tokenizer in {directory}: expected tokenizer.json, or vocab.json + merges.txt")
        tok.no_padding()  # a tokenizer.json may carry padding/truncation; encode() returns whole texts
        tok.no_truncation()
        default = "<|endoftext|>" if tok.token_to_id("<|endoftext|>") is not None else None  # GPT-2's defaults
        names = {name: _token_str(config.get(name, default if name != "pad_token" else None)) for name in SPECIAL_NAMES}
        return cls(tok, **names, chat_template=_chat_template(directory, config))

    @property
    def backend(self) -> Tokenizer:
        """The `tokenizers.Tokenizer` underneath (a training run keeps it as its BPE tokenizer)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids, skip_special: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @cached_property
    def _template(self):
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template (tokenizer_config.json has no 'chat_template')")
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(self.chat_template)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}]); encode() it for the ids."""
        specials = {k: v for k, v in self.specials.items() if v is not None}
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **specials)

    def save(self, directory: str | Path) -> Path:
        """tokenizer.json + tokenizer_config.json, which `transformers.AutoTokenizer` loads as is."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                  "model_max_length": int(1e30), **{k: v for k, v in self.specials.items() if v is not None}}
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                         encoding="utf-8")
        return directory
