"""Preparing data files once and whole: a TFDS builder's when several processes start at the same
moment, a trained tokenizer's so that a kill never leaves half of them."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # for the annotation only: the tokenizers import this module without TFDS
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


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    """Every record of a prepared split, in stored order. Truncated or corrupt array_record files
    raise with the folder to delete (a rerun rebuilds it)."""
    try:
        source = builder.as_data_source(split=split)
        return [source[i] for i in range(len(source))]
    except Exception as e:
        raise ValueError(f"the prepared dataset in {builder.data_dir} is unreadable ({type(e).__name__}: {e}); "
                         "delete that folder and rerun to rebuild it") from e


def text(value) -> str:
    """A TFDS Text feature as str (a data source hands it back as bytes)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def save_whole(save: Callable[[Path], Any], path: Path) -> Path:
    """save(temporary path) then one rename onto `path` (a file or a folder): a process killed
    while saving leaves no `path` at all, so its rerun trains the tokenizer again (the same one:
    training is deterministic) instead of finding a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    if tmp.is_dir():  # left by a process killed while saving
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    save(tmp)
    tmp.replace(path)
    return path
