"""FAB and FAB-T: the box-and-hyperplane projections against a brute-force solution, exact boundary distances of
a linear model, jit/vmap over weights, and (when torch + pyautoattack are installed) AutoAttack's FAB itself."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.attacks as A
from crobust.attacks.fab import fab_min_norm, projection_l2, projection_linf

# ----------------------------------------------------------------------------------- projections vs brute force


def _box_range(w, lo, hi):
    """Smallest and largest ⟨w, δ⟩ over the box lo ≤ δ ≤ hi."""
    return np.sum(np.minimum(w * lo, w * hi)), np.sum(np.maximum(w * lo, w * hi))


def _brute_linf(t, w, b):
    """min ‖δ‖_∞ s.t. ⟨w, t + δ⟩ = b, t + δ ∈ [0, 1]: bisection on the radius ρ (the reachable values of ⟨w, δ⟩
    over the box ∩ [−ρ, ρ]^D form an interval growing with ρ)."""
    target = b - w @ t
    lo_r, hi_r = 0.0, 1.0
    for _ in range(60):
        rho = 0.5 * (lo_r + hi_r)
        m, big = _box_range(w, np.maximum(-t, -rho), np.minimum(1 - t, rho))
        lo_r, hi_r = (lo_r, rho) if m <= target <= big else (rho, hi_r)
    return hi_r


def _brute_l2(t, w, b):
    """min ‖δ‖_2 s.t. ⟨w, t + δ⟩ = b, t + δ ∈ [0, 1]: the KKT solution δ(λ) = clip(λw, −t, 1 − t), λ by bisection
    (⟨w, δ(λ)⟩ is nondecreasing in λ)."""
    target = b - w @ t
    g = lambda lam: w @ np.clip(lam * w, -t, 1 - t)
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < target else (lo, mid)
    return np.linalg.norm(np.clip(0.5 * (lo + hi) * w, -t, 1 - t))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projections_solve_the_box_constrained_problem(norm):
    """On random feasible instances (the hyperplane passes through a random point of the box; some w_i = 0; D from 1
    to 40) the projection lands on the hyperplane inside the box with the brute-force optimal norm (float32:
    1e-4 relative); when the hyperplane misses the box it returns the box corner nearest to it."""
    rng = np.random.default_rng(0)
    project = projection_linf if norm == "linf" else projection_l2
    for dim in (1, 2, 3, 7, 40):
        n = 60
        t = rng.uniform(0, 1, (n, dim)).astype(np.float32)
        w = rng.normal(size=(n, dim)).astype(np.float32)
        w[rng.uniform(size=(n, dim)) < 0.15] = 0.0
        w[:, 0] = np.where(w[:, 0] == 0, 1.0, w[:, 0])
        z = rng.uniform(0, 1, (n, dim)).astype(np.float32)
        b = np.sum(w * z, axis=1).astype(np.float32)
        d = np.asarray(jax.jit(project)(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b)))
        for i in range(n):
            scale = np.abs(w[i]).sum() + abs(b[i])
            assert abs(w[i] @ (t[i] + d[i]) - b[i]) <= 1e-4 * scale, (dim, i)
            assert np.all(t[i] + d[i] >= -1e-6) and np.all(t[i] + d[i] <= 1 + 1e-6), (dim, i)
            if norm == "linf":
                got, want = np.abs(d[i]).max(), _brute_linf(t[i].astype(np.float64), w[i].astype(np.float64), b[i])
            else:
                got, want = np.linalg.norm(d[i]), _brute_l2(t[i].astype(np.float64), w[i].astype(np.float64), b[i])
            assert abs(got - want) <= 1e-4 * max(want, 1e-3) + 1e-6, (dim, i, got, want)
        # infeasible: the hyperplane beyond the box → the corner that gets closest to it
        b_far = np.sum(np.abs(w), axis=1) * 2 + 1.0
        d = np.asarray(project(jnp.asarray(t), jnp.asarray(w), jnp.asarray(b_far, np.float32)))
        corner = np.where(w > 0, 1.0, np.where(w < 0, 0.0, t))
        np.testing.assert_allclose(t + d, corner, atol=1e-6)


def _take(a, idx):
    return jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def _aa_bisect(n_cols: int, go_right, n_rows: int):
    """AutoAttack's bisection over sorted positions: lb = 0, ub = D − 1, ⌈log2 D⌉ halvings, lb ← mid where
    ``go_right(mid)`` (int32 (N,) → bool (N,)), else ub ← mid. Returns lb (N,) int32."""
    n_halvings = math.ceil(math.log2(n_cols)) if n_cols > 1 else 0

    def body(_, bounds):
        lb, ub = bounds
        mid = (lb + ub) // 2
        right = go_right(mid)
        return jnp.where(right, mid, lb), jnp.where(right, ub, mid)

    lb = jnp.zeros((n_rows,), jnp.int32)
    ub = jnp.full((n_rows,), n_cols - 1, jnp.int32)
    return jax.lax.fori_loop(0, n_halvings, body, (lb, ub))[0]


def _aa_projection_linf(t, w, b):
    """AutoAttack's sorting-and-bisection ``projection_linf``, ported as is (the reference for the sort-free one).

    """
    n, dim = t.shape
    sign = jnp.where(jnp.sum(w * t, axis=1) - b >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    b = b * sign
    a = (w < 0).astype(t.dtype)
    nonzero = (w != 0).astype(t.dtype)
    d = (a - t) * nonzero
    p = a - t * (2 * a - 1)                 # how far each coordinate can move towards the hyperplane
    indp = jnp.argsort(p, axis=1)
    b = b - jnp.sum(w * t, axis=1)
    b0 = jnp.sum(w * d, axis=1)
    indp2 = indp[:, ::-1]
    ws = jnp.take_along_axis(w, indp2, axis=1)
    bs2 = -ws * jnp.take_along_axis(d, indp2, axis=1)
    s = jnp.cumsum(jnp.abs(ws), axis=1)
    sb = jnp.cumsum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * _take(p, indp[:, 0])
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l

    def go_right(mid):
        indcurr = _take(indp, dim - 1 - mid)
        return b - (_take(sb, mid) - _take(s, mid) * _take(p, indcurr)) > 0

    lb = _aa_bisect(dim, go_right, n)
    lmbd_l = jnp.maximum((b - sb[:, -1]) / (-s[:, -1]), 0.0)[:, None]
    d_l = (2 * a - 1) * lmbd_l
    lmbd_2 = jnp.maximum((b - _take(sb, lb)) / (-_take(s, lb)), 0.0)[:, None]
    d_2 = jnp.minimum(lmbd_2, d) * a + jnp.maximum(-lmbd_2, d) * (1 - a)
    d = jnp.where(c_l[:, None], d_l, jnp.where(c2[:, None], d_2, d))
    return d * nonzero


def _aa_projection_l2(t, w, b):
    """AutoAttack's sorting-and-bisection ``projection_l2``, ported as is (the reference for the sort-free one).

    The solution is δ_i = clip(−λ w_i, −t_i, 1 − t_i) for the multiplier λ ≥ 0 that meets the hyperplane; the
    breakpoints r_i where coordinate i reaches its bound are sorted and the segment holding λ found by bisection
    over the cumulative sums. Coordinates with |w_i| < 1e-8 do not move.
    """
    n, dim = t.shape
    big = 1e12
    c = jnp.sum(w * t, axis=1) - b
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    w = w * sign[:, None]
    c = c * sign
    small = jnp.abs(w) < 1e-8
    w_safe = jnp.where(small, 1.0, w)
    r = jnp.clip(jnp.maximum(t / w_safe, (t - 1) / w_safe), -big, big)
    r = jnp.where(small, big, r)
    r = jnp.where(r == -big, big, r)
    indr = jnp.argsort(r, axis=1)
    rs = jnp.take_along_axis(r, indr, axis=1)
    rs2 = jnp.concatenate([rs[:, 1:], jnp.zeros((n, 1), rs.dtype)], axis=1)
    rs = jnp.where(rs == big, 0.0, rs)
    rs2 = jnp.where(rs2 == big, 0.0, rs2)
    w3s = jnp.take_along_axis(w ** 2, indr, axis=1)
    w5 = jnp.sum(w3s, axis=1, keepdims=True)
    ws = w5 - jnp.cumsum(w3s, axis=1)
    moves = (~small).astype(t.dtype)
    d = -(r * w) * moves
    s = jnp.concatenate([-w5 * rs[:, :1], jnp.cumsum((-rs2 + rs) * ws, axis=1) - w5 * rs[:, :1]], axis=1)
    c4 = s[:, 0] + c < 0
    c3 = jnp.sum(d * w, axis=1) + c > 0
    c2 = ~(c4 | c3)

    lb = _aa_bisect(dim, lambda mid: _take(s, mid) + c > 0, n)
    d_4 = -(c / w5[:, 0])[:, None] * w
    ws_lb = _take(ws, lb)
    alpha = (_take(s, lb) + c) / ws_lb + _take(rs, lb)
    alpha = jnp.where(ws_lb == 0, 0.0, alpha)[:, None]
    c5 = (alpha > r).astype(t.dtype)
    d_2 = d * c5 - alpha * w * (1 - c5)
    d = jnp.where(c4[:, None], d_4, jnp.where(c2[:, None], d_2, d))
    return d * moves


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projections_match_autoattacks_sorting_form(norm):
    """The sort-free projections against AutoAttack's sorting-and-bisection form on D = 64 (the digits), with zero
    and tiny normal components, points on the box's faces and hyperplanes that miss the box: δ agrees to 2e-6
    absolute and ‖δ‖_p to 1e-5 relative + 5e-7 absolute: Newton's method stops within an ulp or so of the
    multiplier, and what is left is float32 rounding of c = ⟨w, t⟩ − b and of the row sums (against a float64 solution of the same inputs
    the sort-free form is the closer of the two)."""
    rng = np.random.default_rng(1)
    n, dim = 4000, 64
    t = rng.uniform(0, 1, (n, dim)).astype(np.float32)
    t[rng.uniform(size=(n, dim)) < 0.2] = 0.0
    t[rng.uniform(size=(n, dim)) < 0.1] = 1.0
    w = rng.normal(size=(n, dim)).astype(np.float32) * rng.choice([1e-3, 1.0, 30.0], size=(n, 1)).astype(np.float32)
    w[rng.uniform(size=(n, dim)) < 0.15] = 0.0
    w[rng.uniform(size=(n, dim)) < 0.02] = 1e-9
    z = np.clip(t + rng.normal(size=(n, dim)) * rng.choice([1e-3, 0.03, 0.3], size=(n, 1)), 0, 1)
    b = np.sum(w * z, axis=1).astype(np.float32)
    b[:200] = np.sum(np.abs(w[:200]), axis=1) * 2 + 1.0                # beyond the box
    b[200:300] = np.sum(w[200:300] * t[200:300], axis=1)                # t on the hyperplane
    new, ref = (projection_linf, _aa_projection_linf) if norm == "linf" else (projection_l2, _aa_projection_l2)
    args = tuple(jnp.asarray(a) for a in (t, w, b))
    got, want = np.asarray(jax.jit(new)(*args)), np.asarray(jax.jit(ref)(*args))
    np.testing.assert_allclose(got, want, atol=2e-6)
    size = (lambda d: np.abs(d).max(1)) if norm == "linf" else (lambda d: np.linalg.norm(d, axis=1))
    np.testing.assert_allclose(size(got), size(want), rtol=1e-5, atol=5e-7)


# ------------------------------------------------------------------------------- a linear model: exact distances

ETA, BETA = 1.05, 0.9
KAPPA = 1 + 2 * (ETA - 1) * (1 - BETA * ETA) / (2 - BETA * ETA)     # FAB's found radius / the true one (below)


def _linear_problem(seed=0, n=40, dim=20, classes=5):
    """x near 0.5, logits x @ W + c with c set so each point's clean margin is small: every nearest boundary point
    is well inside [0, 1]^D (the box is inactive and the closed-form distances are the true ones)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(dim, classes)).astype(np.float32)
    x = rng.uniform(0.45, 0.55, (n, dim)).astype(np.float32)
    c = np.zeros(classes, np.float32)
    f = jax.tree_util.Partial(lambda p, q: q.reshape(q.shape[0], -1) @ p[0] + p[1], (jnp.asarray(W), jnp.asarray(c)))
    y = np.argmax(x @ W, axis=1).astype(np.int32)
    return f, jnp.asarray(x), jnp.asarray(y), W, x, y


