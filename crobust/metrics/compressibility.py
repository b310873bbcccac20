"""Best-k approximation, (q,k,ε)-compressibility and top-k dispersion β (docs/paper.md §3.2), for vectors, for the
neurons of a layer (row ℓ1 norms) and for its spectrum, plus the reference code's ``par_comp`` / ``net_comp``.

Definitions (θ ∈ ℝ^d, entries sorted by magnitude |θ|_(1) ≥ |θ|_(2) ≥ … ≥ |θ|_(d)):

- best-k approximation θ_k: keep the k largest-magnitude entries, zero the rest;
- relative error ε_q(θ, k) = ‖θ − θ_k‖_q / ‖θ‖_q, q ∈ {1, 2}; θ is (q, k, ε)-compressible iff ε_q(θ, k) ≤ ε;
- dispersion β(θ, k) ∈ [0, 1] with |θ|_(k) = (1 − β)|θ|_(1), i.e. β = 1 − |θ|_(k)/|θ|_(1)
  (β = 0: the top k are equal; β → 1: the largest dominates them);
- neuron compressibility: the above on ν = (‖w_1‖₁, …, ‖w_h‖₁), the ℓ1 norms of the rows of W (out × in; a row is
  an output neuron / filter), giving ε_ν, k_ν, β_ν;
- spectral compressibility: the above on σ(W), the singular values, giving ε_σ, k_σ, β_σ.

``k`` is given either as a count (``k=``) or as a kept fraction (``kappa=``), with the reference code's rule
K = d − ⌊(1−κ)·d⌋ (:func:`kept_count`). Both are static Python numbers (mark them static under ``jax.jit``).

Choices (the spec leaves them open):

- Default q is **2**, as in the reference code's ``compute_statistics(q=2)``; Theorem 3.1's checks use q = 1 (see
  :mod:`crobust.metrics.bounds`), so functions take ``q`` explicitly and the layer report gives both.
- The zero vector is exactly equal to its best-k approximation, so ε = 0 (it is (q, k, 0)-compressible for every
  k) and β = 0 (its top k are equal). The reference code returns NaN there (0/0); a table of a network with a dead
  (all-zero) neuron or layer would then be NaN, which we avoid.
- The tail ‖θ − θ_k‖_q is summed directly from the small entries (never as total − head), after dividing θ by its
  largest magnitude, so ε is accurate when small and exactly scale invariant up to rounding.
- The K-th largest magnitude is found by an exact bisection on float bit patterns (``_common.kth_largest``), which
  handles ties (entries equal to the threshold count once each, only as many as needed to reach K) and is much
  faster than XLA's sort on CPU. Curves over all k (:func:`best_k_error_curve`, :func:`smallest_k`) sort.

Shapes: vector functions act on the last axis and keep all leading axes (members, layers, rows …); matrix
functions take W of shape (..., out, in) in the paper's orientation (use :mod:`crobust.models.matrices` to get it
from flax kernels; a conv kernel becomes (out, in·kh·kw)).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.metrics import _common as C
from crobust.metrics._common import kept_count

__all__ = [
    "kept_count", "best_k_error", "reference_compressibility", "is_compressible", "dispersion", "compressibility_stats",
    "best_k_error_curve", "smallest_k", "row_l1_norms", "neuron_compressibility", "spectral_compressibility",
    "neuron_smallest_k", "spectral_smallest_k", "par_comp", "net_comp",
]


# --------------------------------------------------------------------------------------------------------------
# core, on non-negative magnitudes normalised by their maximum


def _normalised_magnitudes(theta, axis: int = -1):
    """|θ| / max|θ| along ``axis`` and max|θ|; vectors with max 0 are left as zeros."""
    a = jnp.abs(theta)
    m = jnp.max(a, axis=axis)
    return a / jnp.expand_dims(jnp.where(m > 0, m, 1.0), axis), m


def _kth_counts(a, K, axis: int = -1):
    """The K-th largest t of non-negative ``a`` along ``axis``, #{a ≥ t} and #{a > t} (exact, ties included)."""
    d = a.shape[axis]
    if isinstance(K, int) and K in (1, d):
        t = jnp.max(a, axis=axis) if K == 1 else jnp.min(a, axis=axis)
        te = jnp.expand_dims(t, axis)
        n_ge = jnp.sum(a >= te, axis=axis, dtype=jnp.int32)
        n_gt = jnp.sum(a > te, axis=axis, dtype=jnp.int32)
        return t, n_ge, n_gt
    return C.kth_largest_counts(a, K, axis)


