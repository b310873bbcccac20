"""Singular values, operator and Frobenius norms, their ratios, stable rank and effective rank.

W has the paper's orientation (..., out, in); a neuron is a row. Norms:

- ‖W‖_∞ = max_i Σ_j |W_ij|, the operator norm induced by ℓ∞ on inputs and outputs (max row ℓ1 norm);
- ‖W‖₂ = σ_1, the largest singular value (operator norm induced by ℓ2);
- ‖W‖_F = (Σ W_ij²)^{1/2} = ‖σ‖₂.

Ranks, from the singular values σ (h = min(out, in) of them):

- stable rank ‖W‖_F² / ‖W‖₂² = Σσ_i² / σ_1² ∈ [1, h];
- effective rank (Roy & Vetterli 2007) exp(H(p)) with p = σ / Σσ and H(p) = −Σ p_i ln p_i (0 ln 0 = 0) ∈ [1, h];
- ``effective_rank_log_reference`` = H(p), what the reference code logs as ``par_er`` (it calls the entropy the
  effective rank; docs/reference-code.md §6.2). The reference reshapes a 4-D conv tensor to (out·in, kh·kw) for it; we
  use the same (out, in·kh·kw) matricisation as every other metric, so reshape yourself to reproduce its number.

All-zero matrix (a dead layer): every norm, ratio and rank is defined as 0 (it has rank 0; 0/0 ratios are given
the value 0) and the entropy is 0 (p is the zero vector and 0 ln 0 = 0). For non-zero W, exp(H) = effective rank.

Precision (:mod:`crobust.precision`): matrix products are computed with ``precision=HIGHEST`` inside
``precision.full()``, so that no backend silently uses bf16/tf32 passes; results are float32.

Singular values (:func:`singular_values`), ``method``:

- ``'svd'``: :func:`crobust._linalg.svdvals` (LAPACK gesvd, one matrix per call on CPU — see that module for the
  jaxlib 0.10.2 batched-LAPACK deadlock it avoids). Backward stable: every σ_i has absolute error ≈ ε_mach·σ_1.
- ``'gram'``: σ_i = √λ_i(G) with G = W Wᵀ or WᵀW (the smaller side), via Householder tridiagonalisation
  (``lax.linalg.tridiagonal``, LAPACK sytrd) and Sturm-sequence bisection for the eigenvalues
  (``jax.scipy.linalg.eigh_tridiagonal``), i.e. without eigenvectors (faster than gesdd on wide layers:
  ``benchmarks/bench_metrics.py``). Its absolute error is ≈ ε_mach·σ_1² on σ_i², so singular values far below √ε_mach·σ_1 ≈ 3e-4·σ_1
  are not resolved (they come out as noise of that size, not as 0).
- ``'auto'`` (default): for min(out, in) ≥ ``GRAM_MIN_SIZE`` (512) on CPU, ``'gram'`` followed by an
  a-posteriori check; if the worst-case error of the nuclear norm implied by the Gram route,
  Σ_i min(√η, η/σ̂_i) with η = ``GRAM_ETA``·ε_mach·σ̂_1², exceeds ``GRAM_TOL``·Σσ̂_i, that matrix is recomputed
  with ``'svd'`` (``lax.cond``, so only the taken branch runs). Well-conditioned or full-rank random layers pass;
  (nearly) low-rank layers, where the tail of tiny singular values matters for ε_σ and the effective rank, fall
  back to the SVD. Smaller matrices use ``'svd'`` on every backend, so ``'auto'`` has one accuracy contract
  everywhere (per-σ SVD accuracy below ``GRAM_MIN_SIZE``; the guarded nuclear-norm accuracy above; on CPU the Gram
  route's compiled program is also large). On GPU/TPU the Gram route (``'gram'``, and ``'auto'`` on big layers)
  runs every matrix of the batch through one batched ``eigvalsh`` of the Gram matrices
  (:func:`_sv_gram_eigh_batched`; far cheaper than a batched SVD there), with the same guard
  and a batched SVD only when some matrix fails it. Under an outer ``jax.vmap`` the cond becomes a
  select and both branches run; to avoid that (and batched LAPACK calls) the per-matrix routine is a
  ``custom_vmap`` that turns an outer vmap into a ``lax.map`` on CPU, and :func:`singular_values` loops over its
  own leading axes the same way.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import eigh_tridiagonal
from jax.scipy.special import entr

from crobust import _linalg, precision
from crobust._errors import check_choice
from crobust.metrics import _common as C

__all__ = [
    "singular_values", "singular_values_with_info", "norm_inf", "norm_2", "norm_fro", "norm_ratios",
    "stable_rank", "effective_rank", "effective_rank_log_reference", "spectral_summary", "SV_METHODS",
]

SV_METHODS = ("auto", "gram", "svd")
#: η = GRAM_ETA · ε_mach · σ̂_1² is the assumed absolute error of each eigenvalue of the Gram matrix (formation of
#: G in float32 plus sytrd/bisection backward error). Measured errors on 2000-wide random, low-rank and decaying
#: spectra were ≤ 2.2 ε_mach·σ_1², so 8 leaves a margin of ~4.
GRAM_ETA = 8.0
#: the relative worst-case nuclear-norm error above which ``'auto'`` falls back to the SVD.
GRAM_TOL = 1e-4
#: ``'auto'`` uses the SVD directly below this min(out, in): small SVDs are cheap and the Gram route's compiled
#: program (Sturm bisection) is large, so it only pays off on big layers.
GRAM_MIN_SIZE = 512


def _resolve_method(method: str, shape) -> str:
    check_choice("singular-value method", method, SV_METHODS)
    if method == "auto":
        return "auto" if min(shape[-2:]) >= GRAM_MIN_SIZE else "svd"
    return method


def _sv_gram_eigh_batched(flat, fallback_allowed: bool):
    """The accelerator route: (σ (B, h) descending, used_svd (B,)) for B matrices (B, m, n) in one batched call.

    G = B̂ B̂ᵀ (B̂ = W/max|W| on its smaller side) at HIGHEST, then ``jnp.linalg.eigvalsh`` batched (cuSOLVER syevd
    on GPU, Jacobi on TPU; no tridiagonal/bisection, which has no TPU lowering). The same a-posteriori guard as the
    CPU Gram route marks matrices whose nuclear norm could be off by more than ``GRAM_TOL``; if any is marked, one
    batched SVD runs (``lax.cond`` on "any", so well-conditioned batches never pay for it) and replaces the marked
    matrices' σ. η = GRAM_ETA·ε·σ̂_1² assumes a backward-stable eigensolver (error ≈ ε‖G‖ per eigenvalue)."""
    m, n = flat.shape[-2:]
    scale = jnp.max(jnp.abs(flat), axis=(-2, -1))
    ws = flat / jnp.where(scale > 0, scale, 1.0)[:, None, None]
    b = ws if m <= n else jnp.swapaxes(ws, -1, -2)
    g = jnp.matmul(b, jnp.swapaxes(b, -1, -2), precision=C.HIGHEST)
    lam = jnp.flip(jnp.linalg.eigvalsh(g), axis=-1)
    sig_n = jnp.sqrt(jnp.maximum(lam, 0.0))
    sig = sig_n * scale[:, None]
    if not fallback_allowed:
        return sig, jnp.zeros(flat.shape[:1], bool)
    bad = jax.vmap(_gram_error_too_large)(sig_n)
    sig = lax.cond(jnp.any(bad), lambda: jnp.where(bad[:, None], _sv_svd(flat), sig), lambda: sig)
    return sig, bad