def _distances(W, x, y, norm):
    """(N, C) distance from x_n to the boundary between y_n and class j (∞ at j = y_n)."""
    z = x @ W
    dw = W.T[y][:, None, :] - W.T[None, :, :]                 # (N, C, D): w_y − w_j
    dual = np.abs(dw).sum(-1) if norm == "linf" else np.sqrt((dw ** 2).sum(-1))
    margin = z[np.arange(len(y)), y][:, None] - z
    dist = margin / np.maximum(dual, 1e-30)
    dist[np.arange(len(y)), y] = np.inf
    return dist


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_distance_to_the_nearest_boundary_of_a_linear_model(norm):
    """The linearisation is exact, so every iterate stays on the segment from x to its nearest boundary point
    x + ρ·e: x¹ = x + sρ·e. With u = 1 − s, one step gives s' = 1 + 2(η − 1)u/(1 + u) (α = u/(1 + u) ≤ α_max), which
    is adversarial, then s ← βs'. From s = 0 (α = α_max: s' = η) the second step (u = 1 − βη) is the smallest, and
    later ones oscillate up to the fixed point u* = (1 − β)/(1 + 2β(η − 1)); so FAB finds r = κρ exactly with
    κ = 1 + 2(η − 1)(1 − βη)/(2 − βη) = 1.00521 (η = 1.05, β = 0.9); float32 round-off: 2e-4 relative."""
    f, x, y, W, xn, yn = _linear_problem()
    rho = _distances(W, xn, yn, norm).min(1)
    assert rho.max() * 1.05 < 0.4          # box inactive: no coordinate can move by more than the norm (x ± 0.05)
    x_min, r = fab_min_norm(f, x, y, jax.random.key(0), eps=1.0, norm=norm, n_iter=100)
    r = np.asarray(r)
    np.testing.assert_allclose(r, KAPPA * rho, rtol=2e-4)
    assert np.all(np.asarray(jnp.argmax(f(x_min), -1)) != yn)
    assert float(jnp.min(x_min)) > 0 and float(jnp.max(x_min)) < 1
    # at ε between the nearest distance and its found value the point is broken exactly when r ≤ ε
    eps = float(np.median(rho))
    x_adv = A.fab(f, x, y, jax.random.key(0), eps=eps, norm=norm)
    broken = np.asarray(jnp.argmax(f(x_adv), -1)) != yn
    np.testing.assert_array_equal(broken, r <= eps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_finds_the_distance_to_the_target_boundary(norm):
    """FAB-T with one target (the runner-up class t of the clean logits): on points whose segment to the
    t-boundary's nearest point (overshot by η) meets no third class, r is κ times the distance to that boundary
    (κ as in the untargeted test); on every point ρ ≤ r (FAB-T never beats the nearest boundary)."""
    f, x, y, W, xn, yn = _linear_problem(seed=1)
    dist = _distances(W, xn, yn, norm)
    t = np.argsort(-(xn @ W), axis=1)[:, 1]
    rho_t = dist[np.arange(len(yn)), t]
    _, r = fab_min_norm(f, x, y, jax.random.key(0), eps=1.0, norm=norm, targeted=True, n_target_classes=1)
    r = np.asarray(r)
    assert np.all(r >= dist.min(1) * (1 - 1e-4))
    clean = []
    for i in range(len(yn)):
        dw = W[:, yn[i]] - W[:, t[i]]
        direction = -np.sign(dw) if norm == "linf" else -dw / np.linalg.norm(dw)
        path = xn[i] + np.linspace(0, 1.05, 200)[:, None] * rho_t[i] * direction[None]
        clean.append(set(np.argmax(path @ W, axis=1)) <= {yn[i], t[i]})
    clean = np.array(clean)
    assert clean.sum() >= 10
    np.testing.assert_allclose(r[clean], KAPPA * rho_t[clean], rtol=2e-4)


# ------------------------------------------------------------------------------------------------ jit and vmap

def test_fab_t_under_jit_and_vmap_over_weights_matches_separate_calls():
    f, x, y, W, xn, yn = _linear_problem(n=16, dim=12, classes=4)
    apply = lambda p, q: q.reshape(q.shape[0], -1) @ p
    Ws = jnp.stack([jnp.asarray(W), jnp.asarray(W[:, ::-1] * 1.3)])
    key, eps = jax.random.key(3), jnp.float32(0.15)
    ys = jnp.stack([jnp.argmax(apply(w, x), -1) for w in Ws])
    batched = jax.jit(jax.vmap(lambda w, yy, e: A.fab_t(jax.tree_util.Partial(apply, w), x, yy, key, eps=e,
                                                      n_iter=20, n_target_classes=2), in_axes=(0, 0, None)))
    out = batched(Ws, ys, eps)
    for i in range(2):
        single = A.fab_t(jax.tree_util.Partial(apply, Ws[i]), x, ys[i], key, eps=eps, n_iter=20, n_target_classes=2)
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(single), atol=1e-5)
        assert float(jnp.max(jnp.abs(out[i] - x))) <= float(eps) + 1e-6
        assert float(jnp.min(out[i])) >= 0 and float(jnp.max(out[i])) <= 1
        assert np.any(np.asarray(jnp.argmax(apply(Ws[i], out[i]), -1) != ys[i]))


