"""python -m bigmodel_jax.transcribe --workdir RUN (FILE.wav ... | --split test [--show 10])
Transcribes 8 kHz mono 16-bit WAV files with a trained CTC recognizer (task `ctc`), greedily; with
--split, every utterance of that split of the run's data, printing the first --show beside their
references and the split's CER and WER (jiwer), as the trainer scored it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bigmodel_jax import eval_metrics
from bigmodel_jax.data import asterisk, audio_batches
from bigmodel_jax.tasks import ctc


def transcribe(model, cfg, examples: list[dict], batch: int = 16) -> list[str]:
    """Greedy transcripts of examples {audio int16, labels}, in order."""
    sizes = audio_batches.buckets(max(ctc.max_samples(cfg), max(len(e["audio"]) for e in examples)),
                                  cfg.model.sample_rate)
    label_len = max(1, max(len(e["labels"]) for e in examples))
    out = [""] * len(examples)
    for b in audio_batches.eval_batches(examples, batch, sizes, label_len):
        texts = ctc.transcripts({k: np.asarray(v) for k, v in ctc.eval_fn(model, b).items()})
        for i, w, text in zip(b["index"], b["weight"], texts):
            if w > 0:
                out[i] = text
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.transcribe", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a ctc run of ours")
    p.add_argument("files", nargs="*", help="WAV files (8 kHz, mono, 16-bit)")
    p.add_argument("--split", choices=["train", "validation", "test"], help="the run's own data instead of files")
    p.add_argument("--show", type=int, default=10, help="utterances printed with --split")
    args = p.parse_args(argv)
    if bool(args.files) == bool(args.split):
        raise SystemExit("give WAV files or --split, not both (nor neither)")
    from bigmodel_jax import checkpoint, transfer

    which = "best" if checkpoint.read_meta(Path(args.workdir) / "best") is not None else "latest"
    model, cfg, step = transfer.load_trained(args.workdir, which)
    if cfg.task != "ctc":
        raise SystemExit(f"{args.workdir} is a {cfg.task!r} run; transcription needs a 'ctc' run")
    longest = cfg.model.max_frames * cfg.model.conv_stride * cfg.model.hop  # samples the position table covers
    if args.files:
        try:
            examples = [{"audio": asterisk.read_wav(f), "labels": np.zeros(0, np.int32)} for f in args.files]
        except (OSError, ValueError) as e:
            raise SystemExit(str(e)) from None
        for f, e in zip(args.files, examples):
            if len(e["audio"]) > longest:
                raise SystemExit(f"{f}: {len(e['audio']) / cfg.model.sample_rate:.1f} s; this model takes at most "
                                 f"{longest / cfg.model.sample_rate:g} s (model.max_frames): cut it shorter")
        for f, text in zip(args.files, transcribe(model, cfg, examples)):
            print(f"{f}\t{text}")
        return 0
    everything = asterisk.load(cfg.data.tfds_dir, cfg.data.path)[args.split]
    records = [r for r in everything if len(r["audio"]) <= longest]
    examples = [{"audio": r["audio"], "labels": np.array(ctc.encode_text(r["text"]), np.int32)} for r in records]
    hypotheses = transcribe(model, cfg, examples)
    references = [asterisk.normalize(r["text"]) for r in records]
    print(f"{args.workdir} (step {step}), {args.split}: {len(records)} utterances ({len(everything) - len(records)} "
          f"over {longest / cfg.model.sample_rate:g} s left out; the trainer left out those over "
          f"{cfg.data.max_seconds:g} s)")
    for r, ref, hyp in list(zip(records, references, hypotheses))[:args.show]:
        print(f"{r['name']}\n  ref: {ref}\n  hyp: {hyp}")
    scores = eval_metrics.speech_errors(hypotheses, references)
    print(f"CER {scores['cer']:.3f}  WER {scores['wer']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