def _sv_svd(w):
    with precision.full():
        return _linalg.svdvals(w)


def _gram_lower(b):
    """B Bᵀ for B (h, k), exact in its lower triangle only (what sytrd with ``lower=True`` reads).

    Rows [0, s) of G need only columns [0, s): G = [[B₁B₁ᵀ, 0], [B₂Bᵀ]] with B₁ = B[:s], B₂ = B[s:], s = h/2, is 3/4
    of the products of the full B Bᵀ."""
    h = b.shape[0]
    if h < 64:
        return jnp.matmul(b, b.T, precision=C.HIGHEST)
    s = h // 2
    top = jnp.matmul(b[:s], b[:s].T, precision=C.HIGHEST)                  # (s, s)
    bottom = jnp.matmul(b[s:], b.T, precision=C.HIGHEST)                   # (h − s, h)
    return jnp.concatenate([jnp.pad(top, ((0, 0), (0, h - s))), bottom], axis=0)


def _sv_gram_normalised(w):
    """Singular values of w / max|w| by the Gram route, and that scale. w (m, n) → (min(m, n),), ()."""
    m, n = w.shape
    scale = jnp.max(jnp.abs(w))
    ws = w / jnp.where(scale > 0, scale, 1.0)
    with precision.full():
        g = _gram_lower(ws if m <= n else ws.T)
    if g.shape[0] == 1:
        lam = g[0]
    else:
        _, d, e, _ = lax.linalg.tridiagonal(g, lower=True)     # sytrd 'L' reads only the lower triangle
        lam = eigh_tridiagonal(d, e, eigvals_only=True)
    lam = jnp.flip(lam)                      # descending
    return jnp.sqrt(jnp.maximum(lam, 0.0)), scale


