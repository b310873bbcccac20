"""Compressibility-inducing penalties and the scale-control projection, as pure functions of a parameter tree.

Every penalty is ``penalty(params, alpha) -> scalar`` with ``alpha`` a (traceable) strength, so a population
can carry one α per member; :func:`combined_penalty` sums several, each with its own strength (the trainer's
``TrainConfig.penalties``). Layers are found by :func:`crobust.models.matrices.layer_specs` (MLP ``hidden_<i>``,
``head``; conv models ``stem``, block convs, ``head``; ViT ``embedding``, …) and every matrix is taken in the
paper's orientation W (out × in), neurons/filters = rows, convolutions matricised (out, in·kh·kw), through
:mod:`crobust.models.matrices`. Exclusions follow the reference code (docs/reference-code.md §2): the "regularised
layers" (:func:`~crobust.models.matrices.regularised_matrices`) are every layer but the head and the stem (the
first conv, which the reference's group lasso skips as "the first Conv2d met"; the ViT patch embedding). For an
MLP these are the hidden layers, input layer included.

====================  ==========================================================  ==============================
name                  penalty R(θ)                                                layers
====================  ==========================================================  ==============================
``l1``                α Σ_θ |θ|                                                   **all** parameters (head, biases,
                                                                                  BN scale/bias; not running stats)
``group_lasso``       α Σ_l Σ_i ‖W^l_{i,:}‖₂  (row ℓ2, not squared)                regularised layers
``scale_invariant``   α Σ_l (Σ_i ‖W^l_{i,:}‖₂) / ‖W^l‖_F  ∈ α·[1, √h] per layer    regularised layers
``nuclear``           α Σ_l Σ_j σ_j(W^l)                                          regularised layers
``beta_control``      α Σ_l Var(top-K of ν^l), K = ⌈5 %⌉ of the rows (≥ 2)        regularised layers
``alignment``         α Σ_(l,l+1) A_∞(l) (sound bound, :func:`alignment`)         consecutive regularised layers
====================  ==========================================================  ==============================

The last two are the paper's mitigations (docs/paper.md §E11). The nuclear norm on conv layers is a choice: the
reference code's nuclear norm only sees 2-D parameters, so on a torchvision ResNet it penalises only the fc head;
here it acts on the matricised kernels of the regularised layers, like the other penalties.

Choices where the reference code is quirky:

- ``nuclear`` on a :class:`~crobust.models.mlp.LowRankMLP` penalises the product A·B (the matrix whose spectrum
  the paper studies); ``nuclear_factors`` reproduces the reference code, which penalises A and B separately.
- ``group_lasso``/``scale_invariant`` on a low-rank model are refused (the reference code asserts
  ``layer_rank == -1``).
- The reference code excludes the head by its output size (``out == num_classes``); we exclude it by name, so a
  hidden layer whose width equals the number of classes is still regularised.
- The nuclear-norm gradient is U Vᵀ (the polar factor of W) by an explicit VJP (:func:`nuclear_norm`). ``method``
  picks how it is computed: ``'polar'`` (scaled Newton–Schulz, matrix products only, :mod:`crobust._polar`; exact value
  ⟨Q, W⟩ and a valid ε-subgradient, guarded to ≤ 3e-6 relative), ``'svd'`` (:func:`crobust._linalg.svd`, one LAPACK
  call per matrix on CPU), or ``'auto'`` (default) = ``'polar'`` on every backend: on GPU/TPU a batched SVD is
  much slower than the products, and on CPU the polar route is faster than gesvd too
  (``benchmarks/bench_spectral.py``).

Projection (the paper's scale control, docs/paper.md §E1): :func:`frobenius_projection` rescales each hidden layer to
a reference Frobenius norm after every optimiser step, W ← W·‖W₀‖_F/‖W‖_F, so α changes the *structure* of W at
fixed *scale*. For a low-rank layer both factors are scaled by √(‖W₀‖_F/‖AB‖_F).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from crobust import _linalg, _polar
from crobust._errors import CrobustError, check_choice
from crobust.models.matrices import (get_leaf, hidden_matrices, kernel_to_matrix, layer_specs, regularised_matrices,
                                     spec_matrix)
from crobust.precision import HIGHEST

_EPS = 1e-12


def _tree(params):
    return params.get("params", params) if isinstance(params, Mapping) else params


def _is_low_rank(params) -> bool:
    return any(s.kind.startswith("low_rank") for s in layer_specs(params).values())


def l1(params, alpha):
    """α Σ|θ| over every parameter (weights, biases, head, BN scale/bias), as the reference ``--l1``; a variables
    dict's other collections (``batch_stats``: running statistics, not parameters) are not included."""
    return alpha * sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(_tree(params)))


