"""Speech recognition with CTC (Graves et al. 2006): models/audio.py's encoder and a linear head
over characters, on the Asterisk prompts (data/asterisk.py).

The batches carry raw 8 kHz samples; the log-mel features (audio.log_mel) and, in training,
SpecAugment's masks are computed inside the compiled step. The loss is optax's CTC over the
encoder's real positions, summed over the batch and divided by its characters; evaluation decodes
greedily (best path: argmax per position, repeats merged, blanks dropped) and scores the corpus
with jiwer's CER and WER against the normalized transcripts (asterisk.normalize).
The task protocol is in tasks/protocol.py.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from bigmodel_jax import audio, eval_metrics
from bigmodel_jax.data import asterisk, audio_batches
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models import audio as audio_model
from bigmodel_jax.models.audio import CTCRecognizer, encoded_frames
from bigmodel_jax.tasks.protocol import EvalSet, TaskData, keep_source

FAMILY = "audio"
METRICS = ("loss", "cer", "wer")
VOCAB = "_ '0123456789abcdefghijklmnopqrstuvwxyz"  # id 0 ("_") is CTC's blank
adapt_source = keep_source


def encode_text(text: str) -> list[int]:
    return [VOCAB.index(c) for c in asterisk.normalize(text)]


def decode_ids(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def max_samples(cfg: ml_collections.ConfigDict) -> int:
    return int(round(cfg.data.max_seconds * cfg.model.sample_rate))


def positions(cfg: ml_collections.ConfigDict, samples: int) -> int:
    """Encoder positions of a row of that many samples."""
    return int(encoded_frames(audio.num_frames(samples, cfg.model.hop), cfg.model.conv_stride))


def tokens_per_example(cfg: ml_collections.ConfigDict) -> int:
    """Encoder positions of the longest utterance; the training batches carry their own (a shorter
    bucket runs fewer), which the trainer's throughput and MFU count."""
    return positions(cfg, max_samples(cfg))


def matmul_params(cfg: ml_collections.ConfigDict) -> int:
    return audio_model.matmul_params(cfg.model)


def validate(cfg: ml_collections.ConfigDict) -> None:
    m, d = cfg.model, cfg.data
    if m.vocab_size not in (0, len(VOCAB)):
        raise ConfigError("model.vocab_size", m.vocab_size, f"0 or {len(VOCAB)} (the blank and {VOCAB[1:]!r})")
    if m.sample_rate != asterisk.SAMPLE_RATE:
        raise ConfigError("model.sample_rate", m.sample_rate, f"{asterisk.SAMPLE_RATE} (the recordings' rate)")
    if not 0 < m.hop <= m.n_fft:
        raise ConfigError("model.hop", m.hop, f"between 1 and model.n_fft={m.n_fft}")
    if m.conv_stride < 1:
        raise ConfigError("model.conv_stride", m.conv_stride, "at least 1")
    if d.max_seconds <= 0:
        raise ConfigError("data.max_seconds", d.max_seconds, "a positive number of seconds")
    if tokens_per_example(cfg) > m.max_frames:
        raise ConfigError("data.max_seconds", d.max_seconds,
                          f"at most {m.max_frames * m.conv_stride * m.hop / m.sample_rate:g} s: model.max_frames="
                          f"{m.max_frames} encoder positions of {m.conv_stride * m.hop} samples")
    if not (0 <= m.spec_augment.freq_width < m.num_mels and 0 <= m.spec_augment.time_ratio < 1):
        raise ConfigError("model.spec_augment", dict(m.spec_augment),
                          f"freq_width in [0, num_mels={m.num_mels}) and time_ratio in [0, 1)")
    try:  # last: every other key is checked whether or not the prompts are fetched
        asterisk.find_root(d.path)
    except FileNotFoundError as e:
        raise ConfigError("data.path", d.path, str(e)) from None


def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> CTCRecognizer:
    return CTCRecognizer(cfg.model, rngs=rngs)


