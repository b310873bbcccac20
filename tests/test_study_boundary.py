"""The decision-boundary study's computations (crobust.study.measures_boundary, figures_boundary): the PCA plane
slice, the attack direction and the distance to the boundary along it, against their closed forms for an affine
model; the choice of the equal-accuracy pair.

Tolerances: the model runs in float32 on inputs of size ≈ 1, so a logit is exact to ~1e-6 relative; the boundary
search's bisection leaves an interval of t_max/64/2²⁴ ≈ 3e-9, far below float32's resolution of t (~1e-6)."""

import jax.numpy as jnp
import numpy as np
import pytest

from crobust.models import MLP
from crobust.study import blocks
from crobust.study import measures as M
from crobust.study import measures_boundary as B
from crobust.study.figures_boundary import matched_members
from crobust.study.table import MemberTable

SHAPE = (4, 4, 1)
D = 16


def _linear(seed=0, mean=0.4, std=0.3):
    """A two-class linear model (MLP depth 1) and its affine decision function f(x) = wᵀx + c = z₁ − z₀."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(D, 2)).astype(np.float32)
    model = MLP(num_classes=2, width=1, depth=1, mean=(mean,), std=(std,))
    params = {"params": {"head": {"kernel": jnp.asarray(k)}}}
    w = (k[:, 1] - k[:, 0]).astype(np.float64) / std
    c = -mean * w.sum()
    return (lambda x: model.apply(params, x)), w, c


def _points(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0.1, 0.9, size=(n, *SHAPE)), jnp.float32)


def test_plane_slice_of_an_affine_model_is_the_analytic_line():
    f, w, c = _linear()
    x = _points()
    mu, p, explained = B.pca_basis(x)
    assert np.allclose(p.T @ p, np.eye(2), atol=1e-10) and explained[0] >= explained[1] > 0
    a = np.linspace(-1.0, 1.0, 7)
    b = np.linspace(-0.8, 0.8, 5)
    grid = B.plane_decision(f, mu, p, a, b, SHAPE)                        # (B, A)
    f_mu, g1, g2 = w @ mu + c, w @ p[:, 0], w @ p[:, 1]
    analytic = f_mu + a[None, :] * g1 + b[:, None] * g2
    scale = np.abs(w).sum()
    assert np.allclose(grid, analytic, atol=1e-5 * scale)
    # the zero set on the slice is the line b(a) = −(f(μ) + a·g₁)/g₂
    line_b = -(f_mu + a * g1) / g2
    on_line = np.array([B.plane_decision(f, mu, p, [ai], [bi], SHAPE)[0, 0] for ai, bi in zip(a, line_b)])
    assert np.all(np.abs(on_line) < 1e-5 * scale)
    # a point's projection is Pᵀ(x − μ)
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    assert np.allclose(B.project(x, mu, p), (flat - mu) @ p)


def test_pca_finds_the_axis_of_largest_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, D)) * np.r_[3.0, 2.0, np.full(D - 2, 0.1)]
    _, p, _ = B.pca_basis(x.reshape(2000, *SHAPE))
    assert abs(p[0, 0]) > 0.999 and abs(p[1, 1]) > 0.999


@pytest.mark.parametrize("norm, dual", [("l2", lambda w: np.linalg.norm(w)), ("linf", lambda w: np.abs(w).sum())])
def test_boundary_distance_of_an_affine_model_is_margin_over_dual_norm(norm, dual):
    f, w, c = _linear()
    x = _points()
    fx = np.asarray(x, np.float64).reshape(len(x), -1) @ w + c
    y = jnp.asarray((fx > 0).astype(np.int32))
    y = y.at[:3].set(1 - y[:3])                                           # three misclassified points
    u = B.attack_direction(f, x, y, norm)
    flat_u = np.asarray(u, np.float64).reshape(len(x), -1)
    if norm == "l2":
        assert np.allclose(np.linalg.norm(flat_u, axis=1), 1.0, atol=1e-6)
    else:
        assert np.array_equal(np.abs(flat_u), np.ones_like(flat_u))
    t_max = 0.5 * float(np.quantile(np.abs(fx) / dual(w), 0.7))            # some points beyond the search
    t = np.asarray(B.boundary_distance(f, x, y, u, t_max), np.float64)
    expected = np.abs(fx) / dual(w)                                       # the distance to the hyperplane
    expected[:3] = 0.0
    expected[expected > t_max] = np.inf
    assert np.all(np.isinf(t) == np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.allclose(t[finite], expected[finite], atol=1e-5 * max(1.0, t_max), rtol=1e-5)


def test_cross_fraction_and_median_distance_of_each_member_match_the_closed_form():
    # two members: the second is the first with its weights × 3 plus a shift of the class-1 column, so their
    # boundaries differ; each member's columns must come from its own distances
    rng = np.random.default_rng(3)
    k0 = rng.normal(size=(D, 2)).astype(np.float32)
    k1 = 3 * k0 + np.float32(0.2) * np.array([0, 1], np.float32)
    mean, std = 0.4, 0.3
    model = MLP(num_classes=2, width=1, depth=1, mean=(mean,), std=(std,))
    params = {"params": {"head": {"kernel": jnp.asarray(np.stack([k0, k1]))}}}
    x = _points(60)
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    y = jnp.asarray((flat @ ((k0[:, 1] - k0[:, 0]) / std) - mean * ((k0[:, 1] - k0[:, 0]) / std).sum() > 0)
                    .astype(np.int32))
    e = blocks.EvalConfig(eps_l2=(0.0, 0.1, 0.3), headline_l2=0.3)
    ctx = M.Context(e, blocks.MeasureConfig(), None, x, y)
    pop = M.TrainedPopulation("p", model, [{"seed": 0}, {"seed": 1}], {}, None, params)
    out = {c.key: v for c, v in B.boundary_crossing(("l2",))(ctx, pop).items()}
    for m, k in enumerate((k0, k1)):
        w = (k[:, 1] - k[:, 0]).astype(np.float64) / std
        f = flat @ w - mean * w.sum()
        correct = (f > 0) == (np.asarray(y) == 1)
        t = np.abs(f) / np.linalg.norm(w)
        for eps in (0.1, 0.3):
            expected = np.sum((t <= eps) & correct) / correct.sum()
            assert out[f"cross_frac[norm=l2,eps={eps:g}]"][m] == pytest.approx(expected, abs=1e-12)
        assert out["boundary_dist[norm=l2]"][m] == pytest.approx(np.median(np.minimum(t[correct], 0.6)), abs=1e-5)
    assert out["cross_frac[norm=l2,eps=0.3]"][0] != out["cross_frac[norm=l2,eps=0.3]"][1]


def test_the_figure_draws_the_pair_with_the_closest_clean_accuracy():
    table = MemberTable()
    rows = table.add_members([{"population": "dense", "member": i, "seed": i} for i in range(3)]
                             + [{"population": "lowrank", "member": i, "seed": i} for i in range(2)])
    table.set(rows, "clean_acc", [0.90, 0.95, 0.97, 0.93, 0.965])
    assert matched_members(table, ("dense", "lowrank")) == {"dense": 2, "lowrank": 1}
