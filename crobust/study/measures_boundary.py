"""Decision boundaries in input space: the attack direction, the distance to the boundary along it, and a PCA view.

All in pixel space (images in [0, 1], ε in pixel units), for a model ``logit_fn`` (N, H, W, C) → (N, C); matrix
products at full float32 precision (no TF32 on accelerators: t* is compared with ε to a few digits).

- margin m(x) = z_y(x) − max_{j≠y} z_j(x) (> 0: correctly classified); the decision boundary of point x is the set
  m = 0.
- **attack direction** u(x): the steepest-ascent direction of −m at x for the norm, the first step of every
  gradient attack: ℓ2: u = −∇m/‖∇m‖₂ (‖u‖₂ = 1); ℓ∞: u = −sign(∇m) (‖u‖∞ = 1). u = 0 where ∇m = 0.
- **boundary distance along u**: t*(x) = min{t ≥ 0 : m(x + t·u) ≤ 0}, in units of the norm (‖t·u‖ = t), found by
  evaluating m on the grid t_j = j·t_max/n_grid, j = 0…n_grid, taking the first j with m ≤ 0 and bisecting
  [t_{j−1}, t_j] ``n_bisect`` times (the returned t is the right end: m(x + t·u) ≤ 0 holds there). A crossing and
  re-crossing inside one grid step is not seen; t* = +∞ when no grid point crosses; t* = 0 for a point already
  misclassified. The ray is not clipped to [0, 1]: t* is a property of the model's function (the ensemble's
  robust accuracy, which respects the box, is measured beside it). For an affine margin m(x) = wᵀx + c and
  ℓ2, t* = m(x)/‖w‖₂ exactly (the ℓ2 distance to the boundary hyperplane), which the tests check.
- **PCA view**: μ the mean and p₁, p₂ the top two principal directions (unit, orthogonal) of the flattened evaluation
  inputs; a point projects to (a, b) = ((x − μ)ᵀp₁, (x − μ)ᵀp₂); the model is drawn on the plane slice
  x(a, b) = μ + a·p₁ + b·p₂ through the mean, where for two classes the decision function is the logit difference
  f(a, b) = z₁ − z₀ and the boundary its zero set. For an affine f(x) = wᵀx + c the slice is the line
  f(μ) + a·wᵀp₁ + b·wᵀp₂ = 0 (the tests check this). A perturbation δ projects to (δᵀp₁, δᵀp₂).

Measures (``measure(ctx, pop) -> {Column: (M,) values}``, as :mod:`crobust.study.measures`): :func:`boundary_crossing`
(columns) and :func:`boundary_view` (the figure's data, kept in a :class:`ViewStore`). :data:`MEASURES` registers
them.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import parallel
from crobust._errors import CrobustError, check_choice
from crobust._format import format_eps
from crobust.study.table import column


def margin(logits, y):
    """m = z_y − max_{j≠y} z_j per row: logits (N, C), labels (N,) → (N,)."""
    true = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits), axis=-1)
    return true - other


def attack_direction(logit_fn: Callable, x, y, norm: str = "l2"):
    """u(x) (N, ...) — ℓ2: −∇m/‖∇m‖₂; ℓ∞: −sign(∇m); 0 where ∇m = 0 (module docstring)."""
    check_choice("norm", norm, ("l2", "linf"))
    with jax.default_matmul_precision("float32"):
        g = jax.grad(lambda q: jnp.sum(margin(logit_fn(q), y)))(x)
    flat = g.reshape(g.shape[0], -1)
    if norm == "linf":
        return -jnp.sign(g)
    n = jnp.sqrt(jnp.sum(flat * flat, axis=-1))
    u = -flat / jnp.where(n > 0, n, 1.0)[:, None]
    return u.reshape(g.shape)


def boundary_distance(logit_fn: Callable, x, y, u, t_max: float, *, n_grid: int = 64, n_bisect: int = 24):
    """t*(x) (N,) along the directions u (N, ...), searched on [0, t_max] (module docstring); +∞ if not reached."""
    if not t_max > 0:
        raise CrobustError(f"t_max must be > 0, got {t_max}")
    ts = jnp.linspace(0.0, t_max, n_grid + 1)
    expand = lambda t: t.reshape((-1,) + (1,) * (x.ndim - 1))

    def m_at(t):                                                      # t (N,) → m(x + t·u) (N,)
        with jax.default_matmul_precision("float32"):
            return margin(logit_fn(x + expand(t) * u), y)

    ms = jax.lax.map(lambda t: m_at(jnp.full((x.shape[0],), t)), ts)          # (G+1, N)
    crossed = ms <= 0
    any_cross = jnp.any(crossed, axis=0)
    j = jnp.argmax(crossed, axis=0)                                            # first crossing index
    hi = ts[j]
    lo = jnp.where(j > 0, ts[jnp.maximum(j - 1, 0)], 0.0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        c = m_at(mid) <= 0
        return jnp.where(c, lo, mid), jnp.where(c, mid, hi)

    lo, hi = jax.lax.fori_loop(0, n_bisect, body, (lo, hi))
    return jnp.where(any_cross, jnp.where(j == 0, 0.0, hi), jnp.inf)


def pca_basis(x, n: int = 2):
    """μ (d,), P (d, n) with orthonormal columns (top principal directions of the flattened x (N, ...)), and the
    explained variance fractions (n,). Sign fixed so that each column's largest-|entry| coordinate is positive."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    mu = flat.mean(0)
    _, s, vt = np.linalg.svd(flat - mu, full_matrices=False)
    p = vt[:n].T
    p = p * np.sign(p[np.argmax(np.abs(p), axis=0), np.arange(n)])
    return mu, p, (s[:n] ** 2) / np.sum(s ** 2)


