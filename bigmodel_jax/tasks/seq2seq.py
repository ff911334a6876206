"""Sequence to sequence with the T5 encoder-decoder: teacher-forced cross-entropy (padding masked,
label smoothing), and evaluation that decodes the validation set and scores the text.

Datasets (data.dataset), from data/pairs.py: "bible_en_ja" / "bible_ja_en" (verse translation,
whole books held out; scored with sacrebleu BLEU and chrF), "cmudict" (grapheme-to-phoneme, split
by word; phoneme and word error rates against the closest pronunciation), "pairs" (JSONL or TSV
files data.train_file / validation_file / test_file: summarization, dialogue; BLEU and chrF),
"plays_span" (T5's span-corruption pretraining on windows of the plays, data/span_corruption.py:
a new draw of the spans every time a window is seen; validation corrupts its windows once, and is
scored by loss and token accuracy). The vocabulary is a sentencepiece model trained on the
training split (or data.tokenizer_dir's: a vocabulary shared with the task to finetune on).

Decoding in evaluation is greedy, inside the compiled eval step (the encoder once, then one
token per step through the KV cache); `python -m bigmodel_jax.sample` and generate.beam_search
decode with beams.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax import checkpoint, distributed, eval_metrics, pretrained
from bigmodel_jax.data import pairs, pipeline, spm
from bigmodel_jax.data.prepare import save_whole
from bigmodel_jax.data.span_corruption import SENTINELS, corrupt, window_length
from bigmodel_jax.data.spm import EOS, PAD, SentencePieceTokenizer, T5Vocabulary
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models.encdec import EncoderDecoder, count_params
from bigmodel_jax.tasks.encoder import seeded_subset
from bigmodel_jax.tasks.protocol import EvalSet, TaskData, keep_source

log = logging.getLogger(__name__)

FAMILY = "t5"
METRICS = ("loss", "token_accuracy", "bleu", "chrf", "per", "wer")
adapt_source = keep_source


def _files(d) -> dict[str, list[dict]]:
    return {name: pairs.read_pairs(getattr(d, f"{name}_file"), d.on_bad_record)
            for name in ("train", "validation", "test")}


DATASETS: dict[str, Callable] = {
    "bible_en_ja": lambda d: pairs.bible(Path(d.tfds_dir).expanduser(), "en_ja"),
    "bible_ja_en": lambda d: pairs.bible(Path(d.tfds_dir).expanduser(), "ja_en"),
    "cmudict": lambda d: pairs.cmudict(Path(d.tfds_dir).expanduser(), d.path or None),
    "pairs": _files,
    "plays_span": lambda d: _plays_text(d),
}
VOCAB_ALSO = ("bible_en_ja", "cmudict")  # the training texts a shared vocabulary can add (a pair file's are the user's)
SCORES = {"bible_en_ja": ("bleu", "chrf"), "bible_ja_en": ("bleu", "chrf"), "cmudict": ("per", "wer"),
          "pairs": ("bleu", "chrf"), "plays_span": ()}


def _plays_text(d) -> dict[str, list[dict]]:
    """The plays' train and validation text as one record each (the source; span corruption
    makes the pairs), their lines being what the vocabulary is trained on."""
    from bigmodel_jax.data import plays

    tfds_dir, plays_dir = Path(d.tfds_dir).expanduser(), d.plays_dir or None
    return {name: [{"source": plays.load_split_text(tfds_dir, name, plays_dir), "targets": [], "key": name}]
            for name in ("train", "validation")}


def validate(cfg: ml_collections.ConfigDict) -> None:
    d, m = cfg.data, cfg.model
    if d.dataset not in DATASETS:
        raise ConfigError("data.dataset", d.dataset, f"one of {sorted(DATASETS)}")
    metric = cfg.train.eval_metric
    valid = ("loss", "token_accuracy", *SCORES[d.dataset])
    if metric not in valid:
        raise ConfigError("train.eval_metric", metric, f"one of {', '.join(valid)} for {d.dataset}")
    if d.dataset == "pairs":
        for name in ("train_file", "validation_file", "test_file"):
            if not Path(getattr(d, name)).expanduser().is_file():
                raise ConfigError(f"data.{name}", getattr(d, name), "a .jsonl or .tsv file of pairs")
    if d.dataset == "plays_span":
        from bigmodel_jax.data import plays

        plays.check_plays_dir(d.plays_dir)
    if d.get("vocab_also") and d.vocab_also not in VOCAB_ALSO:
        raise ConfigError("data.vocab_also", d.vocab_also, f"'' or one of {', '.join(VOCAB_ALSO)} (a dataset whose "
                          "training texts the vocabulary is also trained on)")
    if m.activation not in ("relu", "geglu"):
        raise ConfigError("model.activation", m.activation, "'relu' (T5 v1.0) or 'geglu' (T5 v1.1)")
    if d.target_len >= m.max_len:
        raise ConfigError("data.target_len", d.target_len, f"less than model.max_len={m.max_len} (the decoder's cache "
                          "when sampling holds the start token and every output token but the last)")
    if not 0 <= m.label_smoothing < 1:
        raise ConfigError("model.label_smoothing", m.label_smoothing, "in [0, 1)")


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> EncoderDecoder:
    return EncoderDecoder(cfg.model, rngs=rngs)


def tokens_per_example(cfg: ml_collections.ConfigDict) -> int:
    return cfg.data.source_len + cfg.data.target_len


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    """Matmul parameters per token, averaged over the source and target tokens of an example: the
    encoder's run on the source, the decoder's and the head on the target (the cross-attention's
    keys/values run on the source but are counted on the target: an overestimate of 2·d·inner per
    decoder layer and target token, under 1% at T5-small's shapes)."""
    m = cfg.model
    enc = count_params(ml_collections.ConfigDict({**m.to_dict(), "num_decoder_layers": 0}), False)
    dec = count_params(m, False) - enc + m.vocab_size * m.width * m.tie_embeddings
    s, t = cfg.data.source_len, cfg.data.target_len
    return int((enc * s + dec * t) / (s + t))


def loss_fn(model: EncoderDecoder, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    """Mean cross-entropy over the real target tokens of the batch, against labels smoothed by
    model.label_smoothing (that mass spread uniformly over the vocabulary: Vaswani et al. 2017).
    It lives in the model section, like dropout, because the protocol's loss_fn sees the model's
    config only; a run may change it on resume."""
    label_smoothing = model.cfg.get("label_smoothing", 0.0)
    logits = model(batch["source"], batch["source_mask"].astype(bool), batch["decoder_in"], rngs=rngs)
    mask = batch["target_mask"].astype(jnp.float32)
    labels = optax.smooth_labels(jax.nn.one_hot(batch["target"], logits.shape[-1]), label_smoothing)
    loss_bt = optax.softmax_cross_entropy(logits, labels)
    tokens = jnp.maximum(mask.sum(), 1.0)
    loss = (loss_bt * mask).sum() / tokens
    return loss, {"loss": loss, "weight": tokens}


def greedy_decode(model: EncoderDecoder, source_bs: jax.Array, source_mask_bs: jax.Array, steps: int) -> jax.Array:
    """[B, steps] greedy tokens (pad after eos), traceable inside a jitted step: the encoder runs
    once, then one decoder token per step through the KV cache (generate.generate with
    greedy sampling gives the same tokens; a test checks it)."""
    b = source_bs.shape[0]
    cache = model.init_cache(b, steps, source=(source_bs, source_mask_bs))
    tokens = jnp.zeros((b, steps + 1), jnp.int32)  # slot 0: the start token (pad)

    def body(i, carry):
        tokens, cache, done = carry
        mask = jnp.broadcast_to(jnp.arange(steps)[None] <= i, (b, steps))
        x, cache = model.hidden(jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1), cache=cache, cache_index=i,
                                mask_bs=mask)
        nxt = jnp.where(done, PAD, jnp.argmax(model.logits(x)[:, 0], axis=-1).astype(jnp.int32))
        return tokens.at[:, i + 1].set(nxt), cache, done | (nxt == EOS)

    tokens, _, _ = jax.lax.fori_loop(0, steps, body, (tokens, cache, jnp.zeros(b, bool)))
    return tokens[:, 1:]


def eval_fn(model: EncoderDecoder, batch: dict) -> dict[str, jax.Array]:
    source_mask = batch["source_mask"].astype(bool)
    logits = model(batch["source"], source_mask, batch["decoder_in"])
    mask = batch["target_mask"].astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target"])
    correct = (jnp.argmax(logits, -1) == batch["target"]) * mask
    return {"nll": (nll * mask).sum(-1), "tokens": mask.sum(-1), "correct": correct.sum(-1),
            "decoded": greedy_decode(model, batch["source"], source_mask, batch["target"].shape[1])}


@dataclass
class Reference:
    """What corpus_metrics needs to score decoded tokens as text."""
    targets: list[list[str]]  # each example's acceptable outputs
    decode: Callable[[np.ndarray], str]
    dataset: str


def corpus_metrics(outputs: dict[str, np.ndarray], reference: Reference) -> dict[str, float]:
    tokens = float(outputs["tokens"].sum())
    out = {"loss": eval_metrics.mean_loss(outputs["nll"], outputs["tokens"]),
           "token_accuracy": float(outputs["correct"].sum()) / max(tokens, 1.0)}
    return {**out, **score_texts([reference.decode(row) for row in outputs["decoded"]], reference)}


def score_texts(hypotheses: list[str], reference: Reference) -> dict[str, float]:
    """The dataset's own scores of output texts: PER/WER for G2P, none for span corruption (its
    loss and token accuracy say it), else BLEU/chrF."""
    if reference.dataset == "plays_span":
        return {}
    if reference.dataset == "cmudict":
        return eval_metrics.phoneme_errors(hypotheses, reference.targets)
    lang = "ja" if reference.dataset == "bible_en_ja" else "en"
    return eval_metrics.translation(hypotheses, [t[0] for t in reference.targets], lang)


def cut(ids: list[int], length: int) -> list[int]:
    """ids cut to length tokens, keeping the eos last (sources and targets longer than fits)."""
    return ids if len(ids) <= length else ids[:length - 1] + [EOS]


def pair_arrays(source: list[int], target: list[int], source_len: int, target_len: int) -> dict[str, np.ndarray]:
    """One example's fixed-shape rows: source [S] (+ mask), decoder_in = start + target[:-1], target
    [T] (+ mask); both already fit."""
    out = {k: np.zeros(n, np.int32) for k, n in (("source", source_len), ("source_mask", source_len),
                                                 ("decoder_in", target_len), ("target", target_len),
                                                 ("target_mask", target_len))}
    out["source"][:len(source)], out["source_mask"][:len(source)] = source, 1
    out["target"][:len(target)], out["target_mask"][:len(target)] = target, 1
    out["decoder_in"][1:len(target)] = target[:-1]
    return out


def encode_pairs(tok: T5Vocabulary, records: list[dict], source_len: int, target_len: int,
                 every_target: bool = False) -> dict[str, np.ndarray]:
    """pair_arrays of every record stacked [N, ...], sources and targets cut to fit. For training
    with several targets per source (G2P's pronunciations), every_target makes one row per target;
    otherwise the first target is the teacher-forced one."""
    rows = [(r["source"], t) for r in records for t in (r["targets"] if every_target else r["targets"][:1])]
    examples = [pair_arrays(cut(s, source_len), cut(t, target_len), source_len, target_len)
                for s, t in zip(tok.encode([s for s, _ in rows]), tok.encode([t for _, t in rows]))]
    return {k: np.stack([e[k] for e in examples]).astype(np.int32) for k in examples[0]}


def tokenizer(cfg: ml_collections.ConfigDict, workdir: Path, splits: dict[str, list[dict]],
              process_index: int) -> T5Vocabulary:
    """The workdir's vocabulary; else data.tokenizer_dir's; else init_from's (a workdir's
    tokenizer/, a T5 directory's spiece.model or tokenizer.json); else one trained on the training
    split (process 0 trains and saves it, the others wait and read it). The workdir keeps a copy."""
    d = cfg.data
    directories = [workdir / "tokenizer"] + ([Path(d.tokenizer_dir).expanduser()] if d.tokenizer_dir else [])
    if cfg.init_from:
        source = pretrained.resolve(cfg.init_from)
        directories += [source / "tokenizer", source]
    for directory in directories:
        if spm.present(directory):
            tok = spm.load(directory)
            if directory != workdir / "tokenizer" and process_index == 0:
                save_whole(tok.save, workdir / "tokenizer")  # the run decodes (sample, seq2seq_eval) from its copy
            return tok
    if process_index == 0:
        span = d.dataset == "plays_span"
        texts = splits["train"][0]["source"].splitlines() if span else pairs.iter_texts(splits)
        also = d.get("vocab_also", "")
        if also:  # only the other dataset's training split: its held-out texts stay unseen
            texts = itertools.chain(texts, pairs.iter_texts(DATASETS[also](d)))
        tok = SentencePieceTokenizer.train(texts, d.vocab_size, d.spm_model_type, SENTINELS if span else ())
        save_whole(tok.save, workdir / "tokenizer")
        log.info("trained a sentencepiece %s vocabulary (%d pieces) on the training split%s, saved to %s",
                 d.spm_model_type, tok.vocab_size, f" and {also}'s" if also else "",
                 workdir / "tokenizer")
    distributed.barrier("tokenizer trained")
    return spm.load(workdir / "tokenizer")


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d, b = cfg.data, cfg.train.batch_size
    splits = DATASETS[d.dataset](d)
    if d.max_train_examples:
        splits["train"] = [splits["train"][i] for i in seeded_subset(len(splits["train"]), d.max_train_examples,
                                                                     cfg.seed)]
    tok = tokenizer(cfg, Path(workdir), splits, process_index)
    if d.dataset == "plays_span":
        return span_data(cfg, tok, splits, process_index, process_count)
    train = encode_pairs(tok, splits["train"], d.source_len, d.target_len, every_target=True)

    def eval_set(name: str, limit: int) -> EvalSet:
        records = splits[name]
        keep = seeded_subset(len(records), limit, cfg.seed) if limit else np.arange(len(records))
        records = [records[i] for i in keep]
        arrays = encode_pairs(tok, records, d.source_len, d.target_len)
        return EvalSet(pipeline.example_eval_batches(arrays, b, process_index, process_count),
                       f"{len(records):,} of {len(splits[name]):,} examples",
                       Reference([r["targets"] for r in records], tok.decode, d.dataset))

    return TaskData(tok, pipeline.example_dataset(train, b, cfg.seed, process_index, process_count),
                    eval_set("validation", d.eval_examples), f"{len(train['source']):,} pairs",
                    eval_set("test", 0), model_overrides={"vocab_size": vocab_size(cfg, tok)})


def vocab_size(cfg: ml_collections.ConfigDict, tok: T5Vocabulary) -> int:
    """The tokenizer's size, or init_from's embedding rows when it has more (t5-small's 32,128 rows
    for its 32,000 pieces: the extra rows are never produced by the tokenizer). The source is read
    here, not through transfer.py, which imports the task registry."""
    if not cfg.init_from:
        return tok.vocab_size
    source = pretrained.resolve(cfg.init_from)
    if (source / "config.json").is_file():
        rows = json.loads((source / "config.json").read_text()).get("vocab_size", 0)
    else:
        meta = checkpoint.read_meta(source / "checkpoints")
        rows = json.loads(meta["config"])["model"].get("vocab_size", 0) if meta else 0
    return max(tok.vocab_size, int(rows or 0))


def span_data(cfg: ml_collections.ConfigDict, tok: T5Vocabulary, splits: dict[str, list[dict]],
              process_index: int, process_count: int) -> TaskData:
    """Span corruption over non-overlapping windows of each split's token stream, as long as
    fits data.source_len / target_len once corrupted."""
    d, b = cfg.data, cfg.train.batch_size
    try:
        sentinels = [tok.piece_id(s) for s in SENTINELS]
    except KeyError as e:
        raise ConfigError("data.tokenizer_dir", d.tokenizer_dir, f"a vocabulary with T5's sentinels <extra_id_0..99> "
                          f"(span corruption needs them: {e})") from None
    length = window_length(d.source_len, d.target_len)

    def windows(name: str) -> np.ndarray:
        ids = np.asarray([i for line in tok.encode(splits[name][0]["source"].splitlines(), eos=False) for i in line],
                         np.int32)
        return ids[:len(ids) // length * length].reshape(-1, length)

    def transform(example: dict, rng: np.random.Generator) -> dict:
        return pair_arrays(*corrupt(example["window"], sentinels, EOS, rng), d.source_len, d.target_len)

    train = windows("train")
    val = windows("validation")
    keep = seeded_subset(len(val), d.eval_examples, cfg.seed) if d.eval_examples else np.arange(len(val))
    rng = np.random.default_rng(cfg.seed)
    rows = [pair_arrays(*corrupt(val[i], sentinels, EOS, rng), d.source_len, d.target_len) for i in keep]
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    validation = EvalSet(pipeline.example_eval_batches(arrays, b, process_index, process_count),
                         f"{len(keep):,} of {len(val):,} windows of {length} tokens",
                         Reference([[] for _ in keep], tok.decode, d.dataset))
    return TaskData(tok, pipeline.example_dataset({"window": train}, b, cfg.seed, process_index, process_count,
                                                  transform),
                    validation, f"{len(train):,} windows of {length} tokens ({train.size:,} tokens)",
                    model_overrides={"vocab_size": vocab_size(cfg, tok)})
