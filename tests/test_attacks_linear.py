"""Every attack against linear classifiers, whose robust accuracy is known exactly.

For logits z = xᵀW + b, the label y and another class j, let u = W_y − W_j and m_j = xᵀu + b_y − b_j (the margin).

- ℓ∞ with the box (exact, any x in [0,1]^d): the largest margin decrease within B_∞(x, ε) ∩ [0,1]^d is
  cap_j(ε) = Σ_i |u_i|·min(ε, room_i), room_i = x_i where u_i > 0 (the pixel can fall to 0), 1 − x_i where u_i < 0.
  The point is broken at ε iff cap_j(ε) > m_j for some j; ε*_j solves cap_j(ε) = m_j (bisection in float64, ∞ when
  even ε = 1 is not enough). Without the box this would be the familiar m_j/‖u‖₁; the pixels built at 0 and 1 make
  the two differ, and the test checks that they do.
- ℓ2 without the box (interior points): ε*_j = m_j/‖u‖₂. Test points lie in [0.3, 0.7]^d and ε ≤ 0.2, so no
  coordinate can move by more than 0.2 and the box never binds: the unboxed answer is the exact one.

ε* = min_j ε*_j (0 for a misclassified point). Attacks must agree with [ε* > ε] exactly on every point whose ε* is
not within a factor 1.1 of ε (the analytic boundary, where any finite-step attack may stop just short).
"""

import jax
import jax.numpy as jnp
import numpy as np

import crobust.attacks as A

D = 64
SHAPE = (8, 8, 1)
BAND = 1.1


def _linear_problem(seed, num_classes, n, interior):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, num_classes)).astype(np.float32)
    b = rng.normal(size=num_classes).astype(np.float32) * 0.1
    if interior:
        x = rng.uniform(0.3, 0.7, size=(n, D))
    else:  # digit-like: many pixels exactly at 0 or 1, so the box binds
        x = rng.uniform(0, 1, size=(n, D))
        x[rng.uniform(size=(n, D)) < 0.35] = 0.0
        x[rng.uniform(size=(n, D)) < 0.15] = 1.0
    x = x.astype(np.float32)
    z = x @ w + b
    y = z.argmax(1)
    flip = rng.uniform(size=n) < 0.05                      # a few misclassified points
    y[flip] = (y[flip] + 1) % num_classes
    wj, bj = jnp.asarray(w), jnp.asarray(b)
    logits_fn = lambda q: q.reshape(q.shape[0], -1) @ wj + bj
    return logits_fn, w.astype(np.float64), b.astype(np.float64), x, y


def _critical_eps_linf_boxed(w, b, x, y, per_class=False):
    n, c = x.shape[0], w.shape[1]
    out = np.full(n, np.inf)
    columns = []
    for j in range(c):
        u = w[:, y].T - w[:, j][None, :]                          # (n, d)
        margin = np.einsum("nd,nd->n", x, u) + b[y] - b[j]
        room = np.where(u > 0, x, 1.0 - x)

        def cap(e):
            return np.sum(np.abs(u) * np.minimum(e[:, None], room), axis=1)

        lo, hi = np.zeros(n), np.ones(n)
        for _ in range(60):
            mid = (lo + hi) / 2
            ok = cap(mid) >= margin
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
        eps_j = np.where(cap(np.ones(n)) < margin, np.inf, hi)
        eps_j = np.where(j == y, np.inf, np.where(margin <= 0, 0.0, eps_j))
        out = np.minimum(out, eps_j)
        columns.append(eps_j)
    return np.stack(columns, 1) if per_class else out


def _critical_eps_linf_unboxed(w, b, x, y):
    out = np.full(x.shape[0], np.inf)
    for j in range(w.shape[1]):
        u = w[:, y].T - w[:, j][None, :]
        margin = np.einsum("nd,nd->n", x, u) + b[y] - b[j]
        norm = np.maximum(np.abs(u).sum(1), 1e-300)   # u = 0 only for j = y, which is excluded
        out = np.minimum(out, np.where(j == y, np.inf, np.maximum(margin, 0) / norm))
    return out