def _head_tail_qs(a, K, qs, axis: int = -1):
    """{q: (head, tail)} of the normalised magnitudes a/max(a) for several q sharing one threshold search along
    ``axis``, the normalised K-th largest t/max(a), and max(a). ``a`` = |θ| (not normalised: the search runs on
    its bit patterns and the normalisation is folded into the sums, so no normalised copy of a large θ is made).

    Entries tied with the threshold count once each, only as many as needed to reach K. K may be a Python int or
    a traced int32 scalar (one compiled program then serves every K)."""
    vmax = jnp.max(a, axis=axis)
    inv = jnp.expand_dims(1.0 / jnp.where(vmax > 0, vmax, 1.0), axis)
    t, n_ge, n_gt = _kth_counts(a, K, axis)
    tn = C.safe_div(t, vmax)                     # the K-th largest of a / max(a), in [0, 1]
    te = jnp.expand_dims(t, axis)
    below = a < te
    above = a > te
    tie_kept = K - n_gt                          # 1 ≤ tie_kept ≤ #{a = t} = n_ge − n_gt
    tie_dropped = n_ge - n_gt - tie_kept
    an = a * inv
    out = {}
    for q in qs:
        tq = tn if q == 1 else tn * tn
        aq = an if q == 1 else an * an
        head = jnp.sum(jnp.where(above, aq, 0.0), axis=axis) + tie_kept * tq
        tail = jnp.sum(jnp.where(below, aq, 0.0), axis=axis) + tie_dropped * tq
        out[q] = (head, tail)
    return out, tn, vmax


def _err_from(head, tail, q: int):
    total = head + tail
    r = C.safe_div(tail, total, 0.0)
    return r if q == 1 else jnp.sqrt(r)


def _vec_stats(v, K, qs=(1, 2), axis: int = -1):
    """On θ along ``axis`` at kept count K (int or traced): ({q: ε_q}, β, 1 − ε_1 as head/total, 1 − β as t/max).

    β(K = 1) is exactly 0 (x / max may round); the zero vector has ε = β = 0."""
    qs_all = tuple(sorted(set(qs) | {1}))
    ht, t, vmax = _head_tail_qs(jnp.abs(v), K, qs_all, axis)
    errs = {q: _err_from(*ht[q], q) for q in qs}
    live = (vmax > 0) & (jnp.asarray(K) > 1)
    one_minus_beta = jnp.where(live, t, 1.0)
    one_minus_eps1 = C.safe_div(ht[1][0], ht[1][0] + ht[1][1], 1.0)
    return errs, 1.0 - one_minus_beta, one_minus_eps1, one_minus_beta


@functools.partial(jax.jit, static_argnames=("qs",))
def _vec_stats_jit(theta, K, qs):
    errs, beta, _, _ = _vec_stats(theta, K, qs)
    return errs, beta


def _prepare(theta, k, kappa, q=None):
    theta = C.check_vector(theta)
    if q is not None:
        C.check_q(q)
    K = kept_count(theta.shape[-1], k, kappa=kappa)
    return theta, jnp.int32(K), K


# --------------------------------------------------------------------------------------------------------------
# vectors
#
# The public functions validate their static arguments in Python, then call one jitted program per (shape, q) with
# the kept count K as a traced scalar, so sweeping k does not recompile. They can be called inside jit / vmap.


def best_k_error(theta, k=None, *, kappa=None, q=2):
    """Relative best-k approximation error ε_q(θ, k) = ‖θ − θ_k‖_q / ‖θ‖_q along the last axis.

    Args:
      theta: (..., d) array.
      k: kept count, 1 ≤ k ≤ d (static); or ``kappa``: kept fraction in (0, 1], K = d − ⌊(1−κ)d⌋ (static).
      q: 1 or 2 (default 2, as the reference code).

    Returns:
      (...,) float32 in [0, 1); 0 for k = d and for the zero vector.
    """
    theta, K, _ = _prepare(theta, k, kappa, q)
    return _vec_stats_jit(theta, K, (int(q),))[0][int(q)]


