"""Losses, projections, random starts and argument checks of crobust.attacks (property tests with hypothesis)."""

import jax
from jax.tree_util import Partial
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import crobust.attacks as A
from crobust._errors import CrobustError
from crobust.attacks import losses
from crobust.attacks import projections as P
from _margins import assert_far_from_ties

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
shapes = st.sampled_from([(1, 2), (3, 5), (2, 3, 3, 1), (4, 2, 2, 3), (5, 8, 8, 1)])
radii = st.floats(0.0, 1.0, allow_nan=False, width=32)
seeds = st.integers(0, 2**31 - 1)


# jitted once per shape (eager op-by-op dispatch would compile every primitive for every shape)
project = jax.jit(P.project, static_argnames=("norm", "clip"))
project_l2_exact = jax.jit(P.project_l2_exact)


def _images(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape).astype(np.float32)
    x[rng.uniform(size=shape) < 0.2] = 0.0   # some pixels on the box faces
    x[rng.uniform(size=shape) < 0.1] = 1.0
    return jnp.asarray(x)


def _norms(v, norm):
    flat = np.asarray(v, np.float64).reshape(v.shape[0], -1)
    return np.max(np.abs(flat), axis=1) if norm == "linf" else np.sqrt(np.sum(flat ** 2, axis=1))


# ----------------------------------------------------------------------------------------------- losses

def test_losses_match_definitions_brute_force():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 6)).astype(np.float32) * 3
    y = rng.integers(0, 6, 50)
    t = (y + 1 + rng.integers(0, 5, 50)) % 6
    zj, yj, tj = jnp.asarray(z), jnp.asarray(y), jnp.asarray(t)
    np.testing.assert_allclose(losses.cross_entropy(zj, yj),
                               optax.softmax_cross_entropy_with_integer_labels(zj, yj), rtol=1e-5, atol=1e-5)
    for n in range(50):
        others = [z[n, j] for j in range(6) if j != y[n]]
        srt = np.sort(z[n])[::-1]
        assert losses.margin(zj, yj)[n] == pytest.approx(max(others) - z[n, y[n]], abs=1e-5)
        assert losses.dlr(zj, yj)[n] == pytest.approx(-(z[n, y[n]] - max(others)) / (srt[0] - srt[2] + 1e-12),
                                                      rel=1e-4, abs=1e-5)
        expect_t = -(z[n, y[n]] - z[n, t[n]]) / (srt[0] - 0.5 * (srt[2] + srt[3]) + 1e-12)
        assert losses.targeted_dlr(zj, yj, tj)[n] == pytest.approx(expect_t, rel=1e-4, abs=1e-5)
    # margin > 0 exactly when misclassified
    assert np.array_equal(np.asarray(losses.margin(zj, yj) > 0), z.argmax(1) != y)


def test_dlr_is_shift_and_scale_invariant():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(20, 10)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 20))
    np.testing.assert_allclose(losses.dlr(z, y), losses.dlr(3.0 * z + 7.0, y), rtol=1e-4, atol=1e-5)


def test_losses_need_enough_classes():
    z2, y2 = jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32)
    with pytest.raises(CrobustError, match="dlr"):
        losses.dlr(z2, y2)
    with pytest.raises(CrobustError, match="targeted_dlr"):
        losses.targeted_dlr(jnp.zeros((3, 3)), y2, y2)
    with pytest.raises(CrobustError, match="loss"):
        losses.get("hinge")


# ----------------------------------------------------------------------------------------------- projections

