"""Per-member train/validation splits, in JAX so that a population trainer can draw them under ``jax.vmap``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError


def validation_sizes(n_train: int, val_ratio: float) -> tuple[int, int]:
    """(n_fit, n_val) with n_val = ⌊val_ratio · n_train⌋ and n_fit = n_train − n_val.

    This is the reference's ``random_split`` of [N − ⌊0.1N⌋, ⌊0.1N⌋] (CIFAR-10: 45,000 / 5,000), with the same
    float arithmetic (``math.floor(val_ratio * n)``). ``val_ratio = 0`` gives an empty validation set.
    """
    if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1:
        raise CrobustError(f"n_train must be a positive integer, got {n_train!r}")
    if not 0.0 <= float(val_ratio) < 1.0:
        raise CrobustError(f"val_ratio must be in [0, 1), got {val_ratio!r}")
    n_val = math.floor(float(val_ratio) * int(n_train))
    if n_val >= n_train:
        raise CrobustError(f"val_ratio {val_ratio} leaves no training examples out of {n_train}")
    return int(n_train) - n_val, n_val


def validation_split(key: jax.Array, n_train: int, val_ratio: float) -> tuple[jax.Array, jax.Array]:
    """Split indices 0..n_train−1 into (fit_idx, val_idx) at random.

    Args:
      key: a ``jax.random.key``; one per member (e.g. ``fold_in(run_key, member)``), so each member gets its own
        split, as the reference's split changes with the run seed.
      n_train: size of the training split (a Python int: the output shapes are static).
      val_ratio: fraction in [0, 1) held out; n_val = ⌊val_ratio · n_train⌋ (:func:`validation_sizes`).

    Returns:
      fit_idx int32 (n_train − n_val,) and val_idx int32 (n_val,): disjoint, together 0..n_train−1, each sorted
      ascending (the order carries no information; batches are drawn by the trainer's own per-epoch permutation,
      and sorted gathers are friendlier to memory). Like ``random_split``, the fit part is the first
      n_train − n_val entries of one uniform permutation and the validation part the rest (JAX's generator, so
      the indices are not those of torch).

    Traceable: call it under ``jax.jit`` / ``jax.vmap`` over keys (see :func:`member_splits`).
    """
    n_fit, _ = validation_sizes(n_train, val_ratio)
    perm = jax.random.permutation(key, n_train).astype(jnp.int32)
    return jnp.sort(perm[:n_fit]), jnp.sort(perm[n_fit:])


def member_splits(keys: jax.Array, n_train: int, val_ratio: float) -> tuple[jax.Array, jax.Array]:
    """:func:`validation_split` vmapped over a leading member axis of keys (M,).

    Returns fit_idx int32 (M, n_train − n_val) and val_idx int32 (M, n_val).
    """
    return jax.vmap(lambda k: validation_split(k, n_train, val_ratio))(keys)