def project(x, mu, p):
    """(a, b, …) = Pᵀ(x − μ) per point: x (N, ...) → (N, n)."""
    return (np.asarray(x, np.float64).reshape(len(x), -1) - mu) @ p


def plane_decision(logit_fn: Callable, mu, p, a, b, image_shape):
    """f(a, b) = z₁ − z₀ on the slice x(a, b) = μ + a·p₁ + b·p₂: a (A,), b (B,) → (B, A) (rows follow b)."""
    aa, bb = np.meshgrid(np.asarray(a, np.float64), np.asarray(b, np.float64))
    pts = mu[None] + aa.reshape(-1, 1) * p[:, 0][None] + bb.reshape(-1, 1) * p[:, 1][None]
    with jax.default_matmul_precision("float32"):
        z = logit_fn(jnp.asarray(pts.reshape((-1,) + tuple(image_shape)), jnp.float32))
    if z.shape[-1] != 2:
        raise CrobustError(f"the PCA boundary view needs a two-class model, got {z.shape[-1]} classes")
    return np.asarray(z[:, 1] - z[:, 0], np.float64).reshape(aa.shape)


# --------------------------------------------------------------------------------------------------------------
# Measures

def _t_max(ctx, norm):
    return 2.0 * max(ctx.eval.grid(norm))


def _member_distances(ctx, pop, norm, t_max):
    """(M, N) t* of every member and (M, N) correctness of its clean prediction, cached per population."""
    key = (pop.name, "boundary_t", norm)
    if key not in ctx.cache:
        def one(variables):
            f = pop.member_apply(variables)
            u = attack_direction(f, ctx.x, ctx.y, norm)
            t = boundary_distance(f, ctx.x, ctx.y, u, t_max)
            correct = margin(f(ctx.x), ctx.y) > 0
            return t, correct, u
        ctx.cache[key] = parallel.population_map(one, pop.variables)
    return ctx.cache[key]


def boundary_crossing(norms: Sequence[str] = ("l2",)):
    """Per norm, over the correctly classified evaluation points of each member (t* along the attack direction u,
    searched up to t_max = 2·max ε of the norm's grid):

    - ``cross_frac[norm, eps]`` = #{t* ≤ ε}/#{correct}, for every ε > 0 of the grid: the share whose boundary lies
      within the budget along the attack direction (a lower bound of the attackable share: one direction only);
    - ``boundary_dist[norm]`` = the median t*, censored at t_max (a t* beyond the search counts as t_max).
    """
    def measure(ctx, pop):
        out = {}
        for norm in norms:
            t_max = _t_max(ctx, norm)
            t, correct, _ = _member_distances(ctx, pop, norm, t_max)
            t, correct = np.asarray(t, np.float64), np.asarray(correct)
            n_correct = np.maximum(correct.sum(1), 1)
            for eps in ctx.eval.grid(norm):
                if eps > 0:
                    share = ((t <= eps) & correct).sum(1) / n_correct
                    out[column("cross_frac", norm=norm, eps=format_eps(eps))] = share
            censored = np.where(correct, np.minimum(t, t_max), np.nan)
            out[column("boundary_dist", norm=norm)] = np.array(
                [np.nanmedian(r) if np.isfinite(r).any() else np.nan for r in censored])
        return out
    return measure


class ViewStore(dict):
    """Data of the PCA view per population name, written by :func:`boundary_view`, read by the figure
    :class:`crobust.study.figures_boundary.BoundaryView`."""


def boundary_view(store: ViewStore, norm: str = "l2", *, n_grid: int = 60, pad: float = 0.15):
    """The PCA view of every member (module docstring) at the norm's headline ε, into ``store[pop.name]``:
    ``a``, ``b`` (grid axes), ``f`` (M, B, A) the logit difference on the slice, ``points`` (N, 2) the projections,
    ``labels``, ``correct`` (M, N), ``arrow`` (M, N, 2) = Pᵀ(ε·u), ``t`` (M, N), ``eps``, ``explained``. The grid
    spans the points' projections padded by ``pad`` of their range. Returns no columns."""
    def measure(ctx, pop):
        x = np.asarray(ctx.x)
        mu, p, explained = pca_basis(x)                   # the same for every population (same points)
        pts = project(x, mu, p)
        lo, hi = pts.min(0), pts.max(0)
        span = hi - lo
        a = np.linspace(lo[0] - pad * span[0], hi[0] + pad * span[0], n_grid)
        b = np.linspace(lo[1] - pad * span[1], hi[1] + pad * span[1], n_grid)
        eps = ctx.eval.headline(norm)
        t, correct, u = _member_distances(ctx, pop, norm, _t_max(ctx, norm))
        f = np.stack([plane_decision(pop.member_apply(jax.tree.map(lambda v: v[m], pop.variables)),
                                     mu, p, a, b, x.shape[1:]) for m in range(pop.size)])
        u = np.asarray(u, np.float64).reshape(pop.size, x.shape[0], -1)
        store[pop.name] = {"a": a, "b": b, "f": f, "points": pts, "labels": np.asarray(ctx.y),
                           "correct": np.asarray(correct), "arrow": eps * (u @ p), "t": np.asarray(t, np.float64),
                           "eps": eps, "explained": explained, "norm": norm, "size": pop.size}
        return {}
    return measure


MEASURES = {"boundary_crossing": boundary_crossing, "boundary_view": boundary_view}

__all__ = ["margin", "attack_direction", "boundary_distance", "pca_basis", "project", "plane_decision",
           "boundary_crossing", "boundary_view", "ViewStore", "MEASURES"]