@SETTINGS
@given(shape=shapes, eps=radii, seed=seeds, scale=st.floats(0.0, 3.0))
def test_projections_are_feasible_idempotent_and_fix_feasible_points(shape, eps, seed, scale):
    x = _images(seed, shape)
    rng = np.random.default_rng(seed + 1)
    target = x + jnp.asarray(rng.normal(size=shape).astype(np.float32)) * scale
    for norm in ("linf", "l2"):
        p = project(target, x, eps, norm)
        assert np.all(_norms(p - x, norm) <= eps * (1 + 1e-5) + 1e-6)
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
        np.testing.assert_allclose(project(p, x, eps, norm), p, atol=1e-6)
        unclipped = project(target, x, eps, norm, clip=False)
        assert np.all(_norms(unclipped - x, norm) <= eps * (1 + 1e-5) + 1e-6)
    exact = project_l2_exact(target, x, eps)
    assert np.all(_norms(exact - x, "l2") <= eps * (1 + 1e-5) + 1e-6)
    assert float(exact.min()) >= 0.0 and float(exact.max()) <= 1.0
    # a feasible point is its own projection
    inside = project(target, x, eps, "l2")
    np.testing.assert_allclose(project_l2_exact(inside, x, eps), inside, atol=1e-5)


@SETTINGS
@given(shape=shapes, eps=radii, seed=seeds)
def test_linf_projection_is_the_nearest_point_of_the_box(shape, eps, seed):
    x = _images(seed, shape)
    rng = np.random.default_rng(seed + 2)
    target = x + jnp.asarray(rng.normal(size=shape).astype(np.float32))
    p = np.asarray(project(target, x, eps, "linf"), np.float64)
    t = np.asarray(target, np.float64)
    lo, hi = np.maximum(np.asarray(x) - eps, 0), np.minimum(np.asarray(x) + eps, 1)
    # B_∞(x, ε) ∩ [0,1]^d is the box [lo, hi]; its nearest point to t is t itself inside, else the nearer face
    assert np.all((p >= lo - 1e-6) & (p <= hi + 1e-6))
    inside = (t >= lo) & (t <= hi)
    np.testing.assert_allclose(p[inside], t[inside], atol=1e-6)
    np.testing.assert_allclose(p[t < lo], lo[t < lo], atol=1e-6)
    np.testing.assert_allclose(p[t > hi], hi[t > hi], atol=1e-6)


def test_exact_l2_projection_beats_every_feasible_point_in_2d():
    """Brute force on a fine grid of B_2(x, ε) ∩ [0,1]²: no feasible point is closer than the exact projection."""
    rng = np.random.default_rng(3)
    g = np.linspace(0, 1, 401)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for _ in range(20):
        x = rng.uniform(0, 1, 2).astype(np.float32)
        eps = float(rng.uniform(0.05, 0.8))
        target = (x + rng.normal(size=2) * 1.5).astype(np.float32)
        p = np.asarray(P.project_l2_exact(jnp.asarray(target)[None, None], jnp.asarray(x)[None, None], eps))[0, 0]
        feasible = grid[np.linalg.norm(grid - x, axis=1) <= eps]
        best = np.min(np.linalg.norm(feasible - target, axis=1))
        assert np.linalg.norm(p - target) <= best + 1e-5
        rescaled = np.asarray(P.project_l2(jnp.asarray(target)[None, None], jnp.asarray(x)[None, None], eps))[0, 0]
        assert np.linalg.norm(p - target) <= np.linalg.norm(rescaled - target) + 1e-6


def test_steepest_direction_is_unit_and_zero_safe():
    g = jnp.asarray([[[3.0, -4.0]], [[0.0, 0.0]]])
    d2 = P.steepest_direction(g, "l2")
    np.testing.assert_allclose(d2[0], [[0.6, -0.8]], atol=1e-6)
    assert np.all(np.asarray(d2[1]) == 0) and not np.any(np.isnan(np.asarray(d2)))
    np.testing.assert_array_equal(P.steepest_direction(g, "linf")[0], [[1.0, -1.0]])


# ----------------------------------------------------------------------------------------------- random starts

@jax.jit
def _all_starts(key, x, eps):
    return {norm: (P.random_start(key, x, eps, norm), P.random_delta(key, x, eps, norm)) for norm in ("linf", "l2")}


