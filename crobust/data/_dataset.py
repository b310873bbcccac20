"""The :class:`Dataset` record, the missing-data error, per-dataset statistics and host-side helpers."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError


class DataMissingError(CrobustError):
    """A dataset is not on this machine (and was not, or could not be, downloaded).

    The message is one line: which dataset, where it was looked for, and the URL or command that gets it.
    """


class UnverifiedDataWarning(UserWarning):
    """A local archive was read whose size or sha256 differs from the published file's."""


# docs/reference-code.md §3 (the reference's ``STATS``, torchvision ``Normalize`` on [0, 1] images).
REFERENCE_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification dataset held on the host as uint8 pixels.

    Attributes:
      name: the dataset's name as passed to :func:`load_dataset` (``"mnist"``, ``"digits"``, ...).
      train_images: uint8 (N_train, H, W, C), pixel values 0..255.
      train_labels: int32 (N_train,), values in [0, num_classes).
      test_images: uint8 (N_test, H, W, C).
      test_labels: int32 (N_test,).
      num_classes: number of classes (after any ``classes=`` selection).
      mean, std: per-channel statistics in [0, 1] pixel units; a model computes
        ``(images / 255 - mean) / std`` inside. Reference values for mnist/cifar10/cifar100/svhn; computed from the
        training images for digits and synthetic data (see :func:`channel_stats`).
      source: where the data came from, e.g. ``"sklearn digits"``, ``"archive /d/cifar-10-binary.tar.gz (sha256
        verified)"``, ``"tfds data_source cifar10 at /d"``, ``"synthetic_gaussian(seed=0, ...)"``.
      classes: the original class ids kept, in the order of the new labels (``None``: all classes, unchanged).
        Label ``i`` of this dataset is original class ``classes[i]``.

    The validation split is not part of the record: it differs per population member, see
    :func:`crobust.data.validation_split`.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    classes: Optional[tuple[int, ...]] = None

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise CrobustError(f"{self.name} {split}_images must be uint8 (N,H,W,C), got {x.dtype} {x.shape}")
            if y.dtype != np.int32 or y.shape != (x.shape[0],):
                raise CrobustError(f"{self.name} {split}_labels must be int32 ({x.shape[0]},), got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise CrobustError(f"{self.name} {split} labels outside [0, {self.num_classes})")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise CrobustError(f"{self.name}: train and test image shapes differ")
        channels = self.train_images.shape[-1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise CrobustError(f"{self.name}: mean/std need {channels} channel values")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.train_images.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_images.shape[0])

    def __repr__(self) -> str:
        classes = "" if self.classes is None else f", classes={self.classes}"
        return (f"Dataset({self.name!r}, train={self.n_train}, test={self.n_test}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes}{classes}, source={self.source!r})")


def to_float(images):
    """uint8 pixels (any shape) → float32 in [0, 1] (x / 255), as a jax array; meant to run on device."""
    return jnp.asarray(images).astype(jnp.float32) / 255.0


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population, ddof=0) std of uint8 images (N,H,W,C) in [0, 1] units, rounded to 4 digits.

    Used for digits and synthetic data, whose statistics are not published; computed on the training images only
    (validation members are carved out of them later, as the reference's statistics include its validation part).
    A channel with zero spread gets std 1 so that normalising never divides by zero.
    """
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def select_classes(dataset: Dataset, classes: Sequence[int]) -> Dataset:
    """Keep only ``classes`` (original ids) and relabel them 0..len(classes)-1 in the order given.

    ``classes=(3, 5)`` makes a binary 3-vs-5 task with 3 → 0 and 5 → 1. Image order within each split is kept.
    Statistics (mean, std) are carried over unchanged.
    """
    try:
        classes = tuple(int(c) for c in classes)
    except (TypeError, ValueError):
        raise CrobustError(f"classes must be a sequence of class ids, got {classes!r}") from None
    base = dataset.classes or tuple(range(dataset.num_classes))
    if len(classes) < 2 or len(set(classes)) != len(classes) or any(c not in base for c in classes):
        raise CrobustError(f"classes must be ≥ 2 distinct ids among {base[0]}..{base[-1]} of {dataset.name}, "
                           f"got {classes}")
    current = [base.index(c) for c in classes]  # ids in the dataset's current labelling
    lookup = np.full(dataset.num_classes, -1, np.int32)
    lookup[current] = np.arange(len(classes), dtype=np.int32)

    def pick(x, y):
        keep = lookup[y] >= 0
        return x[keep], lookup[y[keep]]

    xtr, ytr = pick(dataset.train_images, dataset.train_labels)
    xte, yte = pick(dataset.test_images, dataset.test_labels)
    return dataclasses.replace(dataset, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                               num_classes=len(classes), classes=classes)


def _stratified_indices(labels: np.ndarray, n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` items whose class counts are proportional to the class frequencies in ``labels``.

    Largest-remainder rounding of n·p_c (ties broken by class id), then a uniform random choice within each class.
    """
    counts = np.bincount(labels, minlength=num_classes)
    quota = n * counts / counts.sum()
    take = np.floor(quota).astype(int)
    remainder = quota - take
    for c in np.argsort(-remainder, kind="stable")[: n - take.sum()]:
        take[c] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=take[c], replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def subsample(dataset: Dataset, n_train: Optional[int] = None, n_test: Optional[int] = None, *,
              seed: int = 0) -> Dataset:
    """A stratified random subset of the train and/or test split, for smoke presets.

    Class proportions are preserved (largest-remainder rounding), the chosen images keep their original order,
    and the choice is a function of ``seed`` only (numpy ``default_rng(seed)``, train and test drawn from
    independent streams). ``None`` or a size ≥ the split's size keeps that split whole. Statistics are unchanged.
    """
    out = {}
    for split, n, stream in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
        if n is None or n >= len(y):
            continue
        if int(n) != n or n < 1:
            raise CrobustError(f"subsample n_{split} must be a positive integer, got {n!r}")
        rng = np.random.default_rng([seed, stream])
        idx = _stratified_indices(y, int(n), dataset.num_classes, rng)
        out[f"{split}_images"], out[f"{split}_labels"] = x[idx], y[idx]
    return dataclasses.replace(dataset, **out)