def features(model: CTCRecognizer, audio_bn: jax.Array, length_b: jax.Array,
             rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
    """Log-mel features [B, T, M] of int16 samples and which frames are real; SpecAugment when
    training (rngs given)."""
    m = model.encoder.cfg
    feats = audio.log_mel(audio_bn.astype(jnp.float32) / 32768.0, length_b, sample_rate=m.sample_rate, n_fft=m.n_fft,
                          hop=m.hop, n_mels=m.num_mels)
    frames_b = audio.num_frames(length_b, m.hop)
    if rngs is not None:
        s = m.spec_augment
        feats = audio.spec_augment(feats, frames_b, rngs.dropout(), freq_masks=s.freq_masks, freq_width=s.freq_width,
                                   time_masks=s.time_masks, time_ratio=s.time_ratio)
    return feats, jnp.arange(feats.shape[1])[None] < frames_b[:, None]


def _ctc(model: CTCRecognizer, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-utterance CTC loss [B], the logits [B, T', V] and the real positions [B, T']."""
    feats, mask = features(model, batch["audio"], batch["length"], rngs)
    logits, mask = model(feats, mask, rngs=rngs)
    label_pad = (jnp.arange(batch["labels"].shape[1])[None] >= batch["label_length"][:, None]).astype(jnp.float32)
    loss_b = optax.ctc_loss(logits, 1.0 - mask.astype(jnp.float32), batch["labels"], label_pad, blank_id=0)
    return loss_b, logits, mask


def loss_fn(model: CTCRecognizer, batch: dict, rngs: nnx.Rngs | None) -> tuple[jax.Array, dict]:
    """CTC loss per character of the batch's transcripts."""
    loss_b, _, _ = _ctc(model, batch, rngs)
    chars = batch["label_length"].sum().astype(jnp.float32)
    loss = loss_b.sum() / jnp.maximum(chars, 1.0)
    return loss, {"loss": loss, "weight": chars}


def eval_fn(model: CTCRecognizer, batch: dict) -> dict[str, jax.Array]:
    """Each utterance's CTC loss and per-position argmax (blank past its end, out to model.max_frames
    so that batches of every bucket concatenate)."""
    loss_b, logits, mask = _ctc(model, batch, None)
    ids = jnp.where(mask, logits.argmax(-1), 0)
    ids = jnp.pad(ids, ((0, 0), (0, model.encoder.cfg.max_frames - ids.shape[1])))
    return {"nll": loss_b, "chars": batch["label_length"], "ids": ids}


def transcripts(outputs: dict[str, np.ndarray]) -> list[str]:
    """Greedy CTC transcripts of eval_fn's per-position argmax ids."""
    return [decode_ids(audio.ctc_greedy(row)) for row in outputs["ids"]]


def corpus_metrics(outputs: dict[str, np.ndarray], reference: list[str]) -> dict[str, float]:
    return {"loss": eval_metrics.mean_loss(outputs["nll"], outputs["chars"]),
            **eval_metrics.speech_errors(transcripts(outputs), reference)}


def feasible(labels: list[int], positions: int) -> bool:
    """CTC can align the labels to that many positions: one per label, plus a blank between repeats."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:])) <= positions


def examples(cfg: ml_collections.ConfigDict, records: list[dict]) -> tuple[list[dict], int]:
    """Records that fit (at most data.max_seconds, alignable) as {audio, labels, text}; and how many did not."""
    cap = max_samples(cfg)
    out = []
    for r in records:
        labels = encode_text(r["text"])
        if len(r["audio"]) <= cap and feasible(labels, positions(cfg, len(r["audio"]))):
            out.append({"audio": np.asarray(r["audio"], np.int16), "labels": np.array(labels, np.int32),
                        "text": asterisk.normalize(r["text"])})
    return out, len(records) - len(out)


def make_data(cfg: ml_collections.ConfigDict, workdir: str | Path, process_index: int = 0,
              process_count: int = 1) -> TaskData:
    d, m, b = cfg.data, cfg.model, cfg.train.batch_size
    splits = asterisk.load(d.tfds_dir, d.path)
    kept = {name: examples(cfg, records) for name, records in splits.items()}
    sizes = audio_batches.buckets(max_samples(cfg), m.sample_rate)
    label_len = max(len(e["labels"]) for ex, _ in kept.values() for e in ex)
    evals = {}
    for name in ("validation", "test"):
        ex, dropped = kept[name]
        seconds = sum(len(e["audio"]) for e in ex) / m.sample_rate
        evals[name] = EvalSet(audio_batches.eval_batches(ex, b, sizes, label_len, process_index, process_count),
                              f"{len(ex)} utterances ({seconds / 60:.1f} min; {dropped} over {d.max_seconds:g} s left "
                              "out)", [e["text"] for e in ex])
    train, dropped = kept["train"]
    seconds = sum(len(e["audio"]) for e in train) / m.sample_rate
    train_batches = audio_batches.train_dataset(train, b, cfg.seed, sizes, label_len, lambda n: positions(cfg, n),
                                                process_index, process_count)
    return TaskData(None, train_batches,
                    evals["validation"], f"{len(train)} utterances, {seconds / 60:.1f} min ({dropped} left out)",
                    evals["test"], model_overrides={"vocab_size": len(VOCAB)}, train_examples=len(train))
