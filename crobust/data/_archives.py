"""Readers for the genuine distribution files of MNIST, CIFAR-10, CIFAR-100 and SVHN, and their published checksums.

Each reader returns ``(train_images, train_labels, test_images, test_labels)`` as uint8 (N, H, W, C) and int32 (N,).
Layouts (as the files are published, and as tfds' own builders read them):

- CIFAR-10 ``cifar-10-binary.tar.gz``: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``; each
  record is 1 label byte then 3072 image bytes in CHW order (1024 R, 1024 G, 1024 B, each row-major 32×32).
- CIFAR-100 ``cifar-100-binary.tar.gz``: ``cifar-100-binary/train.bin`` and ``test.bin``; each record is a coarse
  label byte, a fine label byte, then 3072 CHW bytes. We use the fine label (100 classes), as the reference does.
- MNIST ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``: gzip'd IDX files, big-endian headers: images magic
  2051 (0x00000803), count, rows, cols, then pixels row-major; labels magic 2049 (0x00000801), count, then bytes.
- SVHN (cropped digits) ``{train,test}_32x32.mat``: MATLAB files with ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1)
  in 1..10, where 10 is the digit 0 (so the label is y mod 10, as in tfds and torchvision).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import tarfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from crobust._errors import CrobustError


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A published file: where it is and its size (bytes) and sha256."""

    filename: str
    url: str
    size: int
    sha256: str


# Copied from the installed tensorflow_datasets 4.9.10 (``url_checksums/cifar10.txt``, ``cifar100.txt``,
# ``mnist.txt``, ``datasets/svhn_cropped/checksums.tsv``); tests/test_data.py checks they still agree with it.
PUBLISHED: dict[str, RemoteFile] = {f.filename: f for f in [
    RemoteFile("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
               170052171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    RemoteFile("cifar-100-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
               168513733, "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
    RemoteFile("train-images-idx3-ubyte.gz",
               "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz",
               9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "https://storage.googleapis.com/cvdf-datasets/mnist/train-labels-idx1-ubyte.gz",
               28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz",
               1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz",
               4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
               182040794, "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8"),
    RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
               64275384, "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b"),
]}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> Optional[str]:
    """None if ``path`` has the published size and sha256 of the file of its name, else a short reason.

    The size is compared first, so a file of the wrong size is rejected without hashing it.
    """
    published = PUBLISHED[path.name]
    size = path.stat().st_size
    if size != published.size:
        return f"size {size} ≠ published {published.size}"
    digest = sha256_of(path)
    if digest != published.sha256:
        return f"sha256 {digest[:12]}… ≠ published {published.sha256[:12]}…"
    return None


def _malformed(path, why) -> CrobustError:
    return CrobustError(f"{path} is not a valid file of its kind: {why}")


# ---------------------------------------------------------------------------------------------------------- CIFAR

def _cifar_records(data: bytes, n_label_bytes: int, label_index: int, where) -> tuple[np.ndarray, np.ndarray]:
    record = n_label_bytes + 3072
    if len(data) == 0 or len(data) % record:
        raise _malformed(where, f"{len(data)} bytes is not a whole number of {record}-byte records")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    labels = rows[:, label_index].astype(np.int32)
    images = rows[:, n_label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW → HWC
    return np.ascontiguousarray(images), labels


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    n_label_bytes: int
    label_index: int


CIFAR10 = _CifarLayout("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                       tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, 0)
CIFAR100 = _CifarLayout("cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",), 2, 1)


def _read_cifar(layout: _CifarLayout, get_bytes: Callable[[str], bytes], where) -> Arrays:
    out = []
    for names in (layout.train, layout.test):
        parts = [_cifar_records(get_bytes(name), layout.n_label_bytes, layout.label_index, f"{where}:{name}")
                 for name in names]
        out += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
    return tuple(out)


def read_cifar_archive(layout: _CifarLayout, path: Path) -> Arrays:
    """Read a genuine ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` without extracting it to disk."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            def get_bytes(name):
                try:
                    return tar.extractfile(f"{layout.folder}/{name}").read()
                except KeyError:
                    raise _malformed(path, f"no member {layout.folder}/{name}") from None
            return _read_cifar(layout, get_bytes, path)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise _malformed(path, f"{type(e).__name__}: {e}") from None


def read_cifar_folder(layout: _CifarLayout, folder: Path) -> Arrays:
    """Read an already extracted ``cifar-10-batches-bin/`` / ``cifar-100-binary/`` folder."""
    return _read_cifar(layout, lambda name: (folder / name).read_bytes(), folder)


# ---------------------------------------------------------------------------------------------------------- MNIST

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _read_idx(path: Path, magic: int, n_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise _malformed(path, f"{type(e).__name__}: {e}") from None
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise _malformed(path, "shorter than its IDX header")
    found, *dims = np.frombuffer(data[:header], ">u4").tolist()
    if found != magic:
        raise _malformed(path, f"IDX magic {found:#010x} ≠ {magic:#010x}")
    if len(data) - header != int(np.prod(dims)):
        raise _malformed(path, f"{len(data) - header} data bytes for IDX dimensions {dims}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_mnist_files(paths: dict[str, Path]) -> Arrays:
    """Read the four gzip'd IDX files (keys: :data:`MNIST_FILES`). Images come back (N, 28, 28, 1)."""
    out = []
    for split in ("train", "t10k"):
        images = _read_idx(paths[f"{split}-images-idx3-ubyte.gz"], 2051, 3)
        labels = _read_idx(paths[f"{split}-labels-idx1-ubyte.gz"], 2049, 1)
        if len(images) != len(labels):
            raise _malformed(paths[f"{split}-labels-idx1-ubyte.gz"], f"{len(labels)} labels for {len(images)} images")
        out += [np.ascontiguousarray(images[..., None]), labels.astype(np.int32)]
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------- SVHN

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError) as e:
        raise _malformed(path, f"{type(e).__name__}: {e}") from None
    if "X" not in mat or "y" not in mat:
        raise _malformed(path, "no X / y variables")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise _malformed(path, f"X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise _malformed(path, "labels outside 1..10")
    images = np.ascontiguousarray(np.moveaxis(x, -1, 0)).astype(np.uint8)  # (32,32,3,N) → (N,32,32,3)
    return images, (y.astype(np.int64) % 10).astype(np.int32)  # 10 means the digit 0


def read_svhn_files(paths: dict[str, Path]) -> Arrays:
    """Read ``train_32x32.mat`` and ``test_32x32.mat`` (keys: :data:`SVHN_FILES`)."""
    return _read_svhn_mat(paths["train_32x32.mat"]) + _read_svhn_mat(paths["test_32x32.mat"])
