"""Sample text from a trained causal LM.

    python -m bigmodel_jax.sample --workdir runs/gpt_char --prompt "ROMEO:" [--checkpoint best]
        [--greedy | --temperature 0.8 --top-k 40 --top-p 0.95] [--seed 0] [--max-new-tokens 300]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import jax

from bigmodel_jax.data.tokenizers import load_tokenizer
from bigmodel_jax.generate import generate
from bigmodel_jax.train import load_trained


def load_model(workdir: str | Path, which: str = "latest"):
    """(model, tokenizer, step) from a workdir's newest `latest` or `best` checkpoint."""
    model, cfg, step = load_trained(workdir, which)
    if cfg.task != "causal_lm":
        raise SystemExit(f"{workdir} holds a {cfg.task!r} model; sampling needs a causal LM (task 'causal_lm')")
    return model, load_tokenizer(workdir), step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores temperature/top-k/top-p)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1.0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=1)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    if args.temperature <= 0 and not args.greedy:
        p.error("--temperature must be > 0 (use --greedy for argmax decoding)")
    if not 0 < args.top_p <= 1:
        p.error("--top-p must be in (0, 1]")
    model, tokenizer, step = load_model(args.workdir, args.checkpoint)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        p.error("the prompt encodes to no tokens")
    prompt = jax.numpy.asarray([ids] * args.num_samples)
    out = generate(model, prompt, args.max_new_tokens, jax.random.PRNGKey(args.seed), greedy=args.greedy,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    print(f"# {args.checkpoint} checkpoint, step {step}", file=sys.stderr)
    for row in jax.device_get(out):
        print(tokenizer.decode(row))
        print("-" * 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