@settings(max_examples=15, deadline=None, derandomize=True)
@given(shape=st.sampled_from([(3, 5), (2, 3, 3, 1), (5, 8, 8, 1)]), eps=radii, seed=seeds)
def test_random_starts_lie_in_the_ball_and_box(shape, eps, seed):
    x = _images(seed, shape)
    for norm, (x0, d) in _all_starts(jax.random.key(seed), x, eps).items():
        assert np.all(_norms(x0 - x, norm) <= eps * (1 + 1e-5) + 1e-6)
        assert float(x0.min()) >= 0.0 and float(x0.max()) <= 1.0
        assert np.all(_norms(d, norm) <= eps * (1 + 1e-5) + 1e-6)


def test_linf_random_start_is_uniform_in_the_box():
    x = jnp.full((4000, 2, 2, 1), 0.5)
    d = np.asarray(P.random_delta(jax.random.key(0), x, 0.25, "linf")).reshape(-1)
    assert stats.kstest(d, stats.uniform(loc=-0.25, scale=0.5).cdf).pvalue > 1e-3
    # coordinates are independent: correlation between two pixels ≈ 0
    flat = np.asarray(P.random_delta(jax.random.key(1), x, 0.25, "linf")).reshape(4000, -1)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 0.06


@pytest.mark.parametrize("d", [1, 3, 64])
def test_l2_random_start_is_uniform_in_the_ball(d):
    """Uniform in the d-ball: P(‖δ‖ ≤ rε) = r^d, and the direction is isotropic (mean 0)."""
    eps = 0.3
    x = jnp.full((5000, d), 0.5)
    delta = np.asarray(P.random_delta(jax.random.key(d), x, eps, "l2"), np.float64)
    radius = np.linalg.norm(delta, axis=1) / eps
    assert radius.max() <= 1 + 1e-5
    assert stats.kstest(radius ** d, "uniform").pvalue > 1e-3
    units = delta / np.linalg.norm(delta, axis=1, keepdims=True)
    assert np.all(np.abs(units.mean(axis=0)) < 5 / np.sqrt(5000))


def test_unclipped_random_start_can_leave_the_box():
    x = jnp.zeros((200, 4))
    assert float(P.random_start(jax.random.key(0), x, 0.1, "linf", clip=False).min()) < 0
    assert float(P.random_start(jax.random.key(0), x, 0.1, "linf", clip=True).min()) == 0


# ----------------------------------------------------------------------------------------------- bad input

def _linear(num_classes=4, d=16):
    w = jax.random.normal(jax.random.key(0), (d, num_classes))
    return lambda x: x.reshape(x.shape[0], -1) @ w


