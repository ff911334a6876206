"""python -m experiments.speech --workdir runs/ctc_asterisk
The CTC recognizer's test CER / WER beside three baselines on the same utterances (the config's split, those
the trainer kept), as a table in experiments/results/speech/summary.md:

- empty: no output (CER = WER = 1);
- constant: the one training transcript with the lowest validation CER, said for every test utterance;
- nearest: the transcript of the training utterance nearest in mean and std of its log-mel frames (cosine),
  a memorizer: it scores where the test prompts repeat training sentences and cannot spell a new one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from bigmodel_jax import audio, eval_metrics
from bigmodel_jax.data import asterisk
from bigmodel_jax.tasks import ctc
from bigmodel_jax.transcribe import transcribe

OUT = Path(__file__).parent / "results" / "speech"


def pooled(cfg, examples: list[dict]) -> np.ndarray:
    """[N, 2M] mean and std over each utterance's log-mel frames, unit length."""
    m = cfg.model
    rows = []
    for e in examples:
        f = np.asarray(audio.log_mel(jnp.asarray(e["audio"][None], jnp.float32) / 32768.0, sample_rate=m.sample_rate,
                                     n_fft=m.n_fft, hop=m.hop, n_mels=m.num_mels))[0]
        rows.append(np.concatenate([f.mean(0), f.std(0)]))
    x = np.stack(rows)
    x = x - x.mean(0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a finished ctc run")
    args = p.parse_args(argv)
    from bigmodel_jax import transfer

    model, cfg, step = transfer.load_trained(args.workdir, "best")
    splits = asterisk.load(cfg.data.tfds_dir, cfg.data.path)
    kept = {name: ctc.examples(cfg, records)[0] for name, records in splits.items()}
    refs = {name: [e["text"] for e in ex] for name, ex in kept.items()}
    test = refs["test"]
    rows = {"empty": eval_metrics.speech_errors([""] * len(test), test)}
    best = min(set(refs["train"]), key=lambda t: eval_metrics.speech_errors([t] * len(refs["validation"]),
                                                                            refs["validation"])["cer"])
    rows[f"constant ({best!r})"] = eval_metrics.speech_errors([best] * len(test), test)
    train_x, test_x = pooled(cfg, kept["train"]), pooled(cfg, kept["test"])
    nearest = (test_x @ train_x.T).argmax(1)
    rows["nearest training utterance"] = eval_metrics.speech_errors([refs["train"][i] for i in nearest], test)
    ours = transcribe(model, cfg, kept["test"])
    rows[f"CTC recognizer (step {step})"] = eval_metrics.speech_errors(ours, test)
    seen = sum(t in set(refs["train"]) for t in test)
    lines = [f"Test split: {len(test)} utterances, {seen} of them with a transcript also in training "
             f"({sum(len(e['audio']) for e in kept['test']) / cfg.model.sample_rate / 60:.1f} min).", "",
             "| system | CER | WER |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['cer']:.3f} | {r['wer']:.3f} |" for name, r in rows.items()]
    lines += ["", "Examples (reference / CTC greedy):", ""]
    lines += [f"- `{r}`  \n  `{h}`" for r, h in list(zip(test, ours))[:8]]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    (OUT / "summary.json").write_text(json.dumps({"workdir": args.workdir, "step": step, "rows": rows,
                                                  "test_utterances": len(test), "repeated_transcripts": seen},
                                                 indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
