"""Norms, projections onto the ε-ball ∩ [0, 1], step directions and random starts.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import projections as P
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    x0 = P.random_start(jax.random.key(1), x, eps=8/255, norm="linf")   # uniform in the ℓ∞ box, clipped to [0,1]
    x1 = P.project(x0 + 0.1, x, eps=8/255, norm="linf")               # back onto B_∞(x, ε) ∩ [0,1]^d
    P.lp_norm(x1 - x, "linf")                                         # (4,) ≤ 8/255

Conventions: images have shape (N, ...) and every norm is taken per example over all non-batch axes, so a
perturbation δ of shape (N, H, W, C) has ‖δ‖ of shape (N,). ε is a scalar in pixel units and may be traced.

Projections (``clip=True`` intersects with the box [0, 1]^d; ``clip=False`` reproduces the reference code's
unclipped ART attacks):

- ℓ∞: Π(x') = clip(x + clip(x' − x, −ε, ε), 0, 1). B_∞(x, ε) ∩ [0,1]^d is a box, so this coordinate-wise clip
  is the exact Euclidean projection.
- ℓ2, :func:`project_l2`: δ ← δ·min(1, ε/‖δ‖₂), then clip x + δ to [0, 1] — AutoAttack's and ART's rule. It is
  feasible (clipping towards the box, which contains x, only shortens δ coordinate-wise) but is not the nearest
  point of the intersection when the box binds.
- ℓ2, :func:`project_l2_exact`: the exact Euclidean projection onto B_2(x, ε) ∩ [0,1]^d. By the KKT conditions
  the solution is δ(μ) = clip(v/(1+μ), −x, 1−x) with v = x' − x and the smallest μ ≥ 0 such that ‖δ(μ)‖₂ ≤ ε;
  ‖δ(μ)‖ is monotone in t = 1/(1+μ), found by bisection (``n_bisect`` halvings, ending on the feasible side).

Random starts:

- ℓ∞: δ₀ ~ U(−ε, ε)^d (ART's and Madry et al.'s start, uniform in the ℓ∞ box).
- ℓ2: δ₀ = ε·U^{1/d}·g/‖g‖₂ with g ~ N(0, I_d), U ~ U(0, 1): uniform in the ℓ2 ball (the same law as ART's
  ``random_sphere``, which draws the radius through the regularised incomplete gamma function).

Both are clipped to [0, 1] when ``clip=True`` (then the law is that of the clipped point).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crobust.attacks._validate import check_norm

_TINY = 1e-30


def _expand(v, x):
    """Reshape per-example values (N,) to broadcast against x (N, ...)."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _feature_axes(x):
    return tuple(range(1, x.ndim))


def lp_norm(v, norm: str):
    """Per-example ‖v_n‖ over all non-batch axes: max |·| for ``'linf'``, √Σ(·)² for ``'l2'``; shape (N,)."""
    norm = check_norm(norm)
    if norm == "linf":
        return jnp.max(jnp.abs(v), axis=_feature_axes(v))
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=_feature_axes(v)))


def project_linf(x_adv, x, eps, clip: bool = True):
    """Exact projection onto B_∞(x, ε) (∩ [0,1]^d when ``clip``)."""
    out = x + jnp.clip(x_adv - x, -eps, eps)
    return jnp.clip(out, 0.0, 1.0) if clip else out


def project_l2(x_adv, x, eps, clip: bool = True):
    """Rescale δ = x' − x to norm ≤ ε (δ·min(1, ε/‖δ‖₂)), then clip to [0,1] when ``clip`` (AutoAttack / ART)."""
    delta = x_adv - x
    norms = lp_norm(delta, "l2")
    factor = jnp.minimum(1.0, eps / jnp.maximum(norms, _TINY))
    out = x + delta * _expand(factor, x)
    return jnp.clip(out, 0.0, 1.0) if clip else out


def project_l2_exact(x_adv, x, eps, n_bisect: int = 40):
    """Exact Euclidean projection of x' onto B_2(x, ε) ∩ [0,1]^d (see the module docstring); x must be in [0,1]."""
    v = x_adv - x
    lo, hi = -x, 1.0 - x

    def delta_at(t):  # t (N,) in [0, 1]
        return jnp.clip(v * _expand(t, x), lo, hi)

    n = x.shape[0]
    feasible_at_one = lp_norm(delta_at(jnp.ones((n,), x.dtype)), "l2") <= eps

    def halve(_, bounds):
        t_lo, t_hi = bounds
        mid = 0.5 * (t_lo + t_hi)
        ok = lp_norm(delta_at(mid), "l2") <= eps
        return jnp.where(ok, mid, t_lo), jnp.where(ok, t_hi, mid)

    t_lo, _ = jax.lax.fori_loop(0, n_bisect, halve, (jnp.zeros((n,), x.dtype), jnp.ones((n,), x.dtype)))
    t = jnp.where(feasible_at_one, 1.0, t_lo)
    return x + delta_at(t)


def project(x_adv, x, eps, norm: str, clip: bool = True):
    """:func:`project_linf` or :func:`project_l2` by ``norm``."""
    norm = check_norm(norm)
    return project_linf(x_adv, x, eps, clip) if norm == "linf" else project_l2(x_adv, x, eps, clip)


def project_delta(delta, eps, norm: str):
    """Project a perturbation (any shape, one example) onto the ε-ball around 0, without a box: for universal δ."""
    norm = check_norm(norm)
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    nrm = jnp.sqrt(jnp.sum(jnp.square(delta)))
    return delta * jnp.minimum(1.0, eps / jnp.maximum(nrm, _TINY))


def steepest_direction(grad, norm: str):
    """The unit-norm ascent direction for a linear model of the loss: sign(g) for ℓ∞, g/‖g‖₂ for ℓ2 (0 where g = 0)."""
    norm = check_norm(norm)
    if norm == "linf":
        return jnp.sign(grad)
    norms = lp_norm(grad, "l2")
    safe = jnp.where(norms > 0, norms, 1.0)
    return jnp.where(_expand(norms > 0, grad), grad / _expand(safe, grad), 0.0)


def random_delta(key, x, eps, norm: str):
    """A random perturbation: uniform in the ℓ∞ box [−ε, ε]^d, or uniform in the ℓ2 ball of radius ε."""
    norm = check_norm(norm)
    if norm == "linf":
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    k_dir, k_rad = jax.random.split(key)
    g = jax.random.normal(k_dir, x.shape, x.dtype)
    d = 1
    for s in x.shape[1:]:
        d *= s
    u = jax.random.uniform(k_rad, (x.shape[0],), x.dtype, minval=jnp.finfo(x.dtype).tiny, maxval=1.0)
    radius = eps * jnp.exp(jnp.log(u) / d)
    return steepest_direction(g, "l2") * _expand(radius, x)


def random_start(key, x, eps, norm: str, clip: bool = True):
    """x + :func:`random_delta`, clipped to [0, 1] when ``clip``."""
    out = x + random_delta(key, x, eps, norm)
    return jnp.clip(out, 0.0, 1.0) if clip else out
