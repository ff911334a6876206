"""Does T5's span-corruption pretraining on the plays help translation at this scale? (issue 16)

    python -m experiments.span_pretraining                 # quick: 600 pretraining steps, 400 finetuning, seeds 0, 1
    python -m experiments.span_pretraining --full          # the configs' 4,000 and 6,000 steps, seeds 0, 1, 2
    python -m experiments.span_pretraining --span-workdir runs/t5_span_bible   # reuse a finished pretraining run
    python -m experiments.span_pretraining --direction ja_en --seeds 0       # the other direction, one seed

Task: English -> Japanese Bible verses (configs/t5_translate.py:en_ja; --direction ja_en the
reverse, into WORKDIR/ja_en), the small T5 (12 M params) and one 8,000-piece vocabulary trained on
the plays and both languages' training verses (configs/t5_span.py:bible). Two starts per seed, everything else equal:

  span    span corruption on the plays (15% noise, mean span 3), then finetuned;
  random  the same model and vocabulary from random init.

In en_ja, English is the source, so what the plays teach (English text) reaches the encoder and the
decoder must learn Japanese from the pairs either way; in ja_en the decoder writes English. The seed
draws the finetuning data order and dropout (and the random start's init). Each run is tested once
at its end with its best checkpoint (chrF on 64 validation verses), greedy, on the 525 verses of the
4 held-out books; the retrieval baseline (TF-IDF nearest training source verse, output its target)
is scored on the same verses.
Writes summary.md, curves.png and results.md into --workdir.
"""

from __future__ import annotations

from pathlib import Path

from experiments import arms, report, runs

CONFIG = str(arms.ROOT / "configs" / "t5_translate.py")
DIRECTIONS = {"en_ja": "English -> Japanese", "ja_en": "Japanese -> English"}
SPAN_CONFIG = str(arms.ROOT / "configs" / "t5_span.py") + ":bible"
METRIC = "val/chrf"
SPAN_STEPS = {"quick": 600, "full": 4000}
FINETUNE = {"quick": {"train.num_steps": 400, "train.eval_every": 100, "train.checkpoint_every": 100,
                      "optim.warmup_steps": 100},
            "full": {"train.num_steps": 6000, "train.eval_every": 500, "train.checkpoint_every": 500,
                     "optim.warmup_steps": 300}}
STARTS = {"span": lambda span: {"init_from": str(span)},
          "random": lambda span: {"data.tokenizer_dir": str(span / "tokenizer")}}


def retrieval(config: str) -> dict[str, float]:
    """The retrieval baseline's test scores for the task."""
    from bigmodel_jax import seq2seq_eval
    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.tasks import seq2seq

    cfg = load_config_file(config)
    splits = seq2seq.DATASETS[cfg.data.dataset](cfg.data)
    return seq2seq_eval.retrieval_scores(cfg, splits, splits["test"])[1]


def main(argv: list[str] | None = None) -> int:
    p = arms.parser("python -m experiments.span_pretraining", __doc__, "runs/ablations/span_pretraining")
    p.add_argument("--span-workdir", default="", help="a finished configs/t5_span.py:bible run; default: train one")
    p.add_argument("--direction", choices=tuple(DIRECTIONS), default="en_ja", help="the translation task (en_ja)")
    p.add_argument("--seeds", default="", help="comma-separated (default 0,1; --full 0,1,2)")
    args = p.parse_args(argv)
    workdir = Path(args.workdir) / ("" if args.direction == "en_ja" else "ja_en")
    mode = "full" if args.full else "quick"
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [0, 1, 2] if args.full else [0, 1]
    config = f"{CONFIG}:{args.direction}"
    for flag, value, default in (("--direction", args.direction, "en_ja"), ("--seeds", args.seeds, "")):
        args.command += f" {flag} {value}" if value != default else ""  # the summary's provenance line
    if args.span_workdir:
        span = Path(args.span_workdir).resolve()
        if not (span / "tokenizer" / "spiece.model").is_file():
            raise SystemExit(f"--span-workdir {span}: no span-corruption run there (tokenizer/spiece.model is missing)")
    else:
        arms.run_arm(Path(args.workdir) / "span_pretrain", SPAN_CONFIG, {}, {"train.num_steps": SPAN_STEPS[mode]},
                     [0], 1, "val/loss")
        span = (Path(args.workdir) / "span_pretrain" / "seed=0").resolve()
    for start, overrides in STARTS.items():
        arms.run_arm(workdir / start, config, {}, {**FINETUNE[mode], **overrides(span)}, seeds, args.jobs, METRIC)
    dirs = [workdir / start for start in STARTS]
    report.build(dirs, METRIC, ["init_from"], workdir)

    columns = ("test/bleu", "test/chrf", "val/chrf", "val/loss")
    scores: dict[str, dict[str, list[float]]] = {s: {c: [] for c in columns} for s in STARTS}
    for r in runs.find_runs(dirs):
        if r.status == "done":
            for c in columns:
                values = runs.metric_values(r, c)
                scores[r.sweep][c].append(values[0] if c.startswith("test") else values[1])
    rows = ["| start | " + " | ".join(columns) + " | runs |", "|---|" + "---:|" * (len(columns) + 1)]
    for start, by_column in scores.items():
        rows.append(f"| {start} | " + " | ".join(report.fmt(*report.mean_std(v)) for v in by_column.values())
                    + f" | {len(by_column[columns[0]])} |")
    base = retrieval(config)
    rows.append("| retrieval (TF-IDF nearest training source) | " + f"{base['bleu']:.4f} | {base['chrf']:.4f} | | | |")
    span_run = runs.load_run(span, "span_pretrain")
    characters = "; BLEU on characters" if args.direction == "en_ja" else ""
    text = "\n".join(rows) + (
        f"\n\n{DIRECTIONS[args.direction]}, test = 525 verses of Esther, Amos, Philippians, James (greedy"
        f"{characters}); val = best over the run (64 verses of Ruth, Jonah, Titus). Mean ± std over seeds {seeds}. "
        f"The span start was pretrained {span_run.summary.get('step', '?')} steps to validation loss "
        f"{runs.metric_values(span_run, 'val/loss')[1]:.3f} ({span}). Every run: results.md; curves.png.\n\n")
    info = {**scores, "retrieval": base}
    arms.write_summary(workdir, f"Span-corruption pretraining on the plays, then {DIRECTIONS[args.direction]}", text,
                       info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
