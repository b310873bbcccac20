"""The paper's bounds on measured weights: Theorem 3.1 (structure × scale), the encoder Lipschitz bound of Theorem
3.2 (naive and aligned, with an O(λ) dynamic programme over pairings), and Corollary 3.3 (robustness gap).

**Theorem 3.1** (docs/paper.md §3.3). Both forms follow one chain, which we implement with q = 1 and ε the *actual*
relative ℓ1 residual ("exact-ε"): for a non-negative vector v with its k largest entries v_(1) ≥ … ≥ v_(k),
(1 − ε_1)‖v‖₁ = Σ_{i≤k} v_(i) ≥ k·v_(k) = k(1 − β)v_(1), hence

    v_(1) ≤ (1 − ε_1)/(1 − β) · ‖v‖₁ / k.

- Spectral form (exactly as printed): v = σ(W), v_(1) = ‖W‖₂ and ‖σ‖₁ ≤ √h‖σ‖₂ = √h‖W‖_F with h = min(out, in)
  the number of singular values, so ‖W‖₂ ≤ (1 − ε_σ)/(1 − β_σ) · √h/k_σ · ‖W‖_F.
- Neuron form (INFERRED; the printed formula (1−ε_ν)/(1−β_ν)·(√(h k_r) + h ε_r/k_ν)·‖W‖_F has undefined k_r, ε_r,
  docs/paper.md §3.3). v = ν (row ℓ1 norms), v_(1) = ‖W‖_∞ and ‖ν‖₁ = ‖vec W‖₁. We give two sound ways to bound ‖ν‖₁:
  * ``rhs_fro``: Cauchy–Schwarz over all h·d_in entries, ‖vec W‖₁ ≤ √(h·d_in)‖W‖_F, so
    ‖W‖_∞ ≤ (1 − ε_ν)/(1 − β_ν) · √(h·d_in)/k_ν · ‖W‖_F (h = out, the number of neurons);
  * ``rhs_rows`` (our reading of the √(h k_r) term): if every row w_i keeps k_r entries with measured relative ℓ1
    residual ε_{r,i}, then ‖w_i‖₁ = ‖(w_i)_{k_r}‖₁/(1 − ε_{r,i}) ≤ √k_r‖w_i‖₂/(1 − ε_{r,i}), and Σ_i‖w_i‖₂ ≤ √h‖W‖_F,
    so ‖W‖_∞ ≤ (1 − ε_ν)/(1 − β_ν) · √(h k_r)/(k_ν(1 − ε_r)) · ‖W‖_F with ε_r = max_i ε_{r,i}. With k_r = d_in it
    is ``rhs_fro``; it is smaller when rows are entry-compressible.
  The reported neuron ``rhs`` is the smaller of the two. The printed h·ε_r/k_ν term is not reproduced.
If β = 1 (the k-th entry is 0) the bound is +∞, still true. The zero matrix gets rhs = 0 (= lhs).

**Theorem 3.2** (docs/paper.md §3.4). Φ(x) = φ(W^λ … φ(W^1 x)) with ReLU φ is continuous and piecewise linear; on each
linear region its Jacobian is D_λ W^λ D_{λ−1} … D_1 W^1 with binary diagonal D's, so its global Lipschitz constant
(w.r.t. ‖·‖_p on input and output, p ∈ {2, ∞}, ‖·‖_∞ the induced max-row-ℓ1 norm) is at most the product of any
grouping of that product into blocks: an unpaired layer contributes ‖W^l‖_p (‖D‖_p ≤ 1), a pair (l, l+1)
contributes any upper bound of max_D ‖W^{l+1} D W^l‖_p — the alignment bound A_p(l)·‖W^{l+1}‖‖W^l‖
(:func:`crobust.metrics.alignment.alignment_term`) or the direct max/bound over the full matrices. The naive bound is
Π_l ‖W^l‖_p. The aligned bound chooses disjoint adjacent pairs to minimise the product with the linear DP
f(i) = min(f(i−1)·‖W^i‖, f(i−2)·c(i−1, i)), f(0) = 1, so it is never above the naive product (the empty pairing is
allowed) and, with sound pair factors, never below the true Lipschitz constant. Models that normalise their
pixel input inside (x − μ)/s multiply the bound by ``input_scale`` = 1/min(s) (the ‖·‖_p norm of diag(1/s)).

**Corollary 3.3** (docs/paper.md §3.5). For a binary logistic head C (a vector on z = Φ(x)) and the mean logistic
loss F, ℓ is 1-Lipschitz in the margin and |Cᵀ(Φ(x+a) − Φ(x))| ≤ ‖C‖_{p*}·L̂^p_Φ·‖a‖_p (Hölder, p* the dual
exponent), so F^adv_∞ ≤ F + δ·L̂^∞_Φ·‖C‖₁ and F^adv_2 ≤ F + δ·L̂²_Φ·‖C‖₂. A two-class softmax head with rows c_0, c_1
is exactly the logistic model with C = c_1 − c_0 (:func:`binary_head_vector`).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError, check_choice
from crobust.metrics import _common as C
from crobust.metrics._common import kept_count
from crobust.metrics.alignment import MODES, _natural, alignment_term, max_pattern_norm, op_norm
from crobust.metrics.compressibility import _vec_stats
from crobust.metrics.spectral import norm_fro, singular_values

__all__ = [
    "theorem31_spectral", "theorem31_neuron", "theorem31_check", "lipschitz_naive", "lipschitz_aligned",
    "encoder_lipschitz", "robustness_gap_bound", "adversarial_risk_bound", "binary_head_vector",
    "mean_logistic_loss", "empirical_gap",
]


def _chain_bound(one_minus_eps, one_minus_beta, K, factor):
    """(1 − ε)/(1 − β)/K · factor, +∞ when 1 − β = 0 and factor > 0, 0 when factor = 0."""
    num = one_minus_eps * factor / K
    return jnp.where(factor > 0, jnp.where(one_minus_beta > 0, num / jnp.where(one_minus_beta > 0,
                                                                                 one_minus_beta, 1.0), jnp.inf), 0.0)


def _spectral_rhs(sig, fro, K):
    """Theorem 3.1 spectral RHS from σ (…, h), ‖W‖_F (…) and the kept count K (int or traced)."""
    h = sig.shape[-1]
    _, _, ome, omb = _vec_stats(sig, K, (1,))
    return _chain_bound(ome, omb, K, math.sqrt(h) * fro), ome, omb


def _neuron_rhs(w, fro, K, Kr):
    """Theorem 3.1 neuron RHS (Frobenius form, row-refined form) of W (…, h, d_in); K neurons, Kr entries per row."""
    h, d_in = w.shape[-2:]
    nu = jnp.sum(jnp.abs(w), axis=-1)
    _, _, ome, omb = _vec_stats(nu, K, (1,))
    rhs_fro = _chain_bound(ome, omb, K, math.sqrt(h * d_in) * fro)
    _, _, row_ome, _ = _vec_stats(w, Kr, (1,))                  # (…, h): 1 − ε_{r,i}
    eps_r = 1.0 - jnp.min(row_ome, axis=-1)                     # ε_r = max_i ε_{r,i}
    rhs_rows = _chain_bound(ome, omb, K, jnp.sqrt(h * jnp.asarray(Kr, jnp.float32)) * fro
                            / jnp.maximum(1.0 - eps_r, 1e-30))
    return rhs_fro, rhs_rows, ome, omb, eps_r


@functools.partial(jax.jit, static_argnames=("method",))
def _theorem31_spectral(w, K, method):
    sig = singular_values(w, method=method)
    rhs, ome, omb = _spectral_rhs(sig, norm_fro(w), K)
    return {"lhs": sig[..., 0], "rhs": rhs, "eps_sigma_q1": 1.0 - ome, "beta_sigma": 1.0 - omb,
            "k_sigma": jnp.full(rhs.shape, K, jnp.int32)}


def theorem31_spectral(w, k=None, *, kappa=None, method="auto"):
    """Theorem 3.1, spectral form, on W (..., out, in), with q = 1 exact-ε.

    Returns (...,) arrays: ``lhs`` = ‖W‖₂, ``rhs`` = (1 − ε_σ)/(1 − β_σ)·√h/k_σ·‖W‖_F, ``eps_sigma_q1``,
    ``beta_sigma``, and ``k_sigma`` (int32), h = min(out, in), k_σ from ``k`` or ``kappa`` of h.
    """
    w = C.check_matrix(w)
    K = kept_count(min(w.shape[-2:]), k, kappa=kappa)
    return _theorem31_spectral(w, jnp.int32(K), method)


@jax.jit
def _theorem31_neuron(w, K, Kr):
    rhs_fro, rhs_rows, ome, omb, eps_r = _neuron_rhs(w, norm_fro(w), K, Kr)
    lhs = jnp.max(jnp.sum(jnp.abs(w), axis=-1), axis=-1)
    return {"lhs": lhs, "rhs_fro": rhs_fro, "rhs_rows": rhs_rows, "rhs": jnp.minimum(rhs_fro, rhs_rows),
            "eps_nu_q1": 1.0 - ome, "beta_nu": 1.0 - omb, "eps_row_q1_max": eps_r,
            "k_nu": jnp.full(lhs.shape, K, jnp.int32), "k_row": jnp.full(lhs.shape, Kr, jnp.int32)}


def theorem31_neuron(w, k=None, *, kappa=None, k_row=None, kappa_row=None):
    """Theorem 3.1, neuron form as reconstructed in the module docstring, on W (..., out, in), q = 1 exact-ε.

    ``k``/``kappa`` count neurons (rows); ``k_row``/``kappa_row`` the entries kept per row for ``rhs_rows``
    (default: the same kept fraction ``kappa`` of in, or all ``in`` entries when ``k`` is given as a count).
    Returns (...,) arrays ``lhs`` = ‖W‖_∞, ``rhs_fro``, ``rhs_rows``, ``rhs`` = their minimum, ``eps_nu_q1``,
    ``beta_nu``, ``eps_row_q1_max`` (ε_r), ``k_nu``, ``k_row``.
    """
    w = C.check_matrix(w)
    h, d_in = w.shape[-2:]
    K = kept_count(h, k, kappa=kappa)
    if k_row is None and kappa_row is None:
        Kr = kept_count(d_in, kappa=kappa) if kappa is not None else d_in
    else:
        Kr = kept_count(d_in, k_row, kappa=kappa_row)
    return _theorem31_neuron(w, jnp.int32(K), jnp.int32(Kr))


def theorem31_check(w, k=None, *, kappa=None, rtol=1e-5, method="auto"):
    """Both forms of Theorem 3.1 on W (..., out, in): {'spectral_holds', 'neuron_holds' (every neuron RHS),
    'spectral_slack' = rhs/lhs, 'neuron_slack' = rhs/lhs} with ``holds`` = lhs ≤ rhs·(1 + rtol) (float32 rounding
    can put lhs a hair above an equality case, e.g. an orthogonal matrix at k = 1)."""
    s = theorem31_spectral(w, k, kappa=kappa, method=method)
    n = theorem31_neuron(w, k, kappa=kappa)
    tol = 1.0 + rtol
    neuron_ok = (n["lhs"] <= n["rhs_fro"] * tol) & (n["lhs"] <= n["rhs_rows"] * tol)
    return {"spectral_holds": s["lhs"] <= s["rhs"] * tol, "neuron_holds": neuron_ok,
            "spectral_slack": C.safe_div(s["rhs"], s["lhs"], 1.0), "neuron_slack": C.safe_div(n["rhs"], n["lhs"], 1.0)}


# ---------------------------------------------------------------------------------------------------------------
# Lipschitz bounds


@jax.jit
def lipschitz_naive(norms):
    """Π_l ‖W^l‖_p over the last axis of ``norms`` (..., λ)."""
    return jnp.prod(jnp.asarray(norms, jnp.float32), axis=-1)


@jax.jit
def lipschitz_aligned(norms, pair_factors):
    """Best product over partitions of layers 1…λ into singletons and adjacent pairs (O(λ) dynamic programme).

    Args:
      norms: (..., λ) per-layer factors ‖W^l‖_p (≥ 0).
      pair_factors: (..., λ−1); entry l is a factor for the block (l, l+1), e.g. an upper bound of
        max_D ‖W^{l+1} D W^l‖_p.

    Returns {'bound': (...,), 'log_bound': (...,), 'paired': (..., λ−1) bool — True where the block (l, l+1) is
    used}. Computed in log space (no overflow for deep nets); 0 factors give 0.
    """
    norms = jnp.asarray(norms, jnp.float32)
    pair_factors = jnp.asarray(pair_factors, jnp.float32)
    lam = norms.shape[-1]
    if lam < 1 or pair_factors.shape[-1] != lam - 1:
        raise CrobustError(f"need norms (..., λ ≥ 1) and pair_factors (..., λ-1); got {norms.shape} and "
                           f"{pair_factors.shape}")
    ln = jnp.log(norms)
    lp = jnp.log(pair_factors)
    f = [jnp.zeros(norms.shape[:-1], jnp.float32), ln[..., 0]]       # f[i]: best log-product of the first i layers
    took_pair = [None, jnp.zeros(norms.shape[:-1], bool)]
    for i in range(2, lam + 1):
        single = f[i - 1] + ln[..., i - 1]
        pair = f[i - 2] + lp[..., i - 2]
        use = pair < single
        f.append(jnp.where(use, pair, single))
        took_pair.append(use)
    # backtrack with a traced position
    pos = jnp.full(norms.shape[:-1], lam, jnp.int32)
    paired = [jnp.zeros(norms.shape[:-1], bool) for _ in range(lam - 1)]
    for i in range(lam, 0, -1):
        here = pos == i
        if i >= 2:
            tp = here & took_pair[i]
            paired[i - 2] = paired[i - 2] | tp
            pos = jnp.where(here, jnp.where(took_pair[i], i - 2, i - 1), pos)
        else:
            pos = jnp.where(here, 0, pos)
    paired = jnp.stack(paired, axis=-1) if lam > 1 else jnp.zeros((*norms.shape[:-1], 0), bool)
    # the empty pairing is always allowed, so the optimum is ≤ the naive product; clamp away log/exp rounding
    log_naive = jnp.sum(ln, axis=-1)
    log_bound = jnp.minimum(f[lam], log_naive)
    bound = jnp.minimum(jnp.exp(log_bound), jnp.prod(norms, axis=-1))
    return {"bound": bound, "log_bound": log_bound, "paired": paired}


@functools.partial(jax.jit, static_argnames=("p", "k", "kappa", "form", "mode", "direct", "direct_mode",
                                             "max_exact"))
def encoder_lipschitz(mats: Sequence, p=None, *, k=None, kappa=0.1, form=None, mode="auto", patterns=None,
                      direct=False, direct_mode="bound", input_scale=1.0, max_exact=14):
    """Naive and aligned Lipschitz bounds \\hat L^p_Φ of the encoder W^1 … W^λ (hidden layers, head excluded).

    Args:
      mats: the λ encoder matrices, each one (out, in) matrix (vmap over members).
      p / form / k / kappa / mode / max_exact: as :func:`crobust.metrics.alignment.alignment_term` for each pair.
      patterns: optional sequence of λ−1 (N, h_l) activation indicators of layers 1…λ−1, for ``mode='observed'``.
      direct: also bound each pair directly, max_D ‖W^{l+1} D W^l‖_p on the full matrices (``direct_mode``), and
        use the smaller of the two pair factors.
      input_scale: multiply both bounds (1/min(std) for models that normalise their pixel input).

    Returns a dict: ``naive``, ``aligned``, ``log_naive``, ``log_aligned`` (), ``paired`` (λ−1,) bool,
    ``norms`` (λ,), ``pair_factors`` (λ−1,), ``A``, ``R`` (λ−1,). With ``mode='observed'`` the aligned value is an
    estimate, not a bound.
    """
    form, p = _natural(form, p)
    check_choice("mode", mode, MODES)
    mats = [jnp.asarray(m, jnp.float32) for m in mats]
    if not mats:
        raise CrobustError("encoder_lipschitz needs at least one matrix")
    for i, m in enumerate(mats):
        if m.ndim != 2:
            raise CrobustError(f"mats[{i}] must be one (out, in) matrix (vmap over members), got {tuple(m.shape)}")
    for i in range(len(mats) - 1):
        if mats[i + 1].shape[1] != mats[i].shape[0]:
            raise CrobustError(f"mats[{i + 1}] {tuple(mats[i + 1].shape)} does not take mats[{i}] "
                               f"{tuple(mats[i].shape)}'s outputs")
    if patterns is not None and len(patterns) != len(mats) - 1:
        raise CrobustError(f"patterns must have one (N, h) array per pair ({len(mats) - 1}), got {len(patterns)}")
    norms = jnp.stack([op_norm(m, p) for m in mats])
    factors, A, R = [], [], []
    for i in range(len(mats) - 1):
        pat = None if patterns is None else patterns[i]
        a = alignment_term(mats[i], mats[i + 1], k, kappa=None if k is not None else kappa, p=p, form=form,
                           mode=mode, patterns=pat, max_exact=max_exact)
        f = a["pair_bound"]
        if direct:
            f = jnp.minimum(f, max_pattern_norm(mats[i], mats[i + 1], p, mode=direct_mode, patterns=pat,
                                                max_exact=max_exact))
        factors.append(f)
        A.append(a["A"])
        R.append(a["R"])
    empty = jnp.zeros((0,), jnp.float32)
    factors = jnp.stack(factors) if factors else empty
    dp = lipschitz_aligned(norms, factors)
    scale = jnp.asarray(input_scale, jnp.float32)
    naive = lipschitz_naive(norms)
    return {"naive": naive * scale, "aligned": dp["bound"] * scale,
            "log_naive": jnp.sum(jnp.log(norms)) + jnp.log(scale), "log_aligned": dp["log_bound"] + jnp.log(scale),
            "paired": dp["paired"], "norms": norms, "pair_factors": factors,
            "A": jnp.stack(A) if A else empty, "R": jnp.stack(R) if R else empty}


# ---------------------------------------------------------------------------------------------------------------
# Corollary 3.3


def _dual_norm(c, p):
    p = C.check_p(p)
    c = jnp.asarray(c, jnp.float32)
    return jnp.sum(jnp.abs(c), axis=-1) if p == "inf" else jnp.sqrt(jnp.sum(jnp.square(c), axis=-1))


def robustness_gap_bound(delta, lipschitz, c, p):
    """Corollary 3.3's bound on the robustness gap Δ^adv_p = F^adv_p − F: δ·\\hat L^p_Φ·‖C‖_{p*}
    (‖C‖₁ for p = ∞, ‖C‖₂ for p = 2). c: (..., h) binary head vector; delta, lipschitz broadcast. → (...,)."""
    if isinstance(delta, (int, float)) and delta < 0:
        raise CrobustError(f"delta must be >= 0, got {delta}")
    return jnp.asarray(delta, jnp.float32) * jnp.asarray(lipschitz, jnp.float32) * _dual_norm(c, p)


def adversarial_risk_bound(F, delta, lipschitz, c, p):
    """Corollary 3.3: F^adv_p(θ; δ) ≤ F + δ·\\hat L^p_Φ·‖C‖_{p*}, with F the clean mean logistic loss."""
    return jnp.asarray(F, jnp.float32) + robustness_gap_bound(delta, lipschitz, c, p)


def binary_head_vector(w_head):
    """C for Corollary 3.3 from a head W (..., n_out, h) in paper orientation: c_1 − c_0 for a 2-class softmax head
    (its cross-entropy is the logistic loss of the margin (c_1 − c_0)ᵀz), or the single row of a 1-output head."""
    w_head = C.check_matrix(w_head, "w_head")
    n_out = w_head.shape[-2]
    if n_out == 2:
        return w_head[..., 1, :] - w_head[..., 0, :]
    if n_out == 1:
        return w_head[..., 0, :]
    raise CrobustError(f"Corollary 3.3 needs a binary head (1 or 2 outputs), got {n_out} outputs")


def mean_logistic_loss(logits, labels):
    """Mean loss over N points: logits (N,) with labels in {0, 1} → mean softplus(−(2y−1)·logit) (binary
    logistic); logits (N, C) with integer labels → mean softmax cross-entropy (for C = 2 the same number)."""
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels)
    if logits.ndim == 1:
        s = 2.0 * labels.astype(jnp.float32) - 1.0
        return jnp.mean(jax.nn.softplus(-s * logits))
    if logits.ndim == 2:
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
        return jnp.mean(lse - picked)
    raise CrobustError(f"logits must be (N,) or (N, C), got shape {tuple(logits.shape)}")


def empirical_gap(logits, logits_adv, labels):
    """Measured robustness gap: mean loss on x_adv − mean loss on x (:func:`mean_logistic_loss`), given the
    model's logits on both (the attack lives in :mod:`crobust.attacks`)."""
    return mean_logistic_loss(logits_adv, labels) - mean_logistic_loss(logits, labels)
