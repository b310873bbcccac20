"""The precision policy: which matrix products run at full float32 and which may run faster, in one place.

Why: on NVIDIA Ampere/Hopper GPUs JAX's *default* float32 matmul is TF32 (10-bit mantissa, ≈ 1e-3 relative error
per product; TPUs default to one bfloat16 pass, ≈ 4e-3). That is harmless for a training step and fatal for an
inequality check (Theorem 3.1 on a trained head), a comparison with a float64 or PyTorch reference (a literal
AutoAttack port), or a test that means "the same operation sequence". CPUs ignore the setting (always float32).

The policy (docs/design.md §5, "Precision policy"):

==============================================  =====================================================================
computation                                     precision
==============================================  =====================================================================
metrics, bounds, spectral quantities             **full float32** on every backend: traced inside :func:`full` (the
(:mod:`crobust.metrics`), attack/reference       ``jax.default_matmul_precision('highest')`` context) and/or every
parity checks (the test suite runs inside        product given ``precision=HIGHEST`` explicitly. Full float32 means
:func:`full`, tests/conftest.py)                 6 bf16 passes on TPU and true FP32 (no tensor cores) on GPU.
robust-accuracy evaluation                       the caller's context: trace it inside :func:`full` for numbers
                                                 comparable with the reference code (which evaluates in fp32).
the nuclear-norm penalty: its value ``tr(QᵀW)``  full float32 (:mod:`crobust._polar`): the guard that makes the value
and the polar iteration for its subgradient Q    exact assumes Q keeps W's singular vectors, which TF32/bf16
                                                 products lose at ~1e-3 (the module's docstring gives the figures)
training steps (forward, backward, optimiser,    the config field ``TrainConfig.matmul_precision``:
the other penalties' gradients)                  ``'float32'`` (default; = ``'highest'``; the reference code's
                                                 ``'high'`` lets GPUs use TF32, docs/reference-code.md §4),
                                                 ``'tf32'`` or ``'bf16'`` (opt-in speed settings, accelerators
                                                 only), applied by
                                                 :func:`training` around the traced step and recorded in config.json.
==============================================  =====================================================================

How it is enforced: :func:`full` is a context manager (and :func:`full_precision` a decorator) that sets
``jax.default_matmul_precision('highest')`` *while a function is traced*, so every ``dot_general`` and convolution
it emits carries ``precision = [HIGHEST, HIGHEST]`` in its StableHLO, whatever the caller's default.
:func:`dot_precisions` lists those precision attributes of a lowered function; the tests use it to check, on CPU,
that each metric lowered under a TF32 or bfloat16 default context still asks for HIGHEST (a CPU computes the same
numbers either way, so comparing values there could not catch a missing wrapper).

Decomposition routines (``svd``, ``eigh``, ``qr``, ``cholesky``) are LAPACK/cuSOLVER kernels that do not use tensor
cores and are unaffected by the setting; the Gram matrices and Newton–Schulz products around them are products and
follow the policy.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

import jax
from jax import lax

from crobust._errors import check_choice

#: explicit ``precision=`` argument for products that must be full float32 wherever they are traced.
HIGHEST = lax.Precision.HIGHEST

#: the names a config may use for the training precision → the ``jax.default_matmul_precision`` value.
TRAINING_PRECISIONS: dict[str, str] = {
    "float32": "highest",          # full float32 on every backend (default)
    "tf32": "tensorfloat32",       # NVIDIA tensor cores, 10-bit mantissa (≈ 1e-3 relative per product)
    "bf16": "bfloat16",            # one bfloat16 pass (TPU default; ≈ 4e-3 relative per product)
}
DEFAULT_TRAINING_PRECISION = "float32"


def full():
    """Context manager: products traced inside it run at full float32 (``jax.default_matmul_precision('highest')``).

    Use it around the *tracing* of a computation (inside a ``jax.jit``-decorated function body, or around the first
    call of a jitted function: the default precision is part of jit's cache key, so a call under another default
    traces again)."""
    return jax.default_matmul_precision("highest")


def full_precision(fn: Callable) -> Callable:
    """Decorator: trace/run ``fn`` inside :func:`full`. Put it *below* ``@jax.jit`` so that it acts at trace time::

        @jax.jit
        @full_precision
        def metric(w): ...
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with full():
            return fn(*args, **kwargs)
    return wrapped


def check_training_precision(name: str) -> str:
    """Validate a config's ``matmul_precision`` ('float32', 'tf32', 'bf16'); returns it (clear error otherwise)."""
    check_choice("matmul_precision", name, tuple(TRAINING_PRECISIONS))
    return name


def training(name: str = DEFAULT_TRAINING_PRECISION):
    """Context manager for a training step traced at the config's precision ('float32' | 'tf32' | 'bf16').

    Inside it, metrics and the nuclear-norm penalty still run at full float32: they open :func:`full` themselves."""
    return jax.default_matmul_precision(TRAINING_PRECISIONS[check_training_precision(name)])


_PRECISION_RE = re.compile(r"stablehlo\.(dot_general|convolution)\b[^\n]*?precision = \[([A-Z_]+), ([A-Z_]+)\]")
_PRODUCT_RE = re.compile(r"stablehlo\.(dot_general|convolution|dot)\b")


def dot_precisions(fn: Callable, *args, **kwargs) -> list[tuple[str, str]]:
    """The (lhs, rhs) precision of every ``dot_general``/``convolution`` in ``jax.jit(fn)`` lowered for ``args``
    under the *current* default precision (products written without a precision attribute are listed as
    ``('DEFAULT', 'DEFAULT')``). For tests: ``all(p == ('HIGHEST', 'HIGHEST') for p in ...)`` means every product
    of ``fn`` runs at full float32 on every backend."""
    text = jax.jit(fn).lower(*args, **kwargs).as_text()
    out = []
    for line in text.splitlines():
        if not _PRODUCT_RE.search(line):
            continue
        m = _PRECISION_RE.search(line)
        out.append((m.group(2), m.group(3)) if m else ("DEFAULT", "DEFAULT"))
    return out
