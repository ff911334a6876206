"""Generate text from a trained causal LM or from real pretrained decoder weights, streaming it; or
an encoder-decoder's output for a source text (a seq2seq workdir or a Hugging Face T5 directory
with its spiece.model or tokenizer.json: --prompt is the source).

    python -m bigmodel_jax.sample --workdir runs/gpt_char --prompt "ROMEO:" [--checkpoint best]
    python -m bigmodel_jax.sample --workdir runs/t5_ja_en --prompt "元始に神天地を創造たまへり" --beams 4
    python -m bigmodel_jax.sample --model smollm2 --prompt "What is gravity?"     # chat, SmolLM2-135M GGUF
    python -m bigmodel_jax.sample --model HF_DIR --prompt "..."                   # a GPT-2 / Llama directory
    python -m bigmodel_jax.sample --model FILE.gguf --prompt "..."

    [--greedy | --temperature 0.8 --top-k 40 --top-p 0.95] [--repetition-penalty 1.2] [--seed 0]
    [--max-new-tokens 300] [--num-samples 1] [--beams 4 --length-penalty 1.0] [--bf16-cache]
    [--system "..."] [--no-chat] [--no-stream]

With a chat template (SmolLM2's ships in its GGUF file), the prompt is the user's message and the
reply stops at the model's end-of-turn token; --no-chat feeds the prompt as raw text.
"""

from __future__ import annotations

if __name__ == "__main__":  # the allocator is fixed when a process starts: choose it before jax loads
    from bigmodel_jax import allocator

    allocator.reexec()

import argparse
import json
import logging
import sys
from pathlib import Path

import jax.numpy as jnp

from bigmodel_jax.generate import Sampling, beam_search, stream


def load_workdir(workdir: str | Path, which: str = "latest"):
    """(model, tokenizer, step) from a workdir's newest `latest` or `best` checkpoint."""
    from bigmodel_jax.data.tokenizers import load_tokenizer
    from bigmodel_jax.transfer import load_trained

    model, cfg, step = load_trained(workdir, which)
    if cfg.task == "seq2seq":
        from bigmodel_jax.data import spm

        return model, spm.load(Path(workdir) / "tokenizer"), step
    if cfg.task != "causal_lm":
        raise SystemExit(f"{workdir} holds a {cfg.task!r} model; sampling needs a causal LM (task 'causal_lm') "
                         "or an encoder-decoder (task 'seq2seq')")
    return model, load_tokenizer(workdir), step


