"""Certified per-point robustness radii from pairwise Lipschitz constants: a lower bound on the adversarial radius.

Usage::

    import jax, jax.numpy as jnp
    from crobust.metrics import certified_radius, linear_pair_constants, mlp_pair_constants
    W = jax.random.normal(jax.random.key(0), (10, 64))          # linear model z = W x + b, paper orientation (C, d)
    x = jax.random.uniform(jax.random.key(1), (5, 64)); logits = x @ W.T
    y = jnp.argmax(logits, -1)
    r = certified_radius(logits, y, linear_pair_constants(W, "inf"))   # (5,) exact ℓ∞ distance to the boundary

The statement. Let z = f(x) ∈ R^C be the logits of an input x and, for classes y ≠ j, let L_yj bound the Lipschitz
constant of the logit difference w.r.t. ‖·‖_p (p ∈ {2, ∞}, over all input features, pixel units):

    |(z_y − z_j)(x') − (z_y − z_j)(x)| ≤ L_yj ‖x' − x‖_p   for all x, x'.

If argmax z = y then every x' with ‖x' − x‖_p < r(x) := min_{j≠y} (z_y − z_j)(x)/L_yj keeps z_y(x') > z_j(x') for
all j ≠ y, i.e. keeps the label (:func:`certified_radius`; a pair with L_yj = 0 never flips and is left out of the
minimum). A misclassified point, or one whose top logit ties, gets r = 0. So r is at most the norm of any
misclassified point's perturbation, e.g. the radius an attack such as :func:`crobust.attacks.fmn` returns. The box
[0, 1]^d is ignored (the guarantee holds on the whole ball, so it holds on the part inside the box).

Pair constants (``p`` the input norm, q its dual exponent: q = 1 for p = ∞, q = 2 for p = 2; matrices in the
paper's orientation (out, in), a neuron a row, as everywhere in :mod:`crobust.metrics` — a flax ``Dense`` kernel K
(in, out) computes x @ K, so W = Kᵀ, :func:`crobust.models.matrices.layer_matrices`):

- :func:`linear_pair_constants`, z = W x + b with W (C, d) and rows w_c: (z_y − z_j)(x') − (z_y − z_j)(x) =
  (w_y − w_j)ᵀ(x' − x), whose supremum over ‖x' − x‖_p ≤ 1 is ‖w_y − w_j‖_q (Hölder, attained). So
  L_yj = ‖w_y − w_j‖_q is the exact constant and r(x) is the exact ℓ_p distance from x to the region where y is
  not the argmax (a union of the half-spaces {z_j ≥ z_y}; the distance to a half-space is
  (z_y − z_j)/‖w_y − w_j‖_q).
- :func:`mlp_pair_constants`, z = H Φ(x) (+ b) with the ReLU encoder Φ(x) = φ(W^λ … φ(W^1 s(x))) (biases allowed:
  they do not change any Lipschitz constant), head H (C, h) and an input map s with ‖s(x') − s(x)‖_p ≤
  ``input_scale``·‖x' − x‖_p (``input_scale`` = 1/min(std) for a model normalising (x − μ)/std inside,
  :func:`crobust.metrics.report.input_scale_of`). Then
  |(h_y − h_j)ᵀ(Φ(x') − Φ(x))| ≤ ‖h_y − h_j‖_q ‖Φ(x') − Φ(x)‖_p ≤ ‖h_y − h_j‖_q · L_Φ · ‖x' − x‖_p, and the
  naive encoder constant is L_Φ = input_scale · Π_l ‖W^l‖_{p→p}, since φ is 1-Lipschitz coordinate-wise (so in
  every ℓ_p) and ‖W u‖_p ≤ ‖W‖_{p→p}‖u‖_p: for p = 2 the spectral norm σ₁(W^l), for p = ∞ the max row ℓ1 sum
  max_i Σ_k |W^l_ik| (:func:`crobust.metrics.alignment.op_norm`). Any other valid upper bound of L_Φ may be passed
  as ``encoder_bound`` instead: the aligned bound of :func:`crobust.metrics.encoder_lipschitz` (its ``'aligned'``
  entry, with ``mode`` ``'exact'``, ``'bound'`` or ``'auto'``, not ``'observed'``, and its ``input_scale``) is
  one: it bounds max over activation patterns D of ‖D_λ W^λ … D_1 W^1‖_p times the input scale, and Φ is
  piecewise linear with these Jacobians, so it is a Lipschitz constant of Φ, and the same Hölder step applies.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.metrics import _common as C
from crobust.metrics.alignment import op_norm

__all__ = ["certified_radius", "linear_pair_constants", "mlp_pair_constants"]


def _dual_pair_norms(w, p):
    """‖w_y − w_j‖_q for all row pairs of w (..., C, h) → (..., C, C), q the dual exponent of p."""
    diff = w[..., :, None, :] - w[..., None, :, :]
    if p == "inf":
        return jnp.sum(jnp.abs(diff), axis=-1)
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))


@functools.partial(jax.jit, static_argnames=("p",))
def _linear(w, p):
    return _dual_pair_norms(w, p)


def linear_pair_constants(w, p):
    """L_yj = ‖w_y − w_j‖_q for the linear model z = W x + b, W (..., C, d) with rows w_c → (..., C, C).

    q = 1 for p = ``'inf'``, q = 2 for p = 2; the diagonal is 0. These are the exact Lipschitz constants of the
    logit differences, so :func:`certified_radius` with them is the exact distance to the decision boundary
    (module docstring). Leading axes (members) are carried through.
    """
    p = C.check_p(p)
    return _linear(C.check_matrix(w), p)


@functools.partial(jax.jit, static_argnames=("p",))
def _mlp(mats, p, input_scale, encoder_bound):
    hidden, head = mats[:-1], mats[-1]
    if encoder_bound is None:
        lip = jnp.asarray(input_scale, jnp.float32)
        for m in hidden:
            lip = lip * op_norm(m, p)
    else:
        lip = jnp.asarray(encoder_bound, jnp.float32)
    return _dual_pair_norms(head, p) * lip[..., None, None]


def mlp_pair_constants(mats: Sequence, p, *, input_scale=1.0, encoder_bound=None):
    """Pairwise constants L_yj = ‖h_y − h_j‖_q · L_Φ of a ReLU MLP → (..., C, C) (module docstring).

    Args:
      mats: the weight matrices in forward order, paper orientation (out, in): W^1 … W^λ, then the head H (C, h)
        last (e.g. ``list(crobust.models.matrices.layer_matrices(params).values())``). Leading member axes are
        carried through. A single matrix is a linear model (L_yj = ‖h_y − h_j‖_q · input_scale).
      p: 2 or ``'inf'``, the input norm.
      input_scale: Lipschitz constant of the model's input map (1/min(std) for a normalising model).
      encoder_bound: an upper bound of L_Φ (input scale included) replacing the naive
        input_scale·Π_l ‖W^l‖_{p→p}, e.g. ``encoder_lipschitz(mats[:-1], p, ...)['aligned']``.
    """
    p = C.check_p(p)
    mats = [C.check_matrix(m, f"mats[{i}]") for i, m in enumerate(mats)]
    if not mats:
        raise CrobustError("mlp_pair_constants needs at least the head matrix")
    for i in range(len(mats) - 1):
        if mats[i + 1].shape[-1] != mats[i].shape[-2]:
            raise CrobustError(f"mats[{i + 1}] {tuple(mats[i + 1].shape)} does not take mats[{i}] "
                               f"{tuple(mats[i].shape)}'s outputs (paper orientation (out, in))")
    return _mlp(mats, p, input_scale, encoder_bound)


@jax.jit
def _certified(logits, y, pair_constants):
    num_classes = logits.shape[-1]
    z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)                       # (N, 1)
    margin = z_y - logits                                                          # (N, C): z_y − z_j
    lip = jnp.take_along_axis(jnp.broadcast_to(pair_constants, (logits.shape[0], num_classes, num_classes)),
                              y[:, None, None], axis=1)[:, 0]                    # (N, C): L_{y j}
    ratio = jnp.where(lip > 0, margin / jnp.where(lip > 0, lip, 1.0), jnp.where(margin > 0, jnp.inf, 0.0))
    ratio = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), jnp.inf, ratio)
    radius = jnp.min(ratio, axis=-1)
    return jnp.where(radius > 0, radius, 0.0)


def certified_radius(logits, y, pair_constants):
    """Certified radius r_n = min_{j≠y_n} (z_{n,y} − z_{n,j})/L_{y_n j} per point, 0 if not strictly top → (N,).

    Args:
      logits: (N, C) clean logits z = f(x).
      y: (N,) integer labels.
      pair_constants: (C, C) (or (N, C, C)) Lipschitz constants L_yj of z_y − z_j w.r.t. the input norm
        (:func:`linear_pair_constants`, :func:`mlp_pair_constants`); only row y is read per point.

    Every x' with ‖x' − x_n‖_p < r_n has argmax f(x') = y_n (module docstring); r_n is in the units of the norm the
    constants were computed for (pixel units when the input scale is included). +∞ only when no pair can flip.
    """
    logits = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(y)
    if logits.ndim != 2:
        raise CrobustError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if y.shape != logits.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
        raise CrobustError(f"y must be integer labels of shape ({logits.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    pair_constants = jnp.asarray(pair_constants, jnp.float32)
    c = logits.shape[1]
    if pair_constants.shape not in ((c, c), (logits.shape[0], c, c)):
        raise CrobustError(f"pair_constants must have shape ({c}, {c}) or ({logits.shape[0]}, {c}, {c}), "
                           f"got {tuple(pair_constants.shape)}")
    return _certified(logits, y.astype(jnp.int32), pair_constants)
