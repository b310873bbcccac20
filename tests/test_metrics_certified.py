"""Certified radii (crobust.metrics.certified): exact on linear models, below FMN's radius on a trained digits MLP
(naive and aligned encoder bounds), and the operator norms checked against brute-force Lipschitz ratios."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.attacks as A
from crobust._errors import CrobustError
from crobust.metrics import certified_radius, encoder_lipschitz, linear_pair_constants, mlp_pair_constants
from crobust.metrics.report import input_scale_of
from crobust.models.matrices import layer_matrices
from tests.test_attacks_fmn import ABS_BELOW, REL_TOL, _exact_distance, _linear_model
from tests.test_attacks_mlp import trained_mlp


@pytest.mark.parametrize("p,q,norm", [("inf", 1, "linf"), (2, 2, "l2")])
def test_linear_certified_radius_is_the_exact_distance_and_fmn_attains_it(p, q, norm):
    w, b, f, x, y = _linear_model()               # f(x) = x @ w + b: the paper matrix is w.T (C, d)
    logits = f(x)
    d = _exact_distance(w, logits, y, q)
    r_cert = np.asarray(certified_radius(logits, y, linear_pair_constants(w.T, p)))
    np.testing.assert_allclose(r_cert, d, rtol=2e-5)                 # float32 round-off of margin / ‖·‖_q
    _, r_fmn = A.fmn(f, x, y, None, norm=norm, n_iter=100)
    r_fmn = np.asarray(r_fmn)
    assert np.all(r_cert <= r_fmn + ABS_BELOW)
    assert np.all(r_fmn <= r_cert * (1 + REL_TOL))


def test_certified_radius_edge_cases():
    logits = jnp.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.0], [1.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    y = jnp.array([0, 0, 0, 0])
    lip = jnp.array([[0.0, 2.0, 4.0], [2.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.asarray(certified_radius(logits, y, lip)), [0.5, 0.0, 0.0, 1.25])
    lip0 = lip.at[0, 1].set(0.0).at[0, 2].set(0.0)                 # no pair of class 0 can flip
    assert np.isinf(np.asarray(certified_radius(logits[:1], y[:1], lip0))[0])
    with pytest.raises(CrobustError, match="pair_constants"):
        certified_radius(logits, y, lip[:2])
    with pytest.raises(CrobustError, match="mats"):
        mlp_pair_constants([jnp.ones((4, 3)), jnp.ones((2, 5))], 2)


@pytest.mark.parametrize("p", ["inf", 2])
def test_mlp_pair_constants_bound_empirical_ratios(p):
    """|Δ(z_y − z_j)| / ‖Δx‖_p ≤ L_yj on random pairs of inputs of a random biased ReLU MLP (flax orientation
    converted to the paper's)."""
    k = jax.random.split(jax.random.key(5), 6)
    kernels = [jax.random.normal(k[0], (12, 16)), jax.random.normal(k[1], (16, 16)), jax.random.normal(k[2], (16, 4))]
    biases = [jax.random.normal(k[3], (16,)), jax.random.normal(k[4], (16,)), jnp.zeros(4)]

    def f(x):
        for i, (kern, bias) in enumerate(zip(kernels, biases)):
            x = x @ kern + bias
            x = jax.nn.relu(x) if i < len(kernels) - 1 else x
        return x

    lip = np.asarray(mlp_pair_constants([kern.T for kern in kernels], p))
    x1 = jax.random.normal(k[5], (2000, 12))
    x2 = x1 + 0.3 * jax.random.normal(jax.random.key(9), (2000, 12))
    dz = np.asarray(f(x2) - f(x1))                                  # (M, C)
    dx = np.asarray(jnp.max(jnp.abs(x2 - x1), -1) if p == "inf" else jnp.linalg.norm(x2 - x1, axis=-1))
    ratio = np.abs(dz[:, :, None] - dz[:, None, :]) / dx[:, None, None]
    assert np.all(ratio.max(axis=0) <= lip * (1 + 1e-5))
    # a one-layer "MLP" is the linear model
    np.testing.assert_allclose(np.asarray(mlp_pair_constants([kernels[0].T], p, input_scale=2.0)),
                               2.0 * np.asarray(linear_pair_constants(kernels[0].T, p)), rtol=1e-6)


@pytest.mark.parametrize("p,norm", [("inf", "linf"), (2, "l2")])
def test_certified_below_fmn_on_the_digits_mlp(p, norm):
    model, params, x, y = trained_mlp()
    x, y = x[:200], y[:200]
    f = jax.tree_util.Partial(model.apply, params)
    mats = list(layer_matrices(params).values())                     # hidden_0, hidden_1, head: (out, in)
    scale = input_scale_of(model)
    naive = mlp_pair_constants(mats, p, input_scale=scale)
    enc = encoder_lipschitz(mats[:-1], p, mode="bound", input_scale=scale)
    aligned = mlp_pair_constants(mats, p, encoder_bound=enc["aligned"])
    logits = f(x)
    r_naive = np.asarray(certified_radius(logits, y, naive))
    r_aligned = np.asarray(certified_radius(logits, y, aligned))
    _, r_fmn = A.fmn(f, x, y, None, norm=norm, n_iter=100)
    r_fmn = np.asarray(r_fmn)
    assert np.all(r_naive <= r_aligned * (1 + 1e-6))                 # the aligned bound is never above the naive one
    assert np.all(r_aligned <= r_fmn)
    correct = np.asarray(jnp.argmax(logits, -1) == y)
    assert np.all(r_naive[~correct] == 0.0) and np.all(r_naive[correct] > 0.0)