ATTACKS = [
    lambda f, x, y, **kw: A.fgm(f, x, y, **kw),
    lambda f, x, y, **kw: A.pgd(f, x, y, jax.random.key(0), n_iter=2, **kw),
    lambda f, x, y, **kw: A.apgd(f, x, y, jax.random.key(0), n_iter=2, **kw),
    lambda f, x, y, **kw: A.apgd_t(f, x, y, jax.random.key(0), n_iter=2, n_target_classes=3, **kw),
    lambda f, x, y, **kw: A.square(f, x, y, jax.random.key(0), n_queries=2, **kw),
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_bad_input_is_a_clear_error_naming_the_argument(attack):
    f = _linear()
    x = jnp.full((3, 4, 4, 1), 0.5)
    y = jnp.array([0, 1, 2])
    cases = [
        (dict(x=x, y=y, eps=0.1, norm="l3"), "norm"),
        (dict(x=x, y=y, eps=-0.1), "eps"),
        (dict(x=x + 1.0, y=y, eps=0.1), "x must lie in"),
        (dict(x=x - 0.7, y=y, eps=0.1), "x must lie in"),
        (dict(x=x, y=y[:2], eps=0.1), "y must have shape"),
        (dict(x=x, y=jax.nn.one_hot(y, 4), eps=0.1), "y must be integer"),
        (dict(x=x, y=jnp.array([0, 1, 7]), eps=0.1), "y must lie in"),
        (dict(x=x, y=y, eps=0.1, labels="gold"), "labels"),
        (dict(x=x, y=None, eps=0.1), "y is required"),
    ]
    for kwargs, match in cases:
        with pytest.raises(CrobustError, match=match):
            attack(f, kwargs.pop("x"), kwargs.pop("y"), **kwargs)


def test_bad_loss_and_logit_shape_are_clear_errors():
    f = _linear()
    x, y = jnp.full((3, 4, 4, 1), 0.5), jnp.array([0, 1, 2])
    with pytest.raises(CrobustError, match="loss"):
        A.pgd(f, x, y, jax.random.key(0), eps=0.1, loss="hinge")
    with pytest.raises(CrobustError, match="loss"):
        A.apgd(f, x, y, jax.random.key(0), eps=0.1, loss="dlr-targeted")
    with pytest.raises(CrobustError, match="loss"):
        A.square(f, x, y, jax.random.key(0), eps=0.1, loss="dlr")
    with pytest.raises(CrobustError, match="logits_fn"):
        A.apgd(lambda q: q.reshape(-1), x, y, jax.random.key(0), eps=0.1)
    with pytest.raises(CrobustError, match="n_target_classes"):
        A.apgd_t(f, x, y, jax.random.key(0), eps=0.1, n_target_classes=0, loss="ce-targeted")
    with pytest.raises(CrobustError, match="keep"):
        A.pgd(f, x, y, jax.random.key(0), eps=0.1, keep="last")
    with pytest.raises(CrobustError, match="use fgm"):       # the sign step is l-inf only: refused, not rerouted
        A.fgsm(f, x, y, eps=0.1, norm="l2")


def test_value_checks_are_skipped_under_tracing_and_eps_is_traceable():
    f = _linear()
    x, y = jnp.full((3, 4, 4, 1), 0.5), jnp.array([0, 1, 2])
    run = jax.jit(lambda x, y, e: A.pgd(f, x, y, jax.random.key(0), eps=e, n_iter=3))
    out = run(x, y, 0.1)
    assert float(jnp.max(jnp.abs(out - x))) <= 0.1 + 1e-6
    # (every attack under jit(vmap) over a traced ε grid: tests/test_attacks_linear.py)
    # norm names are case-insensitive
    out = jax.jit(lambda x: A.fgm(f, x, y, eps=0.1, norm="L2", loss="dlr"))(x)
    assert float(jnp.sqrt(jnp.sum((out - x) ** 2, axis=(1, 2, 3))).max()) <= 0.1 + 1e-6


# ------------------------------------------------------------------------------- per-point best over iterates

def _wave_model():
    """x (N, 1) → logits [0, 5·sin(21.6·(x − 0.5) − π/4)]: from x = 0.5 (class 0, the loss rising) PGD steps of
    0.1 reach 0.6 (class 1: broken) and then 0.7 (class 0 again): broken only at the intermediate iterate."""
    return lambda q: jnp.concatenate([jnp.zeros_like(q), 5 * jnp.sin(21.6 * (q - 0.5) - jnp.pi / 4)], axis=1)


def test_pgd_counts_a_point_broken_only_at_an_intermediate_iterate():
    f = _wave_model()
    x, y = jnp.array([[0.5]]), jnp.array([0])
    kw = dict(eps=0.25, n_iter=2, step_size=0.1, random_start=False)
    assert int(jnp.argmax(f(x), -1)[0]) == 0
    last = A.pgd(f, x, y, jax.random.key(0), keep="max_loss", **kw)        # the last iterate x² = 0.7
    np.testing.assert_allclose(np.asarray(last), [[0.7]], atol=1e-6)
    assert int(jnp.argmax(f(last), -1)[0]) == 0                             # the last iterate is not adversarial
    best = A.pgd(f, x, y, jax.random.key(0), **kw)                          # default keep='best'
    np.testing.assert_allclose(np.asarray(best), [[0.6]], atol=1e-6)
    assert int(jnp.argmax(f(best), -1)[0]) == 1


def test_pgd_counts_a_point_broken_only_by_a_later_restart():
    """With no steps (n_iter = 0) a restart's result is its random start; a point is misclassified exactly where
    its start lies above 0.55. Some points are broken only by restart 1 or 2: each must count as broken."""
    f = lambda q: jnp.concatenate([jnp.zeros_like(q[:, :1]), 10 * (q[:, :1] - 0.55)], axis=1)
    x = jnp.full((300, 1), 0.5)
    y = jnp.zeros((300,), jnp.int32)
    key, restarts = jax.random.key(3), 3
    kw = dict(eps=0.2, n_iter=0)
    singles = np.stack([np.asarray(jnp.argmax(f(A.pgd(f, x, y, k, keep="max_loss", **kw)), -1) != 0)
                        for k in jax.random.split(key, restarts)])                      # (R, N) broken by r
    only_later = ~singles[0] & singles[1:].any(0)
    assert only_later.sum() > 20                                                         # the case occurs
    best = A.pgd(f, x, y, key, n_restarts=restarts, **kw)
    broken = np.asarray(jnp.argmax(f(best), -1) != 0)
    np.testing.assert_array_equal(broken, singles.any(0))          # broken ⇔ some restart broke it


def test_direct_calls_reuse_compilation_and_always_use_the_new_weights():
    """Partial(apply_fn, params): one cached compile per model and shapes; new weights are data."""
    apply_fn = lambda w, q: q.reshape(q.shape[0], -1) @ w
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (20, 4, 4, 1)).astype(np.float32))
    w = jnp.asarray(np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32))
    y = jnp.argmax(x.reshape(20, -1) @ w, -1)
    kw = dict(eps=0.3, n_iter=5, loss="ce")
    moved = A.apgd(Partial(apply_fn, w), x, y, jax.random.key(0), **kw)
    size = A.apgd.compiled._cache_size()
    # -w misclassifies every point clean, and the attack returns such points unchanged: a stale program would
    # still move them
    unchanged = A.apgd(Partial(apply_fn, -w), x, y, jax.random.key(0), **kw)
    assert A.apgd.compiled._cache_size() == size                             # no new compilation
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1
    np.testing.assert_array_equal(np.asarray(unchanged), np.asarray(x))
    again = A.apgd(Partial(apply_fn, w), x, y, jax.random.key(0), **kw)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(moved))
    assert A.apgd.compiled._cache_size() == size