def test_fab_restarts_and_l2_respect_eps_and_the_box():
    f, x, y, *_ = _linear_problem(n=12, dim=10, classes=3)
    for norm, eps in (("l2", 0.1), ("linf", 0.02)):
        out = A.fab(f, x, y, jax.random.key(0), eps=eps, norm=norm, n_iter=15, n_restarts=3)
        norms = (jnp.max(jnp.abs(out - x), axis=1) if norm == "linf"
                 else jnp.sqrt(jnp.sum((out - x) ** 2, axis=1)))
        assert float(jnp.max(norms)) <= eps + 1e-6
        assert float(jnp.min(out)) >= 0 and float(jnp.max(out)) <= 1


# ------------------------------------------------------------------------------------ AutoAttack's FAB (pyautoattack)

@pytest.mark.parametrize("targeted,norm,eps", [(True, "Linf", 8 / 255), (False, "Linf", 8 / 255),
                                               (True, "L2", 0.5), (False, "L2", 0.5)])
def test_fab_agrees_with_autoattack_when_installed(targeted, norm, eps):
    """Same MLP weights in torch, 300 digits: AutoAttack's FAB / FAB-T (standard: 1 restart, no random start, 9
    targets) and ours give robust accuracies within 1 percentage point and the same per-point outcome on ≥ 95 %."""
    torch = pytest.importorskip("torch")
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    from tests.test_attacks_mlp import torch_twin, trained_mlp

    model, params, x, y = trained_mlp()
    x, y = x[:300], y[:300]
    f = jax.tree_util.Partial(model.apply, params)
    Net = torch_twin(torch, model, params)

    xt = torch.tensor(np.array(x)).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(np.array(y)).long()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = fab_pt.FABAttack_PT(Net(), norm=norm, n_restarts=1, n_iter=100, eps=eps, seed=0, targeted=targeted,
                                  n_target_classes=9, device="cpu")
        with torch.no_grad():
            ref_robust = (Net()(ref.perturb(xt, yt)).argmax(1) == yt).numpy()
    finally:
        torch.set_num_threads(threads)
    attack = A.fab_t if targeted else A.fab
    ours = attack(f, x, y, jax.random.key(0), eps=eps, norm=norm.lower())
    our_robust = np.asarray(jnp.argmax(f(ours), -1) == y)
    assert abs(our_robust.mean() - ref_robust.mean()) <= 0.01, (our_robust.mean(), ref_robust.mean())
    assert (our_robust == ref_robust).mean() >= 0.95


