"""Representation-level quantities (docs/paper.md §3.6, §5 C4): how far an attack moves the representation, which
singular directions of the first layer the perturbation uses, and empirical Lipschitz ratios to hold against the
bounds of :mod:`crobust.metrics.bounds`.

All functions take arrays (clean and adversarial inputs / representations computed elsewhere — the attacks are in
:mod:`crobust.attacks`) with a leading sample axis N; images (N, H, W, C) are flattened to (N, H·W·C).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from crobust import _linalg, precision
from crobust._errors import CrobustError
from crobust.metrics import _common as C
from crobust.metrics._common import kept_count

__all__ = ["representation_shift", "singular_direction_alignment", "empirical_lipschitz_ratio"]


def _flat(x, name):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 1:
        raise CrobustError(f"{name} needs a leading sample axis, got a scalar")
    return x.reshape(x.shape[0], -1) if x.ndim != 2 else x


@jax.jit
def representation_shift(z, z_adv):
    """‖z_adv − z‖₂ / ‖z‖₂ per sample, on the penultimate representation z = Φ(x) (N, h) → (N,).

    A dead representation (z = 0) gives +∞ if it moved and 0 if not. Average it yourself (the paper and [3P] report
    the mean over test points)."""
    z, z_adv = _flat(z, "z"), _flat(z_adv, "z_adv")
    if z.shape != z_adv.shape:
        raise CrobustError(f"z and z_adv must have the same shape, got {z.shape} and {z_adv.shape}")
    num = jnp.linalg.norm(z_adv - z, axis=-1)
    den = jnp.linalg.norm(z, axis=-1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))


@functools.partial(jax.jit, static_argnames=("k", "kappa"))
def singular_direction_alignment(w, a, k=None, *, kappa=None):
    """How much of a perturbation a lies along the top-k right singular vectors of the first layer W (out, in).

    With W = U Σ Vᵀ, V_k the top-k right singular vectors and V_rest an orthonormal basis of their complement in
    ℝ^in (in − k directions, including W's null space when in > out):

    - ``top_energy`` = ‖V_kᵀ a‖² / ‖a‖² ∈ [0, 1] (a random direction gives k/in on average: ``baseline_energy``);
    - ``top_rms`` = ‖V_kᵀ a‖ / (√k·‖a‖) and ``rest_rms`` = ‖V_restᵀ a‖ / (√(in − k)·‖a‖), the per-direction sizes
      the paper compares (|v_iᵀ a*| for i ≤ k vs j > k), both as root mean squares, so that
      ``ratio`` = top_rms / rest_rms is 1 in expectation of the squares for an isotropic perturbation (a ~ N(0, I):
      E‖V_kᵀa‖²/k = E‖V_restᵀa‖²/(in − k) = 1) and > 1 when a favours the top directions. (Comparing a mean |·|
      with an RMS, as an earlier version did, gives ≈ √(2/π) ≈ 0.80 for isotropic a.)
    - ``top_mean_abs`` = mean_{i ≤ k} |v_iᵀ a| / ‖a‖, kept for reference only: it is not comparable with
      ``rest_rms`` (a different statistic) and not used in ``ratio``.

    Args:
      w: one matrix (out, in), e.g. ``hidden_matrices(params)['hidden_0']`` for one member.
      a: perturbations (N, in) (or images, flattened), as the layer sees them: for a model that normalises inside,
        divide the pixel-space perturbation by the per-channel std first (a scalar std changes nothing here).
      k / kappa: number of top directions (≤ min(out, in)), static.

    Returns a dict of (N,) arrays plus the scalar ``baseline_energy``. a = 0 gives 0 everywhere.
    """
    w = C.check_matrix(w)
    if w.ndim != 2:
        raise CrobustError(f"w must be one (out, in) matrix, got shape {tuple(w.shape)}")
    a = _flat(a, "a")
    d = w.shape[1]
    if a.shape[1] != d:
        raise CrobustError(f"a must have {d} features (W's inputs), got {a.shape[1]}")
    K = kept_count(min(w.shape), k, kappa=kappa)
    with precision.full():
        _, _, vt = _linalg.svd(w)
        proj = jnp.matmul(a, vt[:K].T, precision=C.HIGHEST)            # (N, K)
    an2 = jnp.sum(a * a, axis=-1)
    an = jnp.sqrt(an2)
    top2 = jnp.sum(proj * proj, axis=-1)
    rest2 = jnp.maximum(an2 - top2, 0.0)
    n_rest = d - K
    top_mean_abs = C.safe_div(jnp.mean(jnp.abs(proj), axis=-1), an)
    top_rms = C.safe_div(jnp.sqrt(top2 / K), an)
    rest_rms = C.safe_div(jnp.sqrt(rest2 / n_rest), an) if n_rest > 0 else jnp.zeros_like(an)
    ratio = jnp.where(rest_rms > 0, top_rms / jnp.where(rest_rms > 0, rest_rms, 1.0),
                      jnp.where(top_rms > 0, jnp.inf, 0.0))
    return {"top_energy": C.safe_div(top2, an2), "top_rms": top_rms, "top_mean_abs": top_mean_abs,
            "rest_rms": rest_rms, "ratio": ratio, "baseline_energy": jnp.asarray(K / d, jnp.float32)}


@functools.partial(jax.jit, static_argnames=("p",))
def empirical_lipschitz_ratio(x, x_adv, z, z_adv, p=2):
    """‖Φ(x+a) − Φ(x)‖_p / ‖a‖_p per sample (N,), with a = x_adv − x, in the same p on input and representation
    (the induced norm the bounds use). A zero perturbation gives 0. Its max over points and attacks is a lower
    bound of the true Lipschitz constant, so it must stay below \\hat L^p_Φ (times the input scale)."""
    p = C.check_p(p)
    x, x_adv, z, z_adv = _flat(x, "x"), _flat(x_adv, "x_adv"), _flat(z, "z"), _flat(z_adv, "z_adv")
    nrm = (lambda v: jnp.max(jnp.abs(v), axis=-1)) if p == "inf" else (lambda v: jnp.linalg.norm(v, axis=-1))
    return C.safe_div(nrm(z_adv - z), nrm(x_adv - x))