def _gram_error_too_large(sig_n):
    """Worst-case relative nuclear-norm error of the Gram route exceeds GRAM_TOL (or something is non-finite)."""
    eta = GRAM_ETA * C.F32_EPS * sig_n[0] ** 2
    per = jnp.where(sig_n > 0, jnp.minimum(jnp.sqrt(eta), eta / jnp.where(sig_n > 0, sig_n, 1.0)), jnp.sqrt(eta))
    total = jnp.sum(sig_n)
    bad = jnp.sum(per) > GRAM_TOL * total
    return jnp.logical_or(bad, ~jnp.all(jnp.isfinite(sig_n)))


def _sv_gram_or_fallback(w, fallback_allowed):
    """(σ descending, used_svd) for one matrix w (m, n) by the Gram route, with the SVD fallback if allowed."""
    sig_n, scale = _sv_gram_normalised(w)
    if not fallback_allowed:
        return sig_n * scale, jnp.array(False)
    fallback = _gram_error_too_large(sig_n)
    sig = lax.cond(fallback, lambda: _sv_svd(w), lambda: sig_n * scale)
    return sig, fallback


def _one_at_a_time(fallback_allowed):
    """The Gram route for one matrix, wrapped so that under ``jax.vmap`` it becomes a ``lax.map``: a batched LAPACK
    call (sytrd here) can deadlock jaxlib 0.10.2 on CPU (see :mod:`crobust._linalg`), and a cond under vmap would
    run both branches."""
    @jax.custom_batching.custom_vmap
    def one(w):
        return _sv_gram_or_fallback(w, fallback_allowed)

    @one.def_vmap
    def _(axis_size, in_batched, w):
        del axis_size, in_batched
        return lax.map(one, w), (True, True)

    return one


_GRAM_ONE = {True: _one_at_a_time(True), False: _one_at_a_time(False)}


@functools.partial(jax.jit, static_argnames=("method",))
def singular_values_with_info(w, *, method="auto"):
    """(σ, used_svd): singular values of W (..., m, n), descending, shape (..., min(m, n)), and a (...,) bool that
    says which matrices were computed by the SVD (always True for ``'svd'``, False for ``'gram'``)."""
    w = C.check_matrix(w)
    method = _resolve_method(method, w.shape)
    lead, (m, n) = w.shape[:-2], w.shape[-2:]
    if method == "svd":                      # crobust._linalg: unbatched LAPACK calls on CPU, batched elsewhere
        return _sv_svd(w), jnp.ones(lead, bool)
    flat = w.reshape((-1, m, n))
    if C.is_cpu():
        sig, used = lax.map(_GRAM_ONE[method == "auto"], flat)
    else:
        sig, used = _sv_gram_eigh_batched(flat, method == "auto")
    return sig.reshape(*lead, min(m, n)), used.reshape(lead)


