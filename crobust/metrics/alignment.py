"""Inter-layer alignment under ReLU activation patterns (docs/paper.md §3.4, Theorem 3.2).

For consecutive layers W^l (h × d) and W^{l+1} (h' × h) of a bias-free ReLU encoder, every linear region of
x ↦ W^{l+1} φ(W^l x) has Jacobian W^{l+1} D W^l with D = diag(1[W^l x > 0]) ∈ 𝒟, the binary diagonal matrices. The
alignment term of the paper is

    A_p(l) = max_{D∈𝒟} ‖W_k^{l+1} D W_k^l‖_p / (‖W^{l+1}‖_p ‖W^l‖_p) + R_p(l),      p ∈ {2, ∞},

where ‖·‖_∞ is the operator norm induced by ℓ∞ (max row ℓ1 norm) and W_k is the top-k sub-structure: the k rows of
largest ℓ1 norm (``form='neuron'``, the natural pairing with p = ∞) or the rank-k truncation U_k Σ_k V_kᵀ
(``form='spectral'``, natural with p = 2). Write W = W_k + E. Because

    W^{l+1} D W^l = W_k^{l+1} D W_k^l + E^{l+1} D W^l + W_k^{l+1} D E^l      and ‖D‖_p ≤ 1,

we define the remainder (the spec leaves it open; this choice makes the bound sound)

    R_p(l) = (‖E^{l+1}‖_p ‖W^l‖_p + ‖W_k^{l+1}‖_p ‖E^l‖_p) / (‖W^{l+1}‖_p ‖W^l‖_p),

so that A_p(l)·‖W^{l+1}‖_p‖W^l‖_p ≥ max_D ‖W^{l+1} D W^l‖_p for every pair (tested). R_p → 0 as the layers become
exactly k-compressible (E → 0): for the neuron form ‖E‖_∞ = ν_(k+1), for the spectral form ‖E‖₂ = σ_{k+1}.

The max over D (2^h patterns) is computed in one of three ``mode`` s:

- ``'exact'``: enumeration of all 2^h patterns of the units that matter (for the neuron form only the k kept units
  of W^l, since the others' rows of W_k^l are zero; for the spectral form all h units). Refused above ``max_exact``
  units (default 14). The norm is convex in D, so the max over the cube [0, 1]^h is attained at a vertex and
  enumeration of binary D is the exact max over all diagonal 0 ≤ D ≤ I as well.
- ``'bound'``: a sound upper bound, for any width.
  * p = ∞: with t_m = W'_{im} W_{mj}, max_D |Σ_m D_m t_m| = max(Σ_m t_m⁺, Σ_m t_m⁻) exactly (take D on the
    positive or the negative terms), and max_D max_i Σ_j ≤ max_i Σ_j max_D (a max of a sum is at most the sum of
    the maxima), so max_D ‖W' D W‖_∞ ≤ max_i Σ_j ½(|W'||W| + |W'W|)_ij. Two matrix products; never above
    ‖|W'||W|‖_∞ ≤ ‖W'‖_∞‖W‖_∞.
  * p = 2: the minimum of three sound bounds: ‖W'‖₂‖W‖₂ (‖D‖₂ ≤ 1); ‖|W'||W|‖₂ (|W' D W| ≤ |W'||W| entrywise
    and ‖A‖₂ ≤ ‖|A|‖₂ ≤ ‖B‖₂ for 0 ≤ |A| ≤ B), bounded above by the Collatz–Wielandt inequality
    ρ(BᵀB) ≤ max_j (BᵀBx)_j / x_j for any x > 0 (x from power iteration); and the Frobenius relaxation
    ‖W' D W‖₂² ≤ ‖W' D W‖_F² = Σ_{m,m'} D_m D_m' G_{mm'} ≤ Σ_{m,m'} max(G_{mm'}, 0) with
    G = (W'ᵀW') ∘ (W Wᵀ). For the spectral form the bounds are applied to the k'×h and h×k cores
    Σ'V'ᵀ and UΣ, which have the same norms as W'_k D W_k.
- ``'observed'``: the max over activation patterns actually observed on data (``patterns``, (N, h) booleans, e.g.
  ``W^l z > 0`` for the layer's inputs z). This is a **lower bound** of the true max (a subset of 𝒟) and, for
  p = 2 on large matrices, each norm is itself a power-iteration lower estimate — so A from ``'observed'`` is an
  estimate that errs low; use it to see how much of the sound bound is slack, never as a certificate.
- ``'auto'`` (default): ``'exact'`` when the enumeration has ≤ 12 units, else ``'bound'``.

Shapes: single pair of matrices (vmap over members yourself; :func:`crobust.metrics.layer_report` does).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from crobust import _linalg, precision
from crobust._errors import CrobustError, check_choice
from crobust.metrics import _common as C
from crobust.metrics._common import kept_count
from crobust.metrics.spectral import singular_values

__all__ = ["FORMS", "MODES", "top_k_substructure", "max_pattern_norm", "alignment_term", "op_norm",
           "activation_patterns"]

FORMS = ("neuron", "spectral")
MODES = ("auto", "exact", "bound", "observed")
AUTO_EXACT_UNITS = 12


def _natural(form, p):
    if form is None and p is None:
        form = "neuron"
    if form is not None:
        check_choice("form", form, FORMS)
    if p is None:
        p = "inf" if form == "neuron" else 2
    p = C.check_p(p)
    if form is None:
        form = "neuron" if p == "inf" else "spectral"
    return form, p


def op_norm(w, p, *, method="auto"):
    """‖W‖_p for p ∈ {2, 'inf'} on (..., out, in): σ_1 or the max row ℓ1 norm."""
    p = C.check_p(p)
    w = C.check_matrix(w)
    if p == "inf":
        return jnp.max(jnp.sum(jnp.abs(w), axis=-1), axis=-1)
    return singular_values(w, method=method)[..., 0]


def _sigma_max_exact(m):
    """σ_1 of a batch of small matrices (..., a, b), by SVD at float32 precision (:mod:`crobust._linalg`)."""
    with precision.full():
        return _linalg.svdvals(m)[..., 0]


def _norm_batch(m, p):
    if p == "inf":
        return jnp.max(jnp.sum(jnp.abs(m), axis=-1), axis=-1)
    return _sigma_max_exact(m)


# ---------------------------------------------------------------------------------------------------------------
# sub-structures


def _neuron_split(w, K):
    """Indices of the K rows of largest ℓ1 norm, W_k (other rows zeroed) and E = W − W_k."""
    nu = jnp.sum(jnp.abs(w), axis=-1)
    _, idx = lax.top_k(nu, K)
    keep = jnp.zeros(w.shape[0], bool).at[idx].set(True)
    wk = jnp.where(keep[:, None], w, 0.0)
    return idx, wk, w - wk


def _spectral_split(w, K):
    """(U_K, s, V_Kᵀ) of w, W_K = U_K diag(s_K) V_Kᵀ and E = W − W_K (‖E‖₂ = σ_{K+1} by Eckart–Young)."""
    with precision.full():
        u, s, vt = _linalg.svd(w)
        wk = jnp.matmul(u[:, :K] * s[:K], vt[:K], precision=C.HIGHEST)
    return (u[:, :K], s, vt[:K]), wk, w - wk


@functools.partial(jax.jit, static_argnames=("k", "kappa", "form"))
def top_k_substructure(w, k=None, *, kappa=None, form="neuron"):
    """(W_k, E) with W = W_k + E: the top-k rows by ℓ1 norm (``'neuron'``) or the rank-k truncation
    (``'spectral'``) of one matrix W (out, in). k counts rows (neuron) or singular values (spectral, ≤ min(out, in));
    or give the kept fraction ``kappa``."""
    w = _check_single(w)
    check_choice("form", form, FORMS)
    if form == "neuron":
        K = kept_count(w.shape[0], k, kappa=kappa)
        _, wk, e = _neuron_split(w, K)
    else:
        K = kept_count(min(w.shape), k, kappa=kappa)
        _, wk, e = _spectral_split(w, K)
    return wk, e


def _check_single(w, name="W"):
    w = C.check_matrix(w, name)
    if w.ndim != 2:
        raise CrobustError(f"{name} must be one matrix (out, in) here (vmap over members), got shape {tuple(w.shape)}")
    return w


def _check_pair(w_l, w_next):
    w_l = _check_single(w_l, "w_l")
    w_next = _check_single(w_next, "w_next")
    if w_next.shape[1] != w_l.shape[0]:
        raise CrobustError(f"w_next (h', h) must take w_l's outputs (h, d): got w_l {tuple(w_l.shape)} and "
                           f"w_next {tuple(w_next.shape)}")
    return w_l, w_next


# ---------------------------------------------------------------------------------------------------------------
# max over activation patterns of ‖P diag(D) Q‖_p


def _enumerate_max(P, Q, p, max_exact):
    h = P.shape[1]
    if h > max_exact:
        raise CrobustError(f"exact enumeration over {h} units (2^{h} patterns) exceeds max_exact={max_exact}; "
                           "use mode='bound' (sound upper bound) or 'observed' (lower estimate)")
    n_pat = 2 ** h
    chunk = min(n_pat, 512)
    codes = jnp.arange(n_pat, dtype=jnp.int32)
    pats = ((codes[:, None] >> jnp.arange(h, dtype=jnp.int32)) & 1).astype(jnp.float32)
    pats = pats.reshape(n_pat // chunk, chunk, h)

    def chunk_max(pc):
        with precision.full():
            m = jnp.einsum("ih,ph,hj->pij", P, pc, Q, precision=C.HIGHEST)
        return jnp.max(_norm_batch(m, p))

    return jnp.max(lax.map(chunk_max, pats))


def _collatz_wielandt_upper(B, iters=30):
    """Upper bound of ‖B‖₂ for an entrywise non-negative B (a, b): √(max_j (BᵀBx)_j / x_j) with x > 0 from
    ``iters`` power iterations on BᵀB (any positive x gives an upper bound of the Perron root ρ(BᵀB) = ‖B‖₂²)."""
    small = B.shape[0] < B.shape[1]
    M = B if small else B.T            # ‖B‖ = ‖Bᵀ‖; iterate on the smaller Gram MMᵀ
    mv = lambda x: jnp.matmul(M, jnp.matmul(M.T, x, precision=C.HIGHEST), precision=C.HIGHEST)
    x0 = jnp.ones(M.shape[0], jnp.float32)

    def body(_, x):
        y = mv(x)
        return y / jnp.maximum(jnp.max(y), 1e-30)

    x = lax.fori_loop(0, iters, body, x0)
    x = x + 1e-6 * jnp.maximum(jnp.max(x), 1e-30)          # strictly positive
    ratio = jnp.max(mv(x) / x)
    return jnp.sqrt(jnp.maximum(ratio, 0.0))


def _bound_max(P, Q, p, norm_p=None, norm_q=None):
    """Sound upper bound of max_D ‖P D Q‖_p (see the module docstring)."""
    with precision.full():
        aP, aQ = jnp.abs(P), jnp.abs(Q)
        T = jnp.matmul(aP, aQ, precision=C.HIGHEST)
        if p == "inf":
            S = jnp.matmul(P, Q, precision=C.HIGHEST)
            return jnp.max(jnp.sum(0.5 * (T + jnp.abs(S)), axis=-1))
        G = jnp.matmul(P.T, P, precision=C.HIGHEST) * jnp.matmul(Q, Q.T, precision=C.HIGHEST)
    fro_relax = jnp.sqrt(jnp.sum(jnp.maximum(G, 0.0)))
    cw = _collatz_wielandt_upper(T)
    if norm_p is None:
        norm_p = singular_values(P)[0]
    if norm_q is None:
        norm_q = singular_values(Q)[0]
    return jnp.minimum(jnp.minimum(norm_p * norm_q, fro_relax), cw)


def _observed_max(P, Q, p, patterns, power_iters=50):
    """max over the given patterns (N, h) of ‖P diag(D_n) Q‖_p; p = 2 by power iteration (a lower estimate)."""
    D = jnp.asarray(patterns).astype(jnp.float32)
    if D.ndim != 2 or D.shape[1] != P.shape[1]:
        raise CrobustError(f"patterns must be (N, {P.shape[1]}) activation indicators, got shape {tuple(D.shape)}")
    if p == "inf":
        def one(d):
            with precision.full():
                m = jnp.matmul(P * d[None, :], Q, precision=C.HIGHEST)
            return jnp.max(jnp.sum(jnp.abs(m), axis=-1))
        return jnp.max(lax.map(one, D))

    # batched power iteration on M_n = P diag(D_n) Q without forming M_n
    hp = lambda x: jnp.matmul(x, Q.T, precision=C.HIGHEST)          # (N, b) → (N, h): Q v
    v = jax.random.normal(jax.random.key(0), (D.shape[0], Q.shape[1]), jnp.float32)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)

    def apply(v):
        u = jnp.matmul(D * hp(v), P.T, precision=C.HIGHEST)          # (N, a) = M v
        return u

    def apply_t(u):
        return jnp.matmul(D * jnp.matmul(u, P, precision=C.HIGHEST), Q, precision=C.HIGHEST)  # (N, b) = Mᵀ u

    def body(_, v):
        w = apply_t(apply(v))
        return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-30)

    with precision.full():
        v = lax.fori_loop(0, power_iters, body, v)
        est = jnp.linalg.norm(apply(v), axis=-1)                     # ‖M v‖ ≤ ‖M‖ for ‖v‖ = 1
    return jnp.max(est)


def _pattern_max(P, Q, p, mode, patterns, max_exact, norm_p=None, norm_q=None):
    h = P.shape[1]
    if mode == "auto":
        mode = "exact" if h <= AUTO_EXACT_UNITS else "bound"
    if mode == "exact":
        return _enumerate_max(P, Q, p, max_exact)
    if mode == "bound":
        return _bound_max(P, Q, p, norm_p, norm_q)
    if patterns is None:
        raise CrobustError("mode='observed' needs patterns (N, h) of activation indicators")
    return _observed_max(P, Q, p, patterns)


@functools.partial(jax.jit, static_argnames=("p", "mode", "max_exact"))
def max_pattern_norm(w_l, w_next, p="inf", *, mode="auto", patterns=None, max_exact=14):
    """max_{D∈𝒟} ‖W^{l+1} D W^l‖_p for the full matrices: exact, a sound upper bound, or the observed-pattern
    lower estimate (``mode``, see the module docstring). w_l (h, d), w_next (h', h); patterns (N, h). Returns ()."""
    w_l, w_next = _check_pair(w_l, w_next)
    p = C.check_p(p)
    check_choice("mode", mode, MODES)
    return _pattern_max(w_next, w_l, p, mode, patterns, max_exact)


@functools.partial(jax.jit, static_argnames=("k", "kappa", "p", "form", "mode", "max_exact"))
def alignment_term(w_l, w_next, k=None, *, kappa=None, p=None, form=None, mode="auto", patterns=None,
                   max_exact=14):
    """Alignment term A_p(l) between W^l (h × d) and W^{l+1} (h' × h), with its pieces.

    Args:
      w_l, w_next: one pair of consecutive matrices (paper orientation).
      k / kappa: size of the top-k sub-structure of each layer (a count applied to both layers, or a kept fraction
        of each layer's rows (neuron) or singular values (spectral)); static.
      p: 2 or 'inf'; form: 'neuron' or 'spectral'. Either may be omitted: the natural pairing is neuron ↔ ∞ and
        spectral ↔ 2 (neuron/∞ if both are omitted).
      mode: 'auto' | 'exact' | 'bound' | 'observed' for the max over D (module docstring).
      patterns: (N, h) activation indicators of layer l, for ``mode='observed'``.

    Returns a dict of () arrays:
      ``A`` = max_term / (‖W^{l+1}‖‖W^l‖) + R; ``R`` the remainder; ``max_term`` = max_D ‖W_k^{l+1} D W_k^l‖_p (or
      its bound/estimate); ``pair_bound`` = A·‖W^{l+1}‖‖W^l‖, a sound upper bound of max_D ‖W^{l+1} D W^l‖_p
      whenever ``mode`` is 'exact' or 'bound'; ``norm_l``, ``norm_next`` the layer norms; ``k_l``, ``k_next``.
    """
    w_l, w_next = _check_pair(w_l, w_next)
    form, p = _natural(form, p)
    check_choice("mode", mode, MODES)
    norm = lambda m: op_norm(m, p)
    if form == "neuron" and p == "inf":
        # every ∞-norm here is a max of row ℓ1 norms ν, so one pass per layer serves them all and neither W_k nor E
        # is materialised: ‖W‖ = max ν, ‖W_k‖ = max of the kept ν, ‖E‖ = max of the others (ν_(K+1)), 0 if none
        K1 = kept_count(w_l.shape[0], k, kappa=kappa)
        K2 = kept_count(w_next.shape[0], k, kappa=kappa)
        nu1 = jnp.sum(jnp.abs(w_l), axis=-1)
        nu2 = jnp.sum(jnp.abs(w_next), axis=-1)
        _, idx1 = lax.top_k(nu1, K1)
        _, idx2 = lax.top_k(nu2, K2)
        keep1 = jnp.zeros(w_l.shape[0], bool).at[idx1].set(True)
        keep2 = jnp.zeros(w_next.shape[0], bool).at[idx2].set(True)
        P = jnp.where(keep2[:, None], jnp.take(w_next, idx1, axis=1), 0.0)   # (h', K1) of W_k^{l+1}
        Q = jnp.take(w_l, idx1, axis=0)                                        # (K1, d)
        pats = None if patterns is None else jnp.take(jnp.asarray(patterns), idx1, axis=1)
        max_term = _pattern_max(P, Q, p, mode, pats, max_exact)
        n1, n2, n2k = jnp.max(nu1), jnp.max(nu2), jnp.max(jnp.where(keep2, nu2, 0.0))
        ne1, ne2 = jnp.max(jnp.where(keep1, 0.0, nu1)), jnp.max(jnp.where(keep2, 0.0, nu2))
    elif form == "neuron":
        K1 = kept_count(w_l.shape[0], k, kappa=kappa)
        K2 = kept_count(w_next.shape[0], k, kappa=kappa)
        idx1, w1k, e1 = _neuron_split(w_l, K1)
        _, w2k, e2 = _neuron_split(w_next, K2)
        P = jnp.take(w2k, idx1, axis=1)            # (h', K1): only the kept units of W^l carry signal
        Q = jnp.take(w_l, idx1, axis=0)            # (K1, d)
        pats = None if patterns is None else jnp.take(jnp.asarray(patterns), idx1, axis=1)
        max_term = _pattern_max(P, Q, p, mode, pats, max_exact)
        n1, n2, n2k = norm(w_l), norm(w_next), norm(w2k)
        ne1, ne2 = norm(e1), norm(e2)
    else:
        K1 = kept_count(min(w_l.shape), k, kappa=kappa)
        K2 = kept_count(min(w_next.shape), k, kappa=kappa)
        (u1, s1, _), w1k, e1 = _spectral_split(w_l, K1)
        (_, s2, v2t), w2k, e2 = _spectral_split(w_next, K2)
        if p == 2:
            # ‖U'Σ'V'ᵀ D UΣVᵀ‖₂ = ‖(Σ'V'ᵀ) D (UΣ)‖₂: work on the small cores
            P = s2[:K2, None] * v2t                  # (K2, h)
            Q = u1 * s1[None, :K1]                   # (h, K1)
            max_term = _pattern_max(P, Q, p, mode, patterns, max_exact, norm_p=s2[0], norm_q=s1[0])
            n1, n2, n2k = s1[0], s2[0], s2[0]
            ne1 = s1[K1] if K1 < s1.shape[0] else jnp.zeros((), jnp.float32)
            ne2 = s2[K2] if K2 < s2.shape[0] else jnp.zeros((), jnp.float32)
        else:
            max_term = _pattern_max(w2k, w1k, p, mode, patterns, max_exact)
            n1, n2, n2k = norm(w_l), norm(w_next), norm(w2k)
            ne1, ne2 = norm(e1), norm(e2)
    pair_bound = max_term + ne2 * n1 + n2k * ne1
    denom = n2 * n1
    return {
        "A": C.safe_div(pair_bound, denom), "R": C.safe_div(ne2 * n1 + n2k * ne1, denom),
        "max_term": max_term, "pair_bound": pair_bound, "norm_l": n1, "norm_next": n2,
        "k_l": jnp.asarray(K1, jnp.int32), "k_next": jnp.asarray(K2, jnp.int32),
    }


@jax.jit
def activation_patterns(w_l, z):
    """ReLU activation indicators D = 1[W^l z > 0] of layer l for inputs z (N, d) to it → (N, h) bool.

    For an MLP, z of the first layer is the normalised flattened input and z of layer l+1 is φ(W^l z)."""
    w_l = _check_single(w_l, "w_l")
    with precision.full():
        return jnp.matmul(jnp.asarray(z, jnp.float32), w_l.T, precision=C.HIGHEST) > 0
