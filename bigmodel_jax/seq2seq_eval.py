"""Decode a seq2seq run's held-out split (beam search or greedy) and score it beside the retrieval
baseline (the training target of the most similar training source).

    python -m bigmodel_jax.seq2seq_eval --workdir runs/t5_ja_en [--checkpoint best] [--split test]
        [--beams 4] [--length-penalty 1.0] [--limit 0] [--examples 3]

Scores: sacrebleu BLEU and chrF for translation and pair files (Japanese output's BLEU counts
characters), phoneme and word error rates (jiwer) for G2P; as fractions, like the trainer's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bigmodel_jax import baselines
from bigmodel_jax.data import spm
from bigmodel_jax.generate import Sampling, beam_search, generate
from bigmodel_jax.tasks import seq2seq
from bigmodel_jax.transfer import load_trained


def decode_split(model, tok: spm.T5Vocabulary, sources: list[str], source_len: int, max_new: int,
                 beams: int, length_penalty: float, batch: int = 32) -> list[str]:
    """Each source's output text, decoded in batches (sources cut to source_len tokens, eos kept)."""
    ids = [seq2seq.cut(s, source_len) for s in tok.encode(sources)]
    out = []
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        start_tokens = [[tok.pad_id]] * len(chunk)
        if beams > 1:
            rows, _ = beam_search(model, start_tokens, max_new, num_beams=beams, length_penalty=length_penalty,
                                  stop_tokens=[tok.eos_id], pad_id=tok.pad_id, source=chunk)
        else:
            rows = generate(model, start_tokens, max_new, sampling=Sampling(greedy=True), stop_tokens=[tok.eos_id],
                            pad_id=tok.pad_id, source=chunk)
        out.extend(tok.decode(r) for r in rows)
    return out


def retrieval_scores(cfg, splits: dict[str, list[dict]], records: list[dict]) -> tuple[str, dict[str, float]]:
    """The baseline a model must beat: each record's output is the target of the training source
    nearest by TF-IDF (characters for Japanese and spelled words, else words). Returns (analyzer, scores)."""
    analyzer = "char" if cfg.data.dataset in ("bible_ja_en", "cmudict") else "word"
    memory = baselines.retrieval([(r["source"], t) for r in splits["train"] for t in r["targets"][:1]],
                                 [r["source"] for r in records], analyzer)
    reference = seq2seq.Reference([r["targets"] for r in records], str, cfg.data.dataset)  # texts: nothing to decode
    return analyzer, seq2seq.score_texts(memory, reference)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.seq2seq_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--checkpoint", choices=("latest", "best"), default="best")
    p.add_argument("--split", choices=("validation", "test"), default="test")
    p.add_argument("--beams", type=int, default=4, help="1 = greedy")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--limit", type=int, default=0, help="score the first N examples only (0 = all)")
    p.add_argument("--examples", type=int, default=3, help="print this many source / output / reference triples")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.beams < 1 or args.limit < 0:
        p.error("--beams must be >= 1 and --limit >= 0")
    logging.basicConfig(level=logging.WARNING, force=True)
    try:
        model, cfg, step = load_trained(args.workdir, args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if cfg.task != "seq2seq":
        raise SystemExit(f"error: {args.workdir} holds a {cfg.task!r} model, not a seq2seq one")
    tok = spm.load(Path(args.workdir) / "tokenizer")
    splits = seq2seq.DATASETS[cfg.data.dataset](cfg.data)
    records = splits[args.split][:args.limit or None]
    sources, targets = [r["source"] for r in records], [r["targets"] for r in records]
    hyps = decode_split(model, tok, sources, cfg.data.source_len, cfg.data.target_len, args.beams,
                        args.length_penalty)
    analyzer, base = retrieval_scores(cfg, splits, records)
    ours = seq2seq.score_texts(hyps, seq2seq.Reference(targets, tok.decode, cfg.data.dataset))
    how = f"beam search ({args.beams} beams)" if args.beams > 1 else "greedy"
    print(f"# {args.workdir}, {args.checkpoint} checkpoint (step {step}), {args.split} split: {len(records):,} "
          f"examples, {how}")
    print("| | " + " | ".join(ours) + " |\n|---|" + "---:|" * len(ours))
    print("| model | " + " | ".join(f"{v:.4f}" for v in ours.values()) + " |")
    print(f"| retrieval ({analyzer} TF-IDF nearest source) | " + " | ".join(f"{v:.4f}" for v in base.values()) + " |")
    for src, hyp, ref in list(zip(sources, hyps, targets))[:args.examples]:
        print(f"\nsource: {src}\noutput: {hyp}\nreference: {ref[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
