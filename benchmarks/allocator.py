"""The trainer's GPT step under each memory allocator bigmodel_jax/allocator.py can choose, each in
its own process (an allocator is fixed when a process starts), rounds alternating the settings.

    python benchmarks/allocator.py [--sizes char,d512] [--dtypes bfloat16,float32] [--rounds 3] [--steps 8]
    python benchmarks/allocator.py --jemalloc /path/to/libjemalloc.so.2    # when it is not installed system-wide

Prints tok/s per setting (median and fastest step over all rounds) and the ratio to the process as
started ("system"). Settings: system; glibc-hugetlb (only glibc.malloc.hugetlb=1, the lever measured
first); glibc (allocator.GLIBC_TUNABLES, what the CLIs set when jemalloc is absent); jemalloc
(allocator.JEMALLOC_CONF, when the library is found).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import say  # noqa: E402
from bigmodel_jax import allocator  # noqa: E402

CHILD = """
import json, sys
from benchmarks.train_throughput import SIZES, time_ours
run, _ = time_ours(SIZES[sys.argv[1]], sys.argv[2], int(sys.argv[3]))
run()  # warm: the allocator's pools fill on the first steps after compiling
print(json.dumps(run()))
"""


def settings(jemalloc: str | None) -> dict[str, dict[str, str]]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", allocator.APPLIED, allocator.CHOICE)}
    out = {"system": clean,
           "glibc-hugetlb": {**clean, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
           "glibc": {**clean, "GLIBC_TUNABLES": allocator.GLIBC_TUNABLES}}
    if jemalloc:
        out["jemalloc"] = {**clean, "LD_PRELOAD": jemalloc, "MALLOC_CONF": allocator.JEMALLOC_CONF}
    return out


def step_times(env: dict[str, str], size: str, dtype: str, steps: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHILD, size, dtype, str(steps)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"the {size} {dtype} step failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="char,d512")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--jemalloc", default="", help="libjemalloc.so.2 (default: allocator.find_jemalloc())")
    args = p.parse_args()
    from benchmarks.train_throughput import SIZES

    envs = settings(args.jemalloc or allocator.find_jemalloc())
    print("| model (L/d/H/T/B/V) | dtype | " + " | ".join(f"{k} tok/s" for k in envs) + " | "
          + " | ".join(f"{k} / system" for k in list(envs)[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(envs) - 1))
    for size in args.sizes.split(","):
        layers, width, heads, seq, batch, vocab = SIZES[size]
        for dtype in args.dtypes.split(","):
            times: dict[str, list[float]] = {k: [] for k in envs}
            for r in range(args.rounds):
                for name, env in envs.items():
                    say(f"{size} {dtype} round {r + 1}: {name}")
                    times[name] += step_times(env, size, dtype, args.steps)
            tok = seq * batch
            median = {k: tok / statistics.median(v) for k, v in times.items()}
            best = {k: tok / min(v) for k, v in times.items()}
            cells = [f"{median[k]:,.0f} (best {best[k]:,.0f})" for k in envs]
            ratios = [f"{median[k] / median['system']:.2f}x" for k in list(envs)[1:]]
            print(f"| {size} {layers}/{width}/{heads}/{seq}/{batch}/{vocab} | {dtype} | " + " | ".join(cells + ratios)
                  + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