def group_lasso(params, alpha):
    """α Σ_l Σ_i ‖W^l_{i,:}‖₂ over the regularised layers: the sum of output-neuron / filter (row) ℓ2 norms."""
    if _is_low_rank(params):
        raise CrobustError("group_lasso needs a dense model (the reference code asserts layer_rank == -1)")
    return alpha * sum(jnp.sum(_row_norms(w)) for w in regularised_matrices(params).values())


def scale_invariant(params, alpha):
    """α Σ_l ‖r^l‖₁/‖r^l‖₂ with r^l_i = ‖W^l_{i,:}‖₂ (= Σ_i‖w_i‖₂/‖W‖_F) over the regularised layers; invariant to
    W → cW."""
    if _is_low_rank(params):
        raise CrobustError("scale_invariant needs a dense model (the reference code asserts layer_rank == -1)")
    total = 0.0
    for w in regularised_matrices(params).values():
        r = _row_norms(w)
        total = total + jnp.sum(r) / (jnp.sqrt(jnp.sum(r * r)) + _EPS)
    return alpha * total


def nuclear(params, alpha, method: str = "auto"):
    """α Σ_l ‖W^l‖_* = α Σ_l Σ_j σ_j(W^l) over the regularised layers (W = A·B for a low-rank layer)."""
    return alpha * sum(nuclear_norm(w, method) for w in regularised_matrices(params).values())


def nuclear_factors(params, alpha, method: str = "auto"):
    """The reference code's nuclear norm on a low-rank model: α Σ_l (‖A^l‖_* + ‖B^l‖_*) over the regularised layers
    (A = upᵀ, B = downᵀ or the matricised down conv); dense layers as :func:`nuclear`."""
    total = 0.0
    for spec in _regularised_specs(params):
        leaf = get_leaf(params, spec)
        if spec.kind == "low_rank":
            mats = [leaf["down"], leaf["up"]]
        elif spec.kind == "low_rank_conv":
            mats = [kernel_to_matrix(leaf["down"], conv=True), leaf["up"]]
        else:
            mats = [spec_matrix(leaf, spec)]
        total = total + sum(nuclear_norm(m, method) for m in mats)
    return alpha * total


def _regularised_specs(params):
    return [s for s in layer_specs(params).values() if not (s.is_head or s.is_stem)]


BETA_TOP_FRACTION = 0.05


def beta_control(params, alpha, *, top_fraction: float = BETA_TOP_FRACTION, q: int = 1):
    """β-control (docs/paper.md §E11): α Σ_l Var(ν^l_(1), …, ν^l_(K)), the variance of the K largest filter norms of
    each regularised layer.

    ν^l_i = ‖W^l_{i,:}‖_q (q = 1 by default: the row ℓ1 norms on which this package defines ν and the dispersion
    β_ν = 1 − ν_(k)/ν_(1), :mod:`crobust.metrics.compressibility`; q = 2 for ℓ2 filter norms). K = ⌈top_fraction·h⌉
    by the reference rule K = h − ⌊(1 − κ)h⌋, raised to 2 (a variance of one value is 0) for layers with h ≥ 2 rows.
    Var is the population variance (1/K)Σ(ν_(j) − mean)². Pulling the top norms together lowers β without
    spreading the bottom ones, i.e. without undoing compressibility. The paper gives no formula beyond "variance of
    the top-5 % filter norms"; the norm, the K rule and the plain (not normalised) variance are this choice.
    Differentiable through ``lax.top_k``'s values (ties: any of the tied rows).
    """
    from crobust.metrics._common import kept_count

    if q not in (1, 2):
        raise CrobustError(f"beta_control norm q must be 1 or 2, got {q!r}")
    total = 0.0
    for w in regularised_matrices(params).values():
        nu = jnp.sum(jnp.abs(w), axis=-1) if q == 1 else _row_norms(w)
        h = nu.shape[-1]
        if h < 2:
            continue
        K = max(kept_count(h, kappa=top_fraction), 2)
        top, _ = jax.lax.top_k(nu, K)
        total = total + jnp.sum(jnp.var(top, axis=-1))
    return alpha * total


