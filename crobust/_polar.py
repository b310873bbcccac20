"""The polar factor of a matrix by scaled Newton–Schulz iterations (matrix products only), and the nuclear norm.

For W (m, n) with thin SVD W = U diag(σ) Vᵀ, the polar factor is Q = U Vᵀ over the non-zero σ (a partial isometry
on W's range), and ‖W‖_* = Σσ_i = ⟨Q, W⟩ = Σ_ij Q_ij W_ij. On GPU/TPU a batched SVD is slow (cuSOLVER's batched
gesvd; ``benchmarks/bench_spectral.py``) while products run on the matrix units, so we get Q from products:

**Iteration.** Work on the wide orientation (h = min(m, n) rows). Every step maps each singular value x ∈ [0, 1] of
the iterate X_k (same singular vectors as W) by the odd cubic x ↦ p(c_k x), p(y) = (3y − y³)/2, i.e.

    X_{k+1} = c_k X_k (3 I − c_k² X_k X_kᵀ) / 2          (two h×h×n products per step).

With c = 1 this is Newton–Schulz (quadratic convergence near 1, but small x only grows ×1.5 per step). The scaled
steps use c_k = min(√(3/(1 + ℓ + ℓ²)), 1.7) for the current lower end ℓ of the interval [ℓ, 1] holding the
singular values: that c equalises p(cℓ) = p(c), so [ℓ, 1] maps into [p(cℓ), 1] and small values grow ×2.55 per
step (a scaled Newton–Schulz iteration, cf. Chen & Chow 2014). The schedule is computed in Python from
``lower`` = ℓ_0 (default 1e-4): 13 steps take every singular value in [1e-4·s, s] to 1 within 1e-7.
The start is X_0 = W/s with s = (1 + 10⁻³)·‖(WWᵀ)²‖_F^{1/4} = (1 + 10⁻³)(Σσ_i⁸)^{1/8} ≥ σ_1 (so every x ≤ 1
and c·x < √3, where p stays monotone and positive); the Gram matrix WWᵀ is reused as the first step's X_0X_0ᵀ.

**Guard.** After the schedule, e_bound = √h·‖(I − QQᵀ)W‖_F bounds the value's error: in exact arithmetic
Q = U diag(q) Vᵀ with q_i ∈ [0, 1], so ‖W‖_* − ⟨Q, W⟩ = Σ(1 − q_i)σ_i ≤ Σ(1 − q_i²)σ_i ≤ √h·(Σ(1 − q_i²)²σ_i²)^{1/2}.
While e_bound > ``guard_rtol``·⟨Q, W⟩, plain Newton–Schulz steps continue (at most ``max_extra``), so matrices with
many singular values below ℓ_0·s still converge. Zero singular values stay exactly 0 (p(0) = 0).

**What is exact and what is approximate.**
- The value ⟨Q, W⟩ is an elementwise product and sum (no matmul precision involved). Its error is
  Σ(1 − q_i)σ_i ≥ 0: it is *second order* in Q's error for converged directions (⟨Q, W⟩ is maximal at the exact
  polar factor over ‖Q‖₂ ≤ 1), and at most σ_i for an unconverged direction (σ_i < ℓ_0·s). Measured against a
  float64 SVD: ≤ 1e-6 relative on ill-conditioned, rank-deficient and repeated-σ matrices (tests/test_regularizers.py).
- The gradient Q is a valid ε-subgradient of ‖·‖_* at W: ‖Q‖₂ ≤ 1 (up to round-off) and ⟨Q, W⟩ = ‖W‖_* − ε with
  ε the value's error above, so ‖W'‖_* ≥ ⟨Q, W'⟩ ≥ ‖W‖_* + ⟨Q, W' − W⟩ − ε for every W'. For a rank-deficient W
  it is U_r V_rᵀ + Z with Z = Σ_{σ_i≈0} q_i u_i v_iᵀ (‖Z‖₂ < 1, orthogonal to U_r and V_r) — the subdifferential's
  form. Singular values below ~ℓ_0·s get q_i < 1 (a smaller push on them than U Vᵀ gives).
- Every product runs at full float32 (``HIGHEST``), whatever the training precision (:mod:`crobust.precision`).
  The guard's bound assumes the iterate keeps W's singular vectors, which holds to float32 round-off; products at
  TF32 or one bfloat16 pass perturb the vectors every step by ~1e-3, so the iterate stops converging at that level
  and the guard's steps cannot certify it. Measured on a CPU with TF32 operand rounding emulated in the
  iteration's products, 2 × 400×784 (the motivating study's shape): the guard ran all ``max_extra`` = 24 extra
  steps (37 steps instead of 13) and the value's error was 2.3e-5 relative, over the 3e-6 the guard states.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
from jax import lax

from crobust.precision import HIGHEST

LOWER = 1e-4
GUARD_RTOL = 3e-6
MAX_EXTRA = 24
_C_MAX = 1.7
_SCALE_MARGIN = 1.0 + 1e-3


@functools.lru_cache(maxsize=None)
def schedule(lower: float = LOWER, tol: float = 1e-7) -> tuple[float, ...]:
    """The scaling factors c_k that take every singular value in [lower, 1] to within ``tol`` of 1."""
    if not 0.0 < lower < 1.0:
        raise ValueError(f"lower must be in (0, 1), got {lower}")
    ell, cs = float(lower), []
    while 1.0 - ell > tol and len(cs) < 100:
        c = min(math.sqrt(3.0 / (1.0 + ell + ell * ell)), _C_MAX)
        y = c * ell
        ell = 1.5 * y - 0.5 * y ** 3
        cs.append(c)
    return tuple(cs)


def _t(x):
    return jnp.swapaxes(x, -1, -2)


def _step(x, c, a=None):
    if a is None:
        a = jnp.matmul(x, _t(x), precision=HIGHEST)
    return c * (1.5 * x - (0.5 * c * c) * jnp.matmul(a, x, precision=HIGHEST))


def _error_bound(x, w):
    h = w.shape[-2]
    r = w - jnp.matmul(jnp.matmul(x, _t(x), precision=HIGHEST), w, precision=HIGHEST)
    return math.sqrt(h) * jnp.sqrt(jnp.sum(r * r, axis=(-2, -1)))


def polar_with_info(w, *, lower: float = LOWER, guard_rtol: float = GUARD_RTOL, max_extra: int = MAX_EXTRA):
    """(Q, ‖W‖_* estimate ⟨Q, W⟩, error bound, extra steps taken) for W (..., m, n); Q has W's shape.

    See the module docstring for the iteration, its guard and what is exact."""
    w = jnp.asarray(w, jnp.float32)
    wide = w.shape[-2] <= w.shape[-1]
    x = w if wide else _t(w)
    g = jnp.matmul(x, _t(x), precision=HIGHEST)                                  # (…, h, h)
    g2 = jnp.matmul(g, g, precision=HIGHEST)
    s = _SCALE_MARGIN * jnp.sqrt(jnp.sqrt(jnp.sqrt(jnp.sum(g2 * g2, axis=(-2, -1)))))
    s = jnp.where(s > 0, s, 1.0)[..., None, None]
    x0 = x / s
    cs = schedule(float(lower))
    x = _step(x0, cs[0], a=g / (s * s))
    x, _ = lax.scan(lambda xx, c: (_step(xx, c), None), x, jnp.asarray(cs[1:], jnp.float32))
    wx = w if wide else _t(w)

    def value_and_bound(xx):
        return jnp.sum(xx * wx, axis=(-2, -1)), _error_bound(xx, wx)

    def not_done(carry):
        xx, k, val, bnd = carry
        return jnp.logical_and(k < max_extra, jnp.any(bnd > guard_rtol * jnp.abs(val)))

    def body(carry):
        xx, k, _, _ = carry
        xx = _step(xx, 1.0)
        return (xx, k + 1) + value_and_bound(xx)

    x, k, val, bnd = lax.while_loop(not_done, body, (x, jnp.int32(0)) + value_and_bound(x))
    q = x if wide else _t(x)
    return q, val, bnd, k


def polar(w, **kw):
    """The polar factor Q ≈ U Vᵀ of W (..., m, n) (see :func:`polar_with_info`)."""
    return polar_with_info(w, **kw)[0]


def schedule_steps(lower: float = LOWER) -> int:
    return len(schedule(float(lower)))


__all__ = ["polar", "polar_with_info", "schedule", "LOWER", "GUARD_RTOL", "MAX_EXTRA"]
