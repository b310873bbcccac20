"""Argument checks shared by every attack (private).

Static checks (names, shapes, dtypes) always run, also under ``jit``/``vmap`` tracing, because shapes are known at
trace time. Value checks (ε ≥ 0, images inside [0, 1], labels inside [0, C)) run only when the value is concrete;
on a tracer they are skipped, so every attack stays ``jit``- and ``vmap``-compatible with ε as a traced argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError, check_choice

NORMS = ("linf", "l2")
LABELS = ("true", "predicted")


def is_concrete(value) -> bool:
    """True when ``value`` holds numbers now (not a tracer inside jit / vmap / grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def check_norm(norm) -> str:
    """Return the canonical norm name (``'linf'`` or ``'l2'``; case-insensitive) or raise naming ``norm``."""
    canonical = norm.lower() if isinstance(norm, str) else norm
    check_choice("norm", canonical, NORMS)
    return canonical


def check_eps(eps, name: str = "eps"):
    """ε as a float32 scalar array; raise if it is not a scalar or (when concrete) negative or NaN."""
    with jax.ensure_compile_time_eval():
        eps = jnp.asarray(eps, jnp.float32)
    if eps.ndim != 0:
        raise CrobustError(f"{name} must be a scalar (one radius per call; vmap for a grid), got shape {eps.shape}")
    if is_concrete(eps):
        value = float(eps)
        if not value >= 0.0:  # also catches NaN
            raise CrobustError(f"{name} must be >= 0, got {value}")
    return eps


def check_images(x, name: str = "x"):
    """Images as float32 (N, ...) with at least one non-batch axis; when concrete, every value in [0, 1]."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise CrobustError(f"{name} must be a floating-point image array in [0, 1], got dtype {x.dtype}")
    x = x.astype(jnp.float32)
    if x.ndim < 2:
        raise CrobustError(f"{name} must have shape (N, ...) with at least one feature axis, got shape {x.shape}")
    if is_concrete(x):
        with jax.ensure_compile_time_eval():  # concrete inputs closed over by a jitted caller stay eager
            lo, hi = float(jnp.min(x)), float(jnp.max(x))
        if not (lo >= 0.0 and hi <= 1.0):
            raise CrobustError(f"{name} must lie in [0, 1] (pixel space; normalise inside the model), "
                               f"got values in [{lo}, {hi}]")
    return x


def logits_shape(logits_fn, x) -> tuple[int, int]:
    """(N, C) of ``logits_fn(x)``, found abstractly; raise when the output is not (N, C)."""
    out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != x.shape[0]:
        raise CrobustError(f"logits_fn must map x of shape {x.shape} to logits of shape (N={x.shape[0]}, C), "
                           f"got {shape if shape is not None else type(out).__name__}")
    return int(shape[0]), int(shape[1])


def check_labels(y, n: int, num_classes: int, name: str = "y"):
    """Integer labels of shape (N,) matching the logits (N, C); when concrete, values in [0, C)."""
    if y is None:
        raise CrobustError(f"{name} is required when labels='true' (pass labels='predicted' to use the model's "
                           "clean predictions)")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise CrobustError(f"{name} must be integer class indices of shape (N,), got dtype {y.dtype} "
                           f"(one-hot labels are not accepted)")
    if y.shape != (n,):
        raise CrobustError(f"{name} must have shape (N,) = ({n},) to match logits of shape ({n}, {num_classes}), "
                           f"got {y.shape}")
    if is_concrete(y) and n > 0:
        with jax.ensure_compile_time_eval():
            lo, hi = int(jnp.min(y)), int(jnp.max(y))
        if lo < 0 or hi >= num_classes:
            raise CrobustError(f"{name} must lie in [0, {num_classes}) to match logits with C={num_classes} "
                               f"classes, got values in [{lo}, {hi}]")
    return y.astype(jnp.int32)


def prepare(logits_fn, x, y, eps, norm, labels):
    """Common front of every attack: validated (x, y_used, eps, norm, C).

    ``labels='true'`` uses ``y``; ``labels='predicted'`` uses argmax ``logits_fn(x)`` (the reference code's ART
    default, which avoids label leaking) and ``y`` may be ``None``.
    """
    norm = check_norm(norm)
    check_choice("labels", labels, LABELS)
    x = check_images(x)
    eps = check_eps(eps)
    n, num_classes = logits_shape(logits_fn, x)
    if labels == "true":
        y = check_labels(y, n, num_classes)
    else:
        if y is not None:
            check_labels(y, n, num_classes)
        y = jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)
    return x, y, eps, norm, num_classes


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """A Python int ≥ ``minimum`` (static loop lengths and counts)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise CrobustError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_call(logits_fn, x, y, *, eps=0.0, norm="linf", labels="true", step_size=None, **_):
    """The value checks of :func:`prepare`, run eagerly on concrete arguments before an attack is compiled."""
    check_norm(norm)
    check_choice("labels", labels, LABELS)
    x = check_images(x)
    check_eps(eps)
    if step_size is not None:
        check_eps(step_size, "step_size")
    n, num_classes = logits_shape(logits_fn, x)
    if labels == "true" or y is not None:
        check_labels(y, n, num_classes)
