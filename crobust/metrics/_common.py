"""Shared validation and small numerical helpers for :mod:`crobust.metrics` (private).

All checks run on static Python values (shapes, ints, floats given as Python numbers), never on tracers, so
every public function stays jit-able; a bad value raises :class:`crobust._errors.CrobustError` at trace time.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax

from crobust import precision
from crobust._errors import CrobustError

HIGHEST = precision.HIGHEST      # the policy lives in crobust.precision
F32_EPS = float(jnp.finfo(jnp.float32).eps)

Q_CHOICES = (1, 2)
P_CHOICES = (2, "inf")


def check_q(q) -> int:
    """q of the ℓq best-k error: 1 or 2."""
    if isinstance(q, bool) or q not in Q_CHOICES:
        raise CrobustError(f"unknown q {q!r}; valid choices: 1, 2")
    return int(q)


def check_p(p):
    """p of an operator norm: 2 or 'inf' (also accepts float('inf') / numpy inf). Returns 2 or 'inf'."""
    if isinstance(p, bool):
        raise CrobustError(f"unknown p {p!r}; valid choices: 2, 'inf'")
    if p == 2:
        return 2
    if p == "inf" or (isinstance(p, numbers.Real) and p == float("inf")):
        return "inf"
    raise CrobustError(f"unknown p {p!r}; valid choices: 2, 'inf'")


def kept_count(d: int, k=None, *, kappa=None) -> int:
    """Static number K of kept entries out of ``d``, given as a count ``k`` or a kept fraction ``kappa``.

    ``K = k`` (1 ≤ k ≤ d) or ``K = d − ⌊(1−κ)·d⌋`` for κ ∈ (0, 1], written exactly as the reference code writes it
    (``d - int((1 - kappa) * d)``, docs/reference-code.md §6.1), so ``κ = 0.1`` keeps 308 of 3072 and 200 of 2000.
    Exactly one of ``k`` / ``kappa`` must be given; both must be static Python numbers.
    """
    d = int(d)
    if d < 1:
        raise CrobustError(f"cannot keep entries of an empty vector (d={d})")
    if (k is None) == (kappa is None):
        raise CrobustError("give exactly one of k (a count, 1 <= k <= d) or kappa (a kept fraction in (0, 1])")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise CrobustError(f"k must be a Python int in [1, d={d}], got {k!r}")
        if not 1 <= int(k) <= d:
            raise CrobustError(f"k must be in [1, d={d}], got {k}")
        return int(k)
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real):
        raise CrobustError(f"kappa must be a Python float in (0, 1], got {kappa!r}")
    if not 0.0 < float(kappa) <= 1.0:
        raise CrobustError(f"kappa must be in (0, 1], got {kappa}")
    kk = d - int((1.0 - float(kappa)) * d)
    if kk < 1:
        raise CrobustError(f"kappa={kappa} keeps no entry of d={d} (K = d - int((1-kappa)*d) = {kk})")
    return kk


def check_matrix(w, name: str = "W"):
    """Return ``w`` as a float32 array of ≥ 2 dims (..., out, in); raise if it has fewer."""
    w = jnp.asarray(w)
    if w.ndim < 2:
        raise CrobustError(f"{name} must be a matrix (..., out, in) with >= 2 dims, got shape {tuple(w.shape)}")
    if w.shape[-1] == 0 or w.shape[-2] == 0:
        raise CrobustError(f"{name} must have non-empty rows and columns, got shape {tuple(w.shape)}")
    return w.astype(jnp.float32)


def check_vector(x, name: str = "theta"):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise CrobustError(f"{name} must have a non-empty last axis, got shape {tuple(x.shape)}")
    return x.astype(jnp.float32)


def safe_div(num, den, zero_value=0.0):
    """num / den where den ≠ 0, ``zero_value`` where den == 0 (no NaN from 0/0, no warning-free inf)."""
    den_ok = den != 0
    return jnp.where(den_ok, num / jnp.where(den_ok, den, 1.0), zero_value)


def kth_largest(a, K, axis: int = -1):
    """The K-th largest value along ``axis`` of a **non-negative** float32 array, exactly.

    Bisection on the IEEE-754 bit pattern: for non-negative floats the int32 bit pattern is monotone in the value,
    so 31 halvings of [0, bits(+inf)] pin down the largest t with #{a ≥ t} ≥ K, which is the K-th largest entry.
    This is 31 fused compare-and-count passes (cheaper on CPU than XLA's comparison sort), and it is
    exact (ties included). ``K`` may be traced. Shapes: a (..., d) → (...,) for axis = −1; ``axis=-2`` reduces a
    (..., d, n) over d (faster on CPU when the rows of W are the columns of a flax kernel). Early exit does not pay:
    with thousands of rows the slowest row needs nearly all 31 passes.
    """
    return kth_largest_counts(a, K, axis)[0]


def kth_largest_counts(a, K, axis: int = -1):
    """(t, #{a ≥ t}, #{a > t}) along ``axis``: :func:`kth_largest` and the two counts that split ``a`` into the
    entries above, tied with and below t. The counts come for free from the bisection's passes (the final bracket
    is [bits(t), bits(t) + 1), and the count at each end is carried along), so callers need no extra pass."""
    bits = lax.bitcast_convert_type(a, jnp.int32)
    shape = list(a.shape)
    d = shape[axis]
    del shape[axis]
    lo = jnp.zeros(shape, jnp.int32)             # #{bits >= lo} = d >= K always
    hi = jnp.full(shape, 0x7F800001, jnp.int32)  # just above +inf: #{bits >= hi} = 0 < K
    c_lo = jnp.full(shape, d, jnp.int32)
    c_hi = jnp.zeros(shape, jnp.int32)

    def body(_, carry):
        lo, hi, c_lo, c_hi = carry
        mid = lo + (hi - lo) // 2
        cnt = jnp.sum(bits >= jnp.expand_dims(mid, axis), axis=axis, dtype=jnp.int32)
        ok = cnt >= K
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid), jnp.where(ok, cnt, c_lo), jnp.where(ok, c_hi, cnt)

    def body3(_, carry):
        # two thresholds per pass, their counts packed in one int32 sum (low/high 16 bits; d < 2^15): the bracket
        # shrinks 3× per pass over the data instead of 2× (20 passes, not 31)
        lo, hi, c_lo, c_hi = carry
        m1 = lo + (hi - lo) // 3
        m2 = m1 + (hi - m1) // 2                 # lo ≤ m1 ≤ m2 < hi while hi − lo ≥ 2; no int32 overflow
        packed = jnp.sum(jnp.where(bits >= jnp.expand_dims(m1, axis), 1, 0)
                         + jnp.where(bits >= jnp.expand_dims(m2, axis), 1 << 16, 0), axis=axis, dtype=jnp.int32)
        c1, c2 = packed & 0xFFFF, packed >> 16
        ok1, ok2 = c1 >= K, c2 >= K              # c1 ≥ c2
        return (jnp.where(ok2, m2, jnp.where(ok1, m1, lo)), jnp.where(ok2, hi, jnp.where(ok1, m2, m1)),
                jnp.where(ok2, c2, jnp.where(ok1, c1, c_lo)), jnp.where(ok2, c_hi, jnp.where(ok1, c2, c1)))

    if d < (1 << 15):
        # the largest sub-bracket is monotone in the bracket width, so this many passes reach hi = lo + 1 from the
        # widest start; passes after that leave (lo, hi, counts) unchanged
        n, r = 0, 0x7F800001
        while r > 1:
            m1 = r // 3
            m2 = m1 + (r - m1) // 2
            r, n = max(m1, m2 - m1, r - m2), n + 1
        lo, _, c_lo, c_hi = lax.fori_loop(0, n, body3, (lo, hi, c_lo, c_hi))
    else:
        lo, _, c_lo, c_hi = lax.fori_loop(0, 31, body, (lo, hi, c_lo, c_hi))   # now hi = lo + 1
    return lax.bitcast_convert_type(lo, jnp.float32), c_lo, c_hi


def kth_largest_multi(arrays, K: int):
    """:func:`kth_largest` of the concatenation of several non-negative arrays along their last axes.

    ``arrays``: a sequence of (..., d_i) arrays sharing their leading axes. Counts are summed across the arrays in
    every bisection pass, so nothing is concatenated (used by ``net_comp`` on a whole network).
    """
    bits = [lax.bitcast_convert_type(a, jnp.int32) for a in arrays]
    lead = arrays[0].shape[:-1]
    lo = jnp.zeros(lead, jnp.int32)
    hi = jnp.full(lead, 0x7F800001, jnp.int32)

    def body(_, carry):
        lo, hi = carry
        mid = lo + (hi - lo) // 2
        cnt = sum(jnp.sum(b >= mid[..., None], axis=-1, dtype=jnp.int32) for b in bits)
        ok = cnt >= K
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = lax.fori_loop(0, 31, body, (lo, hi))
    return lax.bitcast_convert_type(lo, jnp.float32)


def is_cpu() -> bool:
    return jax.default_backend() == "cpu"