def test_fab_t_host_stepped_matches_the_compiled_loop():
    """Under host stepping (one compiled call per iteration) FAB-T returns what the one-program form returns."""
    from crobust.attacks import _stepping
    f, x, y, *_ = _linear_problem(n=10, dim=8, classes=4)
    kw = dict(eps=0.1, n_iter=6, n_target_classes=2)
    plain = A.fab_t(f, x, y, jax.random.key(0), **kw)
    with _stepping.host_stepped():
        stepped = A.fab_t(f, x, y, jax.random.key(0), **kw)
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(plain), atol=1e-5)


@pytest.mark.parametrize("targeted", [True, False])
def test_the_host_cascade_matches_all_runs_at_once(targeted):
    """A direct call runs the cascade (each run on the points earlier runs left, in calls of chunk_size points with
    padded remainders); inside jit every run attacks every point and the first run within ε is picked afterwards.
    Same points per example (float round-off only), at an ε where later runs still break points."""
    f, x, y, *_ = _linear_problem(seed=2, n=30, dim=10, classes=4)
    kw = dict(n_iter=12, chunk_size=4)
    kw.update(n_target_classes=3, n_restarts=2) if targeted else kw.update(n_restarts=4)
    _, r = fab_min_norm(f, x, y, jax.random.key(5), eps=0.05, targeted=targeted, **kw)
    kw["eps"] = float(np.median(np.asarray(r)))
    attack = A.fab_t if targeted else A.fab
    cascade = attack(f, x, y, jax.random.key(5), **kw)
    at_once = attack.compiled(f, x, y, jax.random.key(5), **kw)
    np.testing.assert_allclose(np.asarray(cascade), np.asarray(at_once), atol=1e-5)
    broken = np.asarray(jnp.argmax(f(cascade), -1) != y)
    assert 0 < broken.sum() < len(broken)
    # ε traced: the all-at-once form, same result
    traced = jax.jit(lambda e: attack(f, x, y, jax.random.key(5), **{**kw, "eps": e}))(jnp.float32(kw["eps"]))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(cascade), atol=1e-5)


