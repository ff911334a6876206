"""What `python -m bigmodel_jax.explain` explains: a workdir of ours (its best checkpoint, its
tokenizer, its dataset's test split) or a pretrained model by name, and how a text becomes the
model's inputs and readable tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

# the model call each task's attention maps and hidden states come from: fn(model, inputs)
ENCODER_TASKS = ("classify", "mlm", "tag", "qa", "regress")


@dataclass
class Subject:
    model: nnx.Module
    task: str  # a task name of ours ("classify", "causal_lm", "image_classify", ...) or "encoder"
    tokenizer: Any = None
    cfg: Any = None
    label_names: tuple[str, ...] = ()
    name: str = ""

    @property
    def is_encoder(self) -> bool:
        return self.task in ENCODER_TASKS or self.task == "encoder"


def load(workdir: str | None = None, model: str | None = None, which: str = "best") -> Subject:
    """A workdir's `best` (else `latest`) checkpoint, or --model: 'minilm' / a BERT directory
    (a bare encoder), 'smollm2' / a .gguf / a GPT-2 or Llama directory (a causal LM)."""
    if (workdir is None) == (model is None):
        raise SystemExit("give either --workdir (a run of ours) or --model (minilm, smollm2, or a directory)")
    if workdir is not None:
        from bigmodel_jax import checkpoint, transfer

        if which == "best" and checkpoint.read_meta(Path(workdir) / "best") is None:
            which = "latest"
        m, cfg, step = transfer.load_trained(workdir, which)
        return Subject(m, cfg.task, _workdir_tokenizer(cfg, Path(workdir)), cfg, _label_names(cfg),
                       f"{workdir} ({which} checkpoint, step {step})")
    from bigmodel_jax import decoder_sources, hf, pretrained

    if decoder_sources.is_decoder(model):
        from bigmodel_jax.sample import load_pretrained

        m, tok = load_pretrained(model)
        return Subject(m, "causal_lm", tok, None, (), model)
    path = pretrained.resolve(model)
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

    return Subject(hf.load_bert_dir(path), "encoder", WordPieceTokenizer.from_dir(path), None, (), model)


def _workdir_tokenizer(cfg, workdir: Path):
    if cfg.task == "image_classify":
        return None
    if cfg.task == "seq2seq":
        from bigmodel_jax.data import spm

        return spm.load(workdir / "tokenizer")
    if cfg.task == "causal_lm":
        from bigmodel_jax.data.tokenizers import load_tokenizer

        return load_tokenizer(workdir)
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer

    return WordPieceTokenizer.from_dir(workdir / "tokenizer")


def _label_names(cfg) -> tuple[str, ...]:
    if cfg.task != "classify":
        return ()
    from bigmodel_jax.tasks import classify, encoder

    return tuple(encoder.load_splits(cfg, classify.DATASETS).label_names)


def test_texts(subject: Subject, split: str = "test") -> list[tuple[str, int]]:
    """(text, label) of a classifier workdir's dataset split."""
    from bigmodel_jax.tasks import classify, encoder

    if subject.task != "classify":
        raise SystemExit(f"{subject.name}: a split of labelled texts needs a classifier (task 'classify'), "
                         f"not {subject.task!r}")
    return list(getattr(encoder.load_splits(subject.cfg, classify.DATASETS), split))


def test_images(subject: Subject, split: str = "test") -> dict[str, np.ndarray]:
    from bigmodel_jax.data import augment, images

    d = subject.cfg.data
    data = images.load_images(d.dataset, Path(d.tfds_dir).expanduser(), d.mnist_dir or None)
    arrays = augment.eval_arrays(getattr(data, split))
    if arrays["image"].shape[1] != subject.cfg.model.image_size:
        arrays["image"] = augment.resize(arrays["image"], subject.cfg.model.image_size)
    return dict(arrays, class_names=np.asarray(data.class_names))


