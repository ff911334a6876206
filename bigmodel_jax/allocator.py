"""The memory allocator the command-line entry points run under, chosen before jax starts.

Why: XLA:CPU frees its large temporary buffers after every step; glibc hands such blocks back to
the kernel (they are mmap'ed), and the kernel zero-fills fresh pages when the next step asks again.
On the 2-core CPU that was about a third of a training step (docs/speed.md). An allocator that keeps
freed pages (jemalloc with decay off) or glibc tunables that keep them in the heap remove most of it.
Both must be set when the process starts (LD_PRELOAD, GLIBC_TUNABLES), so `python -m
bigmodel_jax.train` and `sample` re-execute themselves once with them, before importing jax.

BIGMODEL_ALLOCATOR picks: "auto" (default: jemalloc when the library is installed, else glibc
tunables), "jemalloc", "glibc", or "system" (leave the process as started). Linux only; elsewhere
nothing changes. Variables the user already set (LD_PRELOAD, MALLOC_CONF, GLIBC_TUNABLES) are kept
and added to, never replaced.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path
from typing import Mapping

CHOICE = "BIGMODEL_ALLOCATOR"
APPLIED = "BIGMODEL_ALLOCATOR_APPLIED"  # set in the re-executed process: never twice
CHOICES = ("auto", "jemalloc", "glibc", "system")
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
# Freed pages stay with the process (no decay back to the kernel), big blocks come from the same arenas.
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
# glibc: blocks up to 32 MiB (the most glibc allows) from the heap instead of fresh mmaps, a freed
# top of heap never trimmed, and the heap on transparent huge pages (fewer faults when it grows).
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1099511627776:glibc.malloc.hugetlb=1"


def find_jemalloc() -> str | None:
    for path in JEMALLOC_PATHS:
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("jemalloc")
    return name if name and Path(name).is_absolute() and Path(name).is_file() else None


def environment(env: Mapping[str, str], jemalloc: str | None) -> dict[str, str]:
    """The variables to add to env for its BIGMODEL_ALLOCATOR choice ({} when nothing changes)."""
    choice = env.get(CHOICE, "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{CHOICE}={choice!r}; valid: {', '.join(CHOICES)}")
    if choice == "system" or env.get(APPLIED) or not sys.platform.startswith("linux"):
        return {}
    if choice == "jemalloc" and jemalloc is None:
        raise ValueError(f"{CHOICE}=jemalloc but no libjemalloc.so.2 was found (looked in {', '.join(JEMALLOC_PATHS)}"
                         "): install it (apt install libjemalloc2) or use auto")
    if choice in ("auto", "jemalloc") and jemalloc is not None:
        if "jemalloc" in env.get("LD_PRELOAD", ""):
            return {}
        preload = " ".join(filter(None, [jemalloc, env.get("LD_PRELOAD", "")]))
        conf = ",".join(filter(None, [JEMALLOC_CONF, env.get("MALLOC_CONF", "")]))  # the user's settings win
        return {"LD_PRELOAD": preload, "MALLOC_CONF": conf, APPLIED: "jemalloc"}
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return {}
    return {"GLIBC_TUNABLES": ":".join(filter(None, [GLIBC_TUNABLES, env.get("GLIBC_TUNABLES", "")])), APPLIED: "glibc"}


def reexec() -> None:
    """Re-executes this process with the allocator's variables when they are not set yet; returns
    when nothing needs to change. A bad BIGMODEL_ALLOCATOR stops here with one line."""
    try:
        extra = environment(os.environ, find_jemalloc())
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not extra:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **extra})