def _critical_eps_l2(w, b, x, y):
    out = np.full(x.shape[0], np.inf)
    for j in range(w.shape[1]):
        u = w[:, y].T - w[:, j][None, :]
        margin = np.einsum("nd,nd->n", x, u) + b[y] - b[j]
        norm = np.maximum(np.linalg.norm(u, axis=1), 1e-300)
        out = np.minimum(out, np.where(j == y, np.inf, np.maximum(margin, 0) / norm))
    return out


def _check(logits_fn, x, y, x_adv, eps, critical, norm, name):
    x_adv = np.asarray(x_adv)
    delta = (x_adv - x.reshape(x_adv.shape)).reshape(len(x), -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-6, f"{name}: perturbation larger than eps"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, f"{name}: left the box"
    robust = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1)) == y
    expected = critical > eps
    decided = (critical < eps / BAND) | (critical > eps * BAND)
    wrong = np.flatnonzero(decided & (robust != expected))
    assert wrong.size == 0, (f"{name}: robust flags differ from the analytic answer on {wrong.size} of "
                             f"{decided.sum()} decided points, e.g. eps*={critical[wrong[:5]]}, eps={eps}")
    # the attack's robust accuracy over decided points equals the analytic one
    assert robust[decided].mean() == expected[decided].mean()
    return decided.sum()


def _eps_between(critical):
    """A radius with many points on both sides of it (the median of the finite critical radii)."""
    finite = critical[np.isfinite(critical) & (critical > 0)]
    return float(np.median(finite))


def _attack_grid(attack, xi, eps):
    """Run ``attack(eps)`` vmapped over ε ∈ {0, eps} (ε traced); at ε = 0 every attack must return x exactly."""
    grid = jax.jit(jax.vmap(attack))(jnp.asarray([0.0, eps], jnp.float32))
    np.testing.assert_array_equal(np.asarray(grid[0]), np.asarray(xi))
    return grid[1]


def test_linf_binary_boxed_every_attack_is_exact():
    f, w, b, x, y = _linear_problem(0, 2, 300, interior=False)
    critical = _critical_eps_linf_boxed(w, b, x, y)
    unboxed = _critical_eps_linf_unboxed(w, b, x, y)
    assert np.mean(critical > unboxed * 1.05) > 0.3, "the box must matter for these points"
    eps = _eps_between(critical)
    xi, yi, key = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y), jax.random.key(0)
    attacks = {
        "fgsm": lambda e: A.fgsm(f, xi, yi, eps=e),
        "pgd": lambda e: A.pgd(f, xi, yi, key, eps=e, n_iter=10),
        "apgd-ce": lambda e: A.apgd(f, xi, yi, key, eps=e, n_iter=20),
        "square": lambda e: A.square(f, xi, yi, key, eps=e, n_queries=2000),
    }
    for name, attack in attacks.items():
        assert _check(f, x, y, _attack_grid(attack, xi, eps), eps, critical, "linf", name) > 200


def test_linf_multiclass_boxed_pgd_with_restarts_is_exact():
    """(APGD-T on this problem: test_apgd_t_targets_the_runner_up_classes_of_the_clean_logits.)"""
    f, w, b, x, y = _linear_problem(1, 10, 300, interior=False)
    critical = _critical_eps_linf_boxed(w, b, x, y)
    eps = _eps_between(critical)
    xi, yi, key = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y), jax.random.key(1)
    x_adv = _attack_grid(lambda e: A.pgd(f, xi, yi, key, eps=e, n_iter=30, n_restarts=3), xi, eps)
    assert _check(f, x, y, x_adv, eps, critical, "linf", "pgd") > 200