def encode(subject: Subject, text: str, max_len: int = 128) -> tuple[dict[str, jnp.ndarray], list[str], np.ndarray]:
    """(inputs [1, T], the T tokens as text, which tokens are words: not [CLS]/[SEP]) of one text,
    unpadded (T its length, at most max_len and the model's own max_len)."""
    tok = subject.tokenizer
    max_len = capped(subject, max_len)
    if subject.is_encoder:
        batch = tok.encode([text], max_len=max_len, padding="longest")
        ids = batch["input_ids"][0]
        inputs = {k: jnp.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
        words = ~np.isin(ids, list(tok.special_ids))
        return inputs, [tok.id_to_token(i) for i in ids], words
    if subject.task == "causal_lm":
        ids = np.asarray(tok.encode(text), np.int32)[-max_len:]
        if len(ids) == 0:
            raise SystemExit("--text is empty after tokenizing")
        return {"input_ids": jnp.asarray(ids)[None]}, [tok.decode([int(i)]) for i in ids], np.ones(len(ids), bool)
    raise SystemExit(f"{subject.name}: text inputs need a BERT-family model or a causal LM, not task {subject.task!r}")


def encode_pair(subject: Subject, text: str, target: str | None = None,
                max_len: int = 128) -> tuple[dict[str, jnp.ndarray], list[str], list[str]]:
    """(inputs [1, ...] of an encoder-decoder, the source tokens, the decoder's input tokens) for one
    source text and its target: `target`, else the model's own greedy output. The decoder reads the
    target shifted right behind the start token (pad), as in training, so its row i is the step that
    predicts target token i."""
    from bigmodel_jax.data.spm import EOS
    from bigmodel_jax.tasks import seq2seq

    if subject.task != "seq2seq":
        raise SystemExit(f"{subject.name}: a source and target need an encoder-decoder (task 'seq2seq')")
    tok, d = subject.tokenizer, subject.cfg.data
    source = np.asarray(seq2seq.cut(tok.encode([text])[0], min(max_len, d.source_len)), np.int32)[None]
    source_mask = np.ones_like(source, bool)
    if target is None:
        out = np.asarray(seq2seq.greedy_decode(subject.model, jnp.asarray(source), jnp.asarray(source_mask),
                                               d.target_len))[0]
        ids = list(out[:list(out).index(EOS) + 1] if EOS in out else out)
    else:
        ids = seq2seq.cut(tok.encode([target])[0], d.target_len)
    target_in = np.asarray([tok.pad_id] + list(ids[:-1]), np.int32)[None]

    def piece(i: int) -> str:
        return {tok.pad_id: "<s>", tok.eos_id: "</s>"}.get(int(i)) or tok.decode([int(i)]) or f"#{int(i)}"

    inputs = {"source": jnp.asarray(source), "source_mask": jnp.asarray(source_mask),
              "target_in": jnp.asarray(target_in)}
    return inputs, [piece(i) for i in source[0]], [piece(i) for i in target_in[0]]


def capped(subject: Subject, max_len: int) -> int:
    """max_len, or the model's own context length if that is shorter."""
    return min(max_len, getattr(subject.model, "bert", subject.model).cfg.max_len)


def forward(subject: Subject) -> Callable:
    """fn(model, inputs) -> the last hidden state [B, T, D]: the call attention maps and probes
    read (a ViT's inputs are {"image"})."""
    if subject.is_encoder:
        def encoder_hidden(m, i):
            bert = getattr(m, "bert", m)
            return bert(i["input_ids"], i["token_type_ids"], i["attention_mask"])
        return encoder_hidden
    if subject.task == "causal_lm":
        return lambda m, i: m.hidden(i["input_ids"])[0]
    if subject.task == "image_classify":
        return lambda m, i: m.features(i["image"])
    if subject.task == "seq2seq":
        return lambda m, i: m(i["source"], i["source_mask"], i["target_in"])
    raise SystemExit(f"no forward pass known for task {subject.task!r}")