def load_pretrained(name: str, dtype: str = "float32"):
    """(model, tokenizer) for --model: 'smollm2', a .gguf file, or a Hugging Face directory."""
    from bigmodel_jax import decoder_sources

    path = Path(name)
    if name == "smollm2" or path.suffix == ".gguf":
        return decoder_sources.load(name, dtype)
    if not path.is_dir():
        raise SystemExit(f"--model {name}: not 'smollm2', a .gguf file or a Hugging Face directory")
    if _model_type(path) == "t5":
        from bigmodel_jax.data import spm
        from bigmodel_jax.hf_t5 import load_t5_dir

        try:
            return load_t5_dir(path, dtype), spm.load(path)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"--model {name}: {e}") from None
    model, tokenizer = decoder_sources.load(name, dtype)
    if tokenizer is None:
        raise SystemExit(f"{path} has no tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    return model, tokenizer


def _model_type(directory: Path) -> str | None:
    try:
        return json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None  # load_decoder_dir names the problem


def _decode(tokenizer, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special=True)
    except TypeError:  # the char / BPE tokenizers trained here have no special tokens
        return tokenizer.decode(ids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bigmodel_jax.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a training run's folder")
    src.add_argument("--model", help="'smollm2', a .gguf file or a Hugging Face GPT-2 / Llama directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (--model)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores temperature/top-k/top-p)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1.0 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats; 1.0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--beams", type=int, default=0, help="beam search with this many beams (deterministic)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = log p / length ** this")
    p.add_argument("--bf16-cache", action="store_true", help="keep the KV cache in bfloat16")
    p.add_argument("--int8", action="store_true", help="int8 weight-only quantization (bigmodel_jax/quantize.py)")
    p.add_argument("--system", default=None, help="a system message for chat models")
    p.add_argument("--no-chat", action="store_true", help="feed the prompt as raw text, without the chat template")
    p.add_argument("--no-stream", action="store_true", help="print only when generation ends")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, force=True)
    try:
        sampling = Sampling(greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty)
    except ValueError as e:
        p.error(str(e))
    if args.max_new_tokens < 1 or args.num_samples < 1 or args.beams < 0:
        p.error("--max-new-tokens and --num-samples must be >= 1, --beams >= 0")
    try:
        return _generate(args, sampling, p)
    except (OSError, ValueError) as e:  # a missing workdir or file, a prompt beam search cannot fit, ...
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace, sampling: Sampling, p: argparse.ArgumentParser) -> int:
    if args.workdir:
        model, tokenizer, step = load_workdir(args.workdir, args.checkpoint)
        header, stops, text, chat = f"# {args.checkpoint} checkpoint, step {step}", (), args.prompt, False
    else:
        model, tokenizer = load_pretrained(args.model, args.dtype)
        header, stops, text = f"# {args.model}", getattr(tokenizer, "eos_ids", ()), args.prompt
        chat = bool(getattr(tokenizer, "chat_template", None)) and not args.no_chat
        if chat:
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
                {"role": "user", "content": args.prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if args.int8:
        from bigmodel_jax.quantize import quantize_int8

        model, header = quantize_int8(model), header + ", int8 weights"
    seq2seq = hasattr(model, "encode")  # an encoder-decoder: the prompt is its source, its decoder starts blank
    if seq2seq and not args.prompt.strip():
        p.error("--prompt is empty: give the source text to translate or transcribe")
    ids = tokenizer.encode([text])[0] if seq2seq else tokenizer.encode(text)
    if not ids:
        p.error("the prompt encodes to no tokens")
    print(header, file=sys.stderr)
    cache_dtype = jnp.bfloat16 if args.bf16_cache else None
    prompts = [ids] * args.num_samples
    source = None
    if seq2seq:
        source, prompts, stops, chat = prompts, [[tokenizer.pad_id]] * args.num_samples, (tokenizer.eos_id,), True
        args.max_new_tokens = min(args.max_new_tokens, model.cfg.max_len - 1)  # the decoder's cache

    if args.beams:
        out, scores = beam_search(model, prompts[:1], args.max_new_tokens, num_beams=args.beams,
                                  length_penalty=args.length_penalty, stop_tokens=stops, cache_dtype=cache_dtype,
                                  source=None if source is None else source[:1])
        print(("" if chat else args.prompt) + _decode(tokenizer, out[0]))
        print(f"# beam score {scores[0]:.4f}", file=sys.stderr)
        return 0
    chunks = stream(model, prompts, args.max_new_tokens, sampling=sampling, seed=args.seed, stop_tokens=stops,
                    cache_dtype=cache_dtype, chunk=None if args.no_stream or args.num_samples > 1 else 4,
                    source=source)
    rows = [[] for _ in prompts]
    shown = ""
    echo = "" if chat else args.prompt  # a raw LM continues the prompt; a chat model answers it
    if args.num_samples == 1 and not args.no_stream:
        print(echo, end="", flush=True)
    for chunk in chunks:
        for row, new in zip(rows, chunk):
            row += new
        if args.num_samples == 1 and not args.no_stream:
            text_so_far = _decode(tokenizer, rows[0])
            if not text_so_far.endswith("\ufffd"):  # hold back a half-decoded multi-byte character
                print(text_so_far[len(shown):], end="", flush=True)
                shown = text_so_far
    if args.num_samples == 1 and not args.no_stream:
        print(_decode(tokenizer, rows[0])[len(shown):])
        return 0
    for row in rows:
        print(echo + _decode(tokenizer, row))
        print("-" * 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
