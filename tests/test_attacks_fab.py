"""FAB and FAB-T: the box-and-hyperplane projections against a brute-force solution, exact boundary distances of
a linear model, jit/vmap over weights, and (when torch + pyautoattack are installed) AutoAttack's FAB itself."""

import functools

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
    from tests.test_attacks_mlp import trained_mlp

    model, params, x, y = trained_mlp()
    x, y = x[:300], y[:300]
    f = jax.tree_util.Partial(model.apply, params)
    mean, std = model.mean[0], model.std[0]
    kernels = [torch.tensor(np.array(params["params"][k]["kernel"])) for k in ("hidden_0", "hidden_1", "head")]

    class Net(torch.nn.Module):
        def forward(self, q):
            z = ((q.permute(0, 2, 3, 1) - mean) / std).reshape(q.shape[0], -1)
            for i, k in enumerate(kernels):
                z = z @ k
                z = torch.relu(z) if i < len(kernels) - 1 else z
            return z

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