def reference_compressibility(theta, k=None, *, kappa=None, q=2):
    """1 − ε_q(θ, k), the reference code's "compressibility" (higher = more compressible). Shapes as
    :func:`best_k_error`."""
    return 1.0 - best_k_error(theta, k, kappa=kappa, q=q)


def _check_eps(eps):
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and not eps >= 0:
        raise CrobustError(f"eps must be a number >= 0, got {eps}")


def is_compressible(theta, eps, k=None, *, kappa=None, q=2):
    """Whether θ is (q, k, ε)-compressible: ε_q(θ, k) ≤ eps. ``eps`` may be traced; (...,) bool."""
    _check_eps(eps)
    return best_k_error(theta, k, kappa=kappa, q=q) <= eps


def dispersion(theta, k=None, *, kappa=None):
    """Top-k dispersion β = 1 − |θ|_(k) / |θ|_(1) ∈ [0, 1] along the last axis; 0 for the zero vector and k = 1."""
    theta, K, _ = _prepare(theta, k, kappa)
    return _vec_stats_jit(theta, K, (1,))[1]


def compressibility_stats(theta, k=None, *, kappa=None, q=2):
    """{'eps': ε_q(θ, K), 'beta': β(θ, K), 'k': K} along the last axis (K broadcast to the batch, int32)."""
    theta, K, Kpy = _prepare(theta, k, kappa, q)
    errs, beta = _vec_stats_jit(theta, K, (int(q),))
    eps = errs[int(q)]
    return {"eps": eps, "beta": beta, "k": jnp.full(eps.shape, Kpy, jnp.int32)}


@functools.partial(jax.jit, static_argnames=("q",))
def best_k_error_curve(theta, q=2):
    """ε_q(θ, k) for every k = 1 … d: (..., d), entry k−1 is the error of keeping k entries (non-increasing,
    last entry 0). Sorts, so prefer :func:`best_k_error` for a single k on long vectors."""
    theta = C.check_vector(theta)
    q = C.check_q(q)
    a, _ = _normalised_magnitudes(theta)
    asc = jnp.sort(a if q == 1 else a * a, axis=-1)
    csum = jnp.cumsum(asc, axis=-1)                 # csum[..., j] = Σ of the j+1 smallest
    total = csum[..., -1:]
    d = theta.shape[-1]
    # keeping k drops the d−k smallest: tail(k) = csum[d−k−1] for k < d, 0 for k = d
    tails = jnp.concatenate([jnp.flip(csum[..., : d - 1], axis=-1), jnp.zeros_like(total)], axis=-1)
    r = C.safe_div(tails, total, 0.0)
    r = jnp.clip(r, 0.0, 1.0)
    return r if q == 1 else jnp.sqrt(r)


def smallest_k(theta, eps, q=2):
    """The smallest k ∈ [1, d] with ε_q(θ, k) ≤ eps (ε-pruning's per-layer rule); (...,) int32.

    ``eps`` may be a traced scalar or an array broadcastable to the batch shape. eps = 0 gives the number of
    non-zero entries (at least 1).
    """
    _check_eps(eps)
    return _smallest_k(theta, eps, q)


@functools.partial(jax.jit, static_argnames=("q",))
def _smallest_k(theta, eps, q):
    curve = best_k_error_curve(theta, q)
    eps = jnp.asarray(eps, jnp.float32)
    return 1 + jnp.sum(curve > eps[..., None], axis=-1, dtype=jnp.int32)


# --------------------------------------------------------------------------------------------------------------
# neurons and spectra


def row_l1_norms(w):
    """ν = (‖w_1‖₁, …, ‖w_out‖₁): ℓ1 norm of each row (output neuron) of W (..., out, in) → (..., out)."""
    w = C.check_matrix(w)
    return _row_l1(w)


@jax.jit
def _row_l1(w):
    return jnp.sum(jnp.abs(w), axis=-1)


def neuron_compressibility(w, k=None, *, kappa=None, q=2):
    """Neuron compressibility of W (..., out, in): {'eps_nu', 'beta_nu', 'k_nu'} on its row ℓ1 norms ν.

    k (or κ of the ``out`` neurons) is the number of kept neurons. Returns (...,) arrays.
    """
    s = compressibility_stats(row_l1_norms(w), k, kappa=kappa, q=q)
    return {"eps_nu": s["eps"], "beta_nu": s["beta"], "k_nu": s["k"]}


