"""Preparing a TFDS builder's files once when several processes start at the same moment."""

from __future__ import annotations

import fcntl
from pathlib import Path

import tensorflow_datasets as tfds


def prepare(builder: tfds.core.DatasetBuilder) -> None:
    """builder.download_and_prepare() under an exclusive file lock in its data_dir: the points of
    a sweep started together (experiments.sweep --jobs N) would otherwise all generate the same
    dataset and race to rename it into place (FileExistsError). The first process prepares; the
    others wait, then find it ready (a no-op) and read its split info. Multi-host runs need no lock: process 0 prepares
    while the others wait at a barrier."""
    root = Path(builder.data_dir).parent.parent  # data_dir is <root>/<name>/<version>
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{builder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            builder.download_and_prepare()
            # a builder made while another process was still writing read no split info then
            builder.info.read_from_directory(builder.data_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
