"""FMN (crobust.attacks.fmn): the exact radius on linear models, invariants on a trained digits MLP, jit/vmap, the
robust-accuracy curve, starting points and argument checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.attacks as A
from crobust._errors import CrobustError
from crobust.attacks import projections as P
from tests.test_attacks_mlp import trained_mlp

D, C, N = 64, 10, 48

# Tolerance of the linear-model check. With gamma_final = 0.001 and the cosine schedule over K = 100 iterations,
# γ_k over the last 10 iterations is at most γ_f + (γ_0 − γ_f)(1 − cos(0.1π))/2 = 0.001 + 0.049·0.0245 ≈ 0.0022:
# there ε oscillates across the boundary distance d by factors 1 ± γ_k, so the best adversarial norm is within a
# few γ_k of d. 1 % is ~4× that (measured: ≤ 3e-4 for ℓ∞, ≤ 1e-4 for ℓ2). From below, the radius can undercut d
# only by float32 rounding of the logits at the boundary: |Δ(z_y − z_j)| ~ 1e-6·|z| over ‖w_y − w_j‖_q ≥ 5,
# i.e. ≤ 1e-5 absolute.
REL_TOL = 0.01
ABS_BELOW = 1e-5


def _linear_model():
    w = jax.random.normal(jax.random.key(0), (D, C))            # x @ w: the flax orientation (in, out)
    b = jax.random.normal(jax.random.key(3), (C,))
    f = jax.tree_util.Partial(lambda w, b, x: x.reshape(x.shape[0], -1) @ w + b, w, b)
    x = 0.4 + 0.2 * jax.random.uniform(jax.random.key(1), (N, 8, 8, 1))   # the box is ≥ 0.4 away
    y = jnp.argmax(f(x), -1)
    return w, b, f, x, y


def _exact_distance(w, logits, y, q):
    """min_{j≠y} (z_y − z_j)/‖w_y − w_j‖_q, computed in float64."""
    w, logits, y = np.asarray(w, np.float64), np.asarray(logits, np.float64), np.asarray(y)
    diff = w.T[y][:, None, :] - w.T[None, :, :]                                    # (N, C, D)
    lip = np.linalg.norm(diff, ord=q, axis=-1)
    margin = logits[np.arange(len(y)), y][:, None] - logits
    ratio = np.where(np.arange(C)[None] == y[:, None], np.inf, margin / np.where(lip > 0, lip, 1.0))
    return ratio.min(axis=1)


@pytest.mark.parametrize("norm,q", [("linf", 1), ("l2", 2)])
def test_radius_is_the_distance_to_a_linear_boundary(norm, q):
    w, b, f, x, y = _linear_model()
    d = _exact_distance(w, f(x), y, q)
    assert d.max() < 0.3                                       # every minimal perturbation stays inside the box
    x_adv, radius = A.fmn(f, x, y, None, norm=norm, n_iter=100, gamma_final=0.001)
    radius = np.asarray(radius)
    assert np.all(radius >= d - ABS_BELOW)
    assert np.all(radius <= d * (1 + REL_TOL)), np.max(radius / d - 1)
    assert np.all(np.asarray(jnp.argmax(f(x_adv), -1) != y))
    np.testing.assert_allclose(np.asarray(P.lp_norm(x_adv - x, norm)), radius, rtol=1e-6)


def test_reference_rule_radii_are_upper_bounds_on_a_linear_model():
    """``overshoot=False`` (the reference ε rule) lands exactly on a linear boundary; whatever rounding decides,
    every radius it does return is still an upper bound ≥ d."""
    w, b, f, x, y = _linear_model()
    d = _exact_distance(w, f(x), y, 2)
    _, radius = A.fmn(f, x, y, None, norm="l2", n_iter=30, overshoot=False)
    radius = np.asarray(radius)
    assert np.all(radius >= d - ABS_BELOW)


def test_misclassified_points_have_radius_zero_and_curve():
    w, b, f, x, y = _linear_model()
    y_wrong = (y + 1) % C
    y_mixed = jnp.where(jnp.arange(N) % 2 == 0, y, y_wrong)
    x_adv, radius = A.fmn(f, x, y_mixed, None, norm="linf", n_iter=50)
    radius = np.asarray(radius)
    assert np.all(radius[1::2] == 0.0)
    np.testing.assert_array_equal(np.asarray(x_adv)[1::2], np.asarray(x)[1::2])
    assert np.all(radius[::2] > 0)
    grid = jnp.asarray([0.0, np.median(radius[::2]), 10.0])
    curve = np.asarray(A.robust_accuracy_curve(radius, grid))
    np.testing.assert_allclose(curve, [(radius > e).mean() for e in np.asarray(grid)])
    assert curve[0] == 0.5 and curve[2] == 0.0


def test_starting_points_search_the_boundary_first():
    w, b, f, x, y = _linear_model()
    d = _exact_distance(w, f(x), y, 2)
    x_far, _ = A.fmn(f, x, y, None, norm="l2", n_iter=5, gamma_final=0.05)         # crude adversarial points
    x_adv, radius = A.fmn(f, x, y, None, norm="l2", n_iter=50, starting_points=x_far)
    radius = np.asarray(radius)
    assert np.all(np.isfinite(radius)) and np.all(radius >= d - ABS_BELOW)
    assert np.all(radius <= d * (1 + REL_TOL))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_invariants_on_the_digits_mlp(norm):
    model, params, x, y = trained_mlp()
    x, y = x[:200], y[:200]
    f = jax.tree_util.Partial(model.apply, params)
    x_adv, radius = A.fmn(f, x, y, None, norm=norm, n_iter=100)
    radius = np.asarray(radius)
    found = np.isfinite(radius)
    assert found.mean() > 0.95
    assert np.all(np.asarray(x_adv) >= 0.0) and np.all(np.asarray(x_adv) <= 1.0)
    wrong = np.asarray(jnp.argmax(f(x_adv), -1) != y)
    assert np.all(wrong[found])
    np.testing.assert_allclose(np.asarray(P.lp_norm(x_adv - x, norm))[found], radius[found], rtol=1e-6)
    clean_wrong = np.asarray(jnp.argmax(f(x), -1) != y)
    assert np.all(radius[clean_wrong] == 0.0) and np.all(radius[~clean_wrong] > 0.0)


def test_jit_vmap_over_two_weight_sets_equals_separate_calls():
    w, b, _, x, _ = _linear_model()
    ws = jnp.stack([w, -w[:, ::-1]])
    apply = lambda w, x: x.reshape(x.shape[0], -1) @ w + b
    ys = jax.vmap(lambda w: jnp.argmax(apply(w, x), -1))(ws)
    run = lambda w, y: A.fmn(jax.tree_util.Partial(apply, w), x, y, None, norm="l2", n_iter=30)
    x_b, r_b = jax.jit(jax.vmap(run))(ws, ys)
    for m in range(2):
        x_m, r_m = A.fmn(jax.tree_util.Partial(apply, ws[m]), x, ys[m], None, norm="l2", n_iter=30)
        np.testing.assert_allclose(np.asarray(r_b[m]), np.asarray(r_m), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(x_b[m]), np.asarray(x_m), atol=1e-6)


def test_host_stepped_matches_the_compiled_loop():
    from crobust.attacks import _stepping
    w, b, f, x, y = _linear_model()
    _, r_c = A.fmn(f, x, y, None, norm="linf", n_iter=10)
    with _stepping.host_stepped():
        _, r_h = A.fmn(f, x, y, None, norm="linf", n_iter=10)
    np.testing.assert_allclose(np.asarray(r_h), np.asarray(r_c), rtol=1e-5)


def test_argument_checks():
    w, b, f, x, y = _linear_model()
    with pytest.raises(CrobustError, match="norm"):
        A.fmn(f, x, y, None, norm="l1")
    with pytest.raises(CrobustError, match="n_iter"):
        A.fmn(f, x, y, None, n_iter=0)
    with pytest.raises(CrobustError, match="starting_points"):
        A.fmn(f, x, y, None, starting_points=x + 2.0)
    with pytest.raises(CrobustError, match="gamma"):
        A.fmn(f, x, y, None, gamma_init=1.5)
    with pytest.raises(CrobustError, match="radii"):
        A.robust_accuracy_curve(jnp.zeros((2, 2)), 0.1)


def test_reference_rules_leave_digits_points_unbroken_and_ours_do_not():
    """The two documented changes to the reference ε rules (``overshoot``, ``box_aware``): with both off, ℓ2 FMN
    stalls below the boundary on most digits points (pixels at 0 take part of the budget); with both on it breaks
    every correctly classified one of these 100."""
    model, params, x, y = trained_mlp()
    f = jax.tree_util.Partial(model.apply, params)
    x, y = x[:100], y[:100]
    _, ours = A.fmn(f, x, y, None, norm="l2", n_iter=100)
    _, ref = A.fmn(f, x, y, None, norm="l2", n_iter=100, overshoot=False, box_aware=False)
    assert np.all(np.isfinite(np.asarray(ours)))
    assert np.mean(~np.isfinite(np.asarray(ref))) > 0.3


def test_closure_form_and_predicted_labels_reuse_one_program():
    w, b, f, x, y = _linear_model()
    _, r_partial = A.fmn(f, x, y, None, norm="l2", n_iter=20)
    before = A.fmn.compiled._cache_size()
    for scale in (1.0, 2.0):
        w_now = w * scale
        _, r = A.fmn(lambda q: q.reshape(q.shape[0], -1) @ w_now + b, x, None, None, norm="l2", n_iter=20,
                     labels="predicted")
        if scale == 1.0:
            np.testing.assert_allclose(np.asarray(r), np.asarray(r_partial), rtol=1e-6)
        else:                                                    # the new weights were used
            assert not np.allclose(np.asarray(r), np.asarray(r_partial), rtol=1e-3)
    assert A.fmn.compiled._cache_size() == before + 1