def singular_values(w, *, method="auto"):
    """Singular values σ_1 ≥ … ≥ σ_h of W (..., m, n), h = min(m, n), float32, shape (..., h).

    ``method``: ``'auto'`` (default), ``'gram'`` or ``'svd'`` — see the module docstring for accuracy and speed.
    """
    return singular_values_with_info(w, method=method)[0]


@jax.jit
def norm_inf(w):
    """‖W‖_∞ = max row ℓ1 norm of W (..., out, in) → (...,)."""
    w = C.check_matrix(w)
    return jnp.max(jnp.sum(jnp.abs(w), axis=-1), axis=-1)


@functools.partial(jax.jit, static_argnames=("method",))
def norm_2(w, *, method="auto"):
    """‖W‖₂ = σ_1 of W (..., out, in) → (...,)."""
    return singular_values(w, method=method)[..., 0]


@jax.jit
def norm_fro(w):
    """‖W‖_F of W (..., out, in) → (...,)."""
    w = C.check_matrix(w)
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=(-2, -1)))


@functools.partial(jax.jit, static_argnames=("method",))
def norm_ratios(w, *, method="auto"):
    """{'ratio_2_fro': ‖W‖₂/‖W‖_F, 'ratio_inf_fro': ‖W‖_∞/‖W‖_F}, each (...,); 0 for the zero matrix.

    ‖W‖₂/‖W‖_F ∈ [1/√h, 1] is 1/√(stable rank); ‖W‖_∞/‖W‖_F ∈ [1/√out, √in] (the upper end is one dense row of
    equal-magnitude entries)."""
    fro = norm_fro(w)
    return {"ratio_2_fro": C.safe_div(norm_2(w, method=method), fro), "ratio_inf_fro": C.safe_div(norm_inf(w), fro)}


@jax.jit
def stable_rank(sigma):
    """Σσ_i² / σ_1² from singular values σ (..., h) (descending, as :func:`singular_values` returns); 0 for σ = 0."""
    sigma = C.check_vector(sigma, "sigma")
    return C.safe_div(jnp.sum(jnp.square(sigma), axis=-1), jnp.max(sigma, axis=-1) ** 2)


@jax.jit
def effective_rank_log_reference(sigma):
    """H(p) = −Σ p_i ln p_i with p = σ/Σσ: the reference code's ``par_er`` (natural log). σ (..., h) → (...,);
    0 for σ = 0."""
    sigma = C.check_vector(sigma, "sigma")
    p = C.safe_div(sigma, jnp.sum(sigma, axis=-1, keepdims=True))
    return jnp.sum(entr(p), axis=-1)


@jax.jit
def effective_rank(sigma):
    """Roy–Vetterli effective rank exp(H(σ/Σσ)) ∈ [1, h] from σ (..., h); 0 for σ = 0 (the zero matrix's rank)."""
    sigma = C.check_vector(sigma, "sigma")
    return jnp.where(jnp.max(sigma, axis=-1) > 0, jnp.exp(effective_rank_log_reference(sigma)), 0.0)


@functools.partial(jax.jit, static_argnames=("method",))
def spectral_summary(w, *, method="auto"):
    """Every norm and rank of W (..., out, in) in one dict of (...,) arrays: ``norm_inf``, ``norm_2``, ``norm_fro``,
    ``ratio_2_fro``, ``ratio_inf_fro``, ``stable_rank``, ``effective_rank``, ``effective_rank_log_reference``."""
    sig = singular_values(w, method=method)
    fro = norm_fro(w)
    ninf = norm_inf(w)
    return {
        "norm_inf": ninf, "norm_2": sig[..., 0], "norm_fro": fro,
        "ratio_2_fro": C.safe_div(sig[..., 0], fro), "ratio_inf_fro": C.safe_div(ninf, fro),
        "stable_rank": stable_rank(sig), "effective_rank": effective_rank(sig),
        "effective_rank_log_reference": effective_rank_log_reference(sig),
    }