def spectral_compressibility(w, k=None, *, kappa=None, q=2, method="auto"):
    """Spectral compressibility of W (..., out, in): {'eps_sigma', 'beta_sigma', 'k_sigma'} on its singular values
    (h = min(out, in) of them; k or κ counts singular values). ``method`` as in
    :func:`crobust.metrics.spectral.singular_values`."""
    from crobust.metrics.spectral import singular_values

    s = compressibility_stats(singular_values(w, method=method), k, kappa=kappa, q=q)
    return {"eps_sigma": s["eps"], "beta_sigma": s["beta"], "k_sigma": s["k"]}


def neuron_smallest_k(w, eps, q=2):
    """Smallest number of neurons k_ν with ε_ν(k_ν) ≤ eps, for W (..., out, in) → (...,) int32."""
    return smallest_k(row_l1_norms(w), eps, q)


def spectral_smallest_k(w, eps, q=2, method="auto"):
    """Smallest rank k_σ with ε_σ(k_σ) ≤ eps, for W (..., out, in) → (...,) int32."""
    from crobust.metrics.spectral import singular_values

    return smallest_k(singular_values(w, method=method), eps, q)


# --------------------------------------------------------------------------------------------------------------
# the reference code's statistics (docs/reference-code.md §6.1)


def par_comp(w, kappa, q=2, flat=False):
    """The reference code's ``par_comp_κ``: 1 − mean over rows of ε_q(row, K(κ, in)) for W (..., out, in).

    This is **entry-level** compressibility inside each neuron's fan-in, not the paper's ε_ν. ``flat=True`` is
    ``par_comp_flat_κ``: the whole layer as one vector. Conv kernels must first be matricised to
    (out, in·kh·kw) (:func:`crobust.models.matrices.kernel_to_matrix`), as the reference does. Zero rows count as
    error 0 (the reference would give NaN). Returns (...,).
    """
    w = C.check_matrix(w)
    if flat:
        v = w.reshape(*w.shape[:-2], -1)
        return 1.0 - best_k_error(v, kappa=kappa, q=q)
    return 1.0 - jnp.mean(best_k_error(w, kappa=kappa, q=q), axis=-1)


@functools.partial(jax.jit, static_argnames=("kappa", "q"))
def net_comp(mats: Sequence, kappa, q=2):
    """The reference code's ``net_comp_κ``: 1 − ε_q of all layers' entries concatenated into one vector, with
    K(κ, total count). ``mats``: a sequence of (..., out_i, in_i) matrices sharing leading axes (e.g. members),
    head and input layer included as the reference includes them. Returns (...,)."""
    q = C.check_q(q)
    mats = [C.check_matrix(m, f"mats[{i}]") for i, m in enumerate(mats)]
    if not mats:
        raise CrobustError("net_comp needs at least one matrix")
    lead = mats[0].shape[:-2]
    if any(m.shape[:-2] != lead for m in mats):
        raise CrobustError(f"mats must share leading axes, got {[tuple(m.shape) for m in mats]}")
    vecs = [jnp.abs(m.reshape(*lead, -1)) for m in mats]
    d = sum(v.shape[-1] for v in vecs)
    K = kept_count(d, kappa=kappa)
    mx = functools.reduce(jnp.maximum, [jnp.max(v, axis=-1) for v in vecs])
    scale = jnp.where(mx > 0, mx, 1.0)[..., None]
    vecs = [v / scale for v in vecs]
    t = C.kth_largest_multi(vecs, K)[..., None]
    tq = t if q == 1 else t * t
    pw = (lambda v: v) if q == 1 else (lambda v: v * v)
    n_above = sum(jnp.sum(v > t, axis=-1, dtype=jnp.int32) for v in vecs)[..., None]
    n_below = sum(jnp.sum(v < t, axis=-1, dtype=jnp.int32) for v in vecs)[..., None]
    n_tie = d - n_above - n_below
    tie_kept = K - n_above
    head = sum(jnp.sum(jnp.where(v > t, pw(v), 0.0), axis=-1) for v in vecs)[..., None] + tie_kept * tq
    tail = sum(jnp.sum(jnp.where(v < t, pw(v), 0.0), axis=-1) for v in vecs)[..., None] + (n_tie - tie_kept) * tq
    return (1.0 - _err_from(head, tail, q))[..., 0]