def test_universal_perturbation_returns_its_best_pass_and_accuracy_needs_clean_correctness():
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(16, 4)).astype(np.float32))
    f = lambda q: q.reshape(q.shape[0], -1) @ w
    x = jnp.asarray(rng.uniform(0.3, 0.7, (120, 4, 4, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 4, 120).astype(np.int32))        # random labels: many wrong clean
    clean = np.asarray(jnp.argmax(f(x), -1) == y)
    assert_far_from_ties(f(x))                         # the δ = 0 program's decisions equal these exactly
    assert 0.1 < clean.mean() < 0.9
    # δ = 0: universal accuracy equals clean accuracy (points wrong clean never count as correct)
    assert float(A.universal_accuracy(f, x, y, jnp.zeros((4, 4, 1)))) == pytest.approx(clean.mean())
    # a step far too large makes passes erratic; the returned δ must be the best pass, not the last
    best, deltas, accs = A.universal_perturbation(f, x, y, jax.random.key(0), eps=0.02, step_size=0.02,
                                                  batch_size=16, n_passes=6, return_passes=True)
    accs = np.asarray(accs)
    by_hand = [float(A.universal_accuracy(f, x, y, d)) for d in deltas]
    np.testing.assert_allclose(accs, by_hand, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(best), np.asarray(deltas[int(np.argmin(accs))]))
    assert accs[-1] > accs.min()          # the case discriminates: the last pass is not the best one
    assert float(jnp.max(jnp.abs(best))) <= 0.02 + 1e-6