def test_the_host_cascade_reuses_its_programs_and_reads_a_closures_current_weights():
    """A closure over arrays runs the cascade with its arrays as data: a second call with other weights compiles
    nothing new and attacks the new model (its result equals the Partial form's with those weights)."""
    import sys
    stage = sys.modules["crobust.attacks.fab"]._compiled_stage
    f, x, y, W, *_ = _linear_problem(seed=3, n=12, dim=10, classes=3)
    holder = {"W": jnp.asarray(W)}
    closure = lambda q: q.reshape(q.shape[0], -1) @ holder["W"]
    kw = dict(eps=0.5, n_iter=8, n_target_classes=2)
    first = A.fab_t(closure, x, y, jax.random.key(0), **kw)
    size = stage._cache_size()
    holder["W"] = jnp.asarray(W[::-1] * 1.5)
    y2 = jnp.argmax(closure(x), -1)
    second = A.fab_t(closure, x, y2, jax.random.key(0), **kw)
    assert stage._cache_size() == size
    partial = jax.tree_util.Partial(lambda w, q: q.reshape(q.shape[0], -1) @ w, holder["W"])
    np.testing.assert_allclose(np.asarray(second), np.asarray(A.fab_t(partial, x, y2, jax.random.key(0), **kw)),
                               atol=1e-6)
    assert np.any(np.asarray(jnp.argmax(closure(second), -1)) != np.asarray(y2))
    assert not np.allclose(np.asarray(first), np.asarray(second))