def test_l2_binary_interior_every_attack_is_exact():
    f, w, b, x, y = _linear_problem(2, 2, 300, interior=True)
    critical = _critical_eps_l2(w, b, x, y)
    eps = min(_eps_between(critical), 0.2)
    assert eps > 0.02
    xi, yi, key = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y), jax.random.key(2)
    attacks = {
        "fgm": lambda e: A.fgm(f, xi, yi, eps=e, norm="l2"),
        "apgd-ce": lambda e: A.apgd(f, xi, yi, key, eps=e, n_iter=20, norm="l2"),
        "square": lambda e: A.square(f, xi, yi, key, eps=e, n_queries=1000, norm="l2"),
    }
    for name, attack in attacks.items():
        assert _check(f, x, y, _attack_grid(attack, xi, eps), eps, critical, "l2", name) > 150


def test_l2_multiclass_interior_gradient_attacks_are_exact():
    f, w, b, x, y = _linear_problem(3, 10, 300, interior=True)
    critical = _critical_eps_l2(w, b, x, y)
    eps = min(_eps_between(critical), 0.2)
    xi, yi, key = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y), jax.random.key(3)
    attacks = {
        "pgd": lambda e: A.pgd(f, xi, yi, key, eps=e, n_iter=30, n_restarts=3, norm="l2"),
        "apgd-t": lambda e: A.apgd_t(f, xi, yi, key, eps=e, n_iter=50, norm="l2"),
    }
    for name, attack in attacks.items():
        assert _check(f, x, y, _attack_grid(attack, xi, eps), eps, critical, "l2", name) > 150


def test_apgd_t_targets_the_runner_up_classes_of_the_clean_logits():
    """With T target classes APGD-T can only reach the classes ranked 2 … T+1 by the clean logits: the exact
    answer is then min over those classes of ε*_j (T = 1), and with AutoAttack's T = 9 of 10 classes the exact
    boxed answer over all classes."""
    f, w, b, x, y = _linear_problem(5, 10, 300, interior=False)
    per_class = _critical_eps_linf_boxed(w, b, x, y, per_class=True)           # (n, C)
    ranked = np.argsort(-(x.astype(np.float64) @ w + b), axis=1)
    clean = ranked[:, 0] == y
    xi, yi = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y)
    eps = _eps_between(per_class.min(1))
    for targets in (1, 9):
        reachable = np.take_along_axis(per_class, ranked[:, 1:targets + 1], axis=1).min(1)
        critical = np.where(clean, reachable, 0.0)
        x_adv = _attack_grid(lambda e: A.apgd_t(f, xi, yi, jax.random.key(5), eps=e, n_iter=50,
                                                n_target_classes=targets), xi, eps)
        assert _check(f, x, y, x_adv, eps, critical, "linf", f"apgd-t/{targets}") > 200
        if targets == 1:  # the restriction matters: for some points the easiest class is not the runner-up
            assert np.sum(np.where(clean, per_class.min(1), 0.0) < critical * 0.99) > 10


def test_chunking_only_changes_speed():
    """Attacks run in chunks of examples (lax.map, padded last chunk) give the same points as one batch."""
    from crobust.attacks.apgd import chunk_size_for, map_in_chunks

    parts = map_in_chunks(lambda a, b: (a * 2, a.sum(axis=1) + b), 4, jnp.arange(30.0).reshape(10, 3), jnp.ones(10))
    np.testing.assert_array_equal(parts[0], np.arange(30.0).reshape(10, 3) * 2)
    np.testing.assert_array_equal(parts[1], np.arange(30.0).reshape(10, 3).sum(1) + 1)
    assert chunk_size_for(1000) in (None, 250) and chunk_size_for(100) is None and chunk_size_for(7, 3) == 3
    f, _, _, x, y = _linear_problem(6, 10, 150, interior=False)
    xi, yi, key = jnp.asarray(x.reshape((-1,) + SHAPE)), jnp.asarray(y), jax.random.key(6)
    run = lambda chunk: A.apgd(f, xi, yi, key, eps=0.05, n_iter=20, n_restarts=2, chunk_size=chunk)
    whole, chunked = jax.jit(lambda: run(None))(), jax.jit(lambda: run(64))()
    close = np.all(np.isclose(np.asarray(whole), np.asarray(chunked), atol=1e-5).reshape(len(x), -1), axis=1)
    assert close.mean() >= 0.98, close.mean()