def alignment(params, alpha, *, kappa: float = 0.1):
    """Alignment regulariser (docs/paper.md §E11): α Σ A_∞(l) over consecutive regularised layers (l, l+1) that chain.

    A_∞(l) is :func:`crobust.metrics.alignment_term` with the neuron form, p = ∞, top-κ rows, and ``mode='bound'``:
    the **sound upper bound** max_i Σ_j ½(|W_k'||W_k| + |W_k'W_k|)_ij of max_D ‖W_k^{l+1} D W_k^l‖_∞ over ReLU patterns
    (two matrix products), divided by ‖W^{l+1}‖_∞‖W^l‖_∞, plus the remainder R_∞(l). This is the differentiable
    surrogate: the exact max over 2^h patterns has no useful gradient, the bound is differentiable almost everywhere
    (subgradients at ties of |·| and top-k), for any width, and upper-bounds the exact A_∞.

    Convolutions: W^l (out, in·kh·kw) is collapsed to C^l (out, in) with C_{oi} = Σ_taps |K_{o,i,tap}| (the row ℓ1
    norms, hence ‖·‖_∞ and the top-k rows, are those of W), so consecutive convs chain through their channels. A pair
    is used when the next layer's input size equals this layer's output size (shortcut convs, which take an earlier
    block's output, chain only where the channel counts match). Only the regularised layers enter (stem, head out),
    and only weight matrices of ReLU-style chains: attention projections (``DenseGeneral`` query/key/value/out of a
    ViT) are left out, so on a ViT the pairs are its MLP blocks' Dense_0 → Dense_1 (and Dense_1 → the next block's
    Dense_0, across the residual attention block).
    """
    from crobust.metrics.alignment import alignment_term

    mats = []
    for spec in _regularised_specs(params):
        if spec.kind == "dense_general":
            continue
        w = spec_matrix(get_leaf(params, spec), spec)
        if spec.kind in ("conv", "low_rank_conv"):
            leaf = get_leaf(params, spec)
            cin = (leaf["kernel"] if spec.kind == "conv" else leaf["down"]).shape[spec.lead + 2]
            w = jnp.sum(jnp.abs(w.reshape(w.shape[:-1] + (cin, -1))), axis=-1)
        mats.append(w)
    total = 0.0
    term = functools.partial(alignment_term, kappa=kappa, p="inf", form="neuron", mode="bound")
    for a, b in zip(mats[:-1], mats[1:]):
        if b.shape[-1] != a.shape[-2]:
            continue
        fn = lambda x, y: term(x, y)["A"]
        for _ in range(a.ndim - 2):                             # member axes
            fn = jax.vmap(fn)
        total = total + jnp.sum(fn(a, b))
    return alpha * total


def _row_norms(w):
    # sqrt with a floor so the subgradient at an exactly-zero row is 0, not NaN.
    return jnp.sqrt(jnp.sum(w * w, axis=-1) + _EPS) - jnp.sqrt(_EPS)


NUCLEAR_METHODS = ("auto", "polar", "svd")


def resolve_nuclear_method(method: str) -> str:
    """'auto' → 'polar' (fastest on every backend measured, see the module docstring); 'polar'/'svd' as given."""
    check_choice("nuclear-norm method", method, NUCLEAR_METHODS)
    return "polar" if method == "auto" else method


def nuclear_norm(w, method: str = "auto"):
    """‖W‖_* = Σ_j σ_j(W) over the last two axes (…, m, n) → (…,), with the gradient U Vᵀ (thin SVD W = U diag(σ) Vᵀ).

    ``method='svd'``: value Σσ from the SVD, gradient U Vᵀ of the computed singular vectors (exact where σ_j > 0;
    for σ_j = 0 the pair u_j v_jᵀ is an arbitrary unit-norm completion, still a subgradient).
    ``method='polar'`` (and ``'auto'``): value ⟨Q, W⟩ and gradient Q from :func:`crobust._polar.polar_with_info`;
    the value is exact up to the guarded error Σ(1 − q_i)σ_i ≤ 3e-6·‖W‖_*, the gradient a valid ε-subgradient
    with that ε (‖Q‖₂ ≤ 1, and for rank-deficient W the form U_r V_rᵀ + Z, Z ⟂ U_r, V_r, ‖Z‖₂ < 1).
    """
    return _nuclear_norm(w, resolve_nuclear_method(method))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _nuclear_norm(w, method):
    if method == "polar":
        return _polar.polar_with_info(w)[1]
    return jnp.sum(_linalg.svdvals(w), axis=-1)


def _nuclear_fwd(w, method):
    if method == "polar":
        q, val, _, _ = _polar.polar_with_info(w)
        return val, q
    u, s, vt = _linalg.svd(w)
    return jnp.sum(s, axis=-1), jnp.matmul(u, vt, precision=HIGHEST)


def _nuclear_bwd(method, q, g):
    del method
    return (jnp.asarray(g)[..., None, None] * q,)


_nuclear_norm.defvjp(_nuclear_fwd, _nuclear_bwd)


def none(params, alpha):
    """No penalty (0.0), so α = 0 and 'none' compile to the same program shape."""
    del params
    return 0.0 * alpha


PENALTIES: dict[str, Callable] = {
    "none": none,
    "l1": l1,
    "group_lasso": group_lasso,
    "scale_invariant": scale_invariant,
    "nuclear": nuclear,
    "nuclear_factors": nuclear_factors,
    "beta_control": beta_control,
    "alignment": alignment,
}


def get_penalty(name: str, *, nuclear_method: str = "auto") -> Callable:
    """The penalty function registered under ``name`` (see the table in the module docstring); the nuclear ones
    compute U Vᵀ by ``nuclear_method`` (:func:`nuclear_norm`)."""
    check_choice("regularizer", name, tuple(PENALTIES))
    fn = PENALTIES[name]
    if name in ("nuclear", "nuclear_factors"):
        method = resolve_nuclear_method(nuclear_method)
        return lambda params, alpha: fn(params, alpha, method)
    return fn


def combined_penalty(terms, *, nuclear_method: str = "auto") -> Callable:
    """``penalty(params, strengths)`` = Σ_t strengths[axis_t]·R_t(params) over ``terms`` = ((name_t, axis_t), …),
    each R_t the penalty :func:`get_penalty` (``name_t``) and ``strengths`` a mapping of member axes (e.g. one
    member's hyper-parameters). Terms are added in the given order; a single term is R_1(params,
    strengths[axis_1]) itself, the same computation as :func:`get_penalty`'s function. A term whose strength is
    0 adds 0·R_t(params), exactly 0 (and a zero gradient) wherever R_t is finite."""
    terms = tuple((str(name), str(axis)) for name, axis in terms)
    if not terms:
        raise CrobustError("a penalty needs at least one (regularizer, strength axis) term")
    fns = tuple((get_penalty(name, nuclear_method=nuclear_method), axis) for name, axis in terms)

    def penalty(params, strengths):
        first, axis = fns[0]
        total = first(params, strengths[axis])
        for fn, axis in fns[1:]:
            total = total + fn(params, strengths[axis])
        return total
    return penalty


# --------------------------------------------------------------------------------------------------------------
# Projections applied after each optimiser step.

def hidden_frobenius_norms(params) -> dict:
    """{layer name: ‖W^l‖_F} for every layer but the head (W = A·B for low-rank layers)."""
    return {name: jnp.sqrt(jnp.sum(w * w)) for name, w in hidden_matrices(params).items()}


def frobenius_projection(params, reference_norms: Mapping):
    """Rescale every layer named in ``reference_norms`` (normally all but the head, from
    :func:`hidden_frobenius_norms` at initialisation) so that ‖W^l‖_F = reference_norms[l]; other parameters
    (head, biases, batch norm) are left untouched.

    Dense/conv: kernel ← kernel·c with c = ref/‖W‖_F. Low rank: down ← down·√c, up ← up·√c (so A·B ← c·A·B).
    """
    wrapped = isinstance(params, Mapping) and "params" in params
    tree = _copy_tree(_tree(params))
    specs = layer_specs(tree)
    current = hidden_frobenius_norms(tree)
    for name, norm in current.items():
        if name not in reference_norms:
            continue
        c = reference_norms[name] / (norm + _EPS)
        spec = specs[name]
        parent = tree
        for part in spec.path[:-1]:
            parent = parent[part]
        leaf = dict(parent[spec.path[-1]])
        if "kernel" in leaf:
            leaf["kernel"] = leaf["kernel"] * _bcast_lead(c, leaf["kernel"], spec.lead)
        else:
            s = jnp.sqrt(c)
            leaf["down"] = leaf["down"] * _bcast_lead(s, leaf["down"], spec.lead)
            leaf["up"] = leaf["up"] * _bcast_lead(s, leaf["up"], spec.lead)
        parent[spec.path[-1]] = leaf
    if wrapped:
        out = dict(params)
        out["params"] = tree
        return out
    return tree


def _bcast_lead(c, like, lead: int):
    c = jnp.asarray(c)
    return c.reshape(c.shape + (1,) * (jnp.ndim(like) - c.ndim)) if lead else c


def _copy_tree(tree):
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


PROJECTIONS = ("none", "frobenius")
