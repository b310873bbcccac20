"""crobust.optim: torch's AdamW and SGD rules in float64 numpy, and a skipped step that changes nothing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax.tree_utils import tree_get

from crobust import optim
from crobust._errors import CrobustError

RNG = np.random.default_rng(0)
PARAMS = {"a": RNG.normal(size=(5, 3)).astype(np.float32), "b": RNG.normal(size=(4,)).astype(np.float32)}
GRADS = [jax.tree.map(lambda x: RNG.normal(size=x.shape).astype(np.float32), PARAMS) for _ in range(3)]


def _run(name, lr, wd, grads, actives, momentum=0.9):
    state = optim.init(name, PARAMS, lr, wd)
    p = PARAMS
    step = jax.jit(lambda p, g, s, a: optim.step(name, p, g, s, a, momentum=momentum))
    for g, a in zip(grads, actives):
        p, state = step(p, g, state, a)
    return p, state


def test_adamw_is_torch_adamw():
    lr, wd, b1, b2, eps = 1e-2, 0.1, 0.9, 0.999, 1e-8
    p, state = _run("adamw", lr, wd, GRADS, [True] * 3)
    ref = jax.tree.map(lambda x: x.astype(np.float64), PARAMS)
    m = jax.tree.map(np.zeros_like, ref)
    v = jax.tree.map(np.zeros_like, ref)
    for t, g in enumerate(GRADS, start=1):
        m = jax.tree.map(lambda a, gg: b1 * a + (1 - b1) * gg, m, g)
        v = jax.tree.map(lambda a, gg: b2 * a + (1 - b2) * gg.astype(np.float64) ** 2, v, g)
        ref = jax.tree.map(lambda x, a, s: x * (1 - lr * wd) - lr * (a / (1 - b1 ** t)) / (
            np.sqrt(s / (1 - b2 ** t)) + eps), ref, m, v)
    for k in PARAMS:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tree_get(state, "mu")[k], m[k], rtol=1e-5, atol=1e-7)
    assert int(state.count) == 3 and int(tree_get(state.inner_state, "count")) == 3    # bias correction's t
    # Adam's first step moves every coordinate by lr·sign(g) (m̂/√v̂ = g/|g|) besides the decay: a wrong rule would not
    p1, _ = _run("adamw", lr, wd, GRADS[:1], [True])
    np.testing.assert_allclose(p1["a"], PARAMS["a"] * (1 - lr * wd) - lr * np.sign(GRADS[0]["a"]), rtol=1e-5,
                               atol=1e-6)


def test_sgd_is_torch_sgd_with_momentum_and_coupled_decay():
    lr, wd, mom = 0.05, 1e-2, 0.9
    p, state = _run("sgd", lr, wd, GRADS, [True] * 3, momentum=mom)
    ref, buf = jax.tree.map(lambda x: x.astype(np.float64), PARAMS), None
    for g in GRADS:
        d = jax.tree.map(lambda gg, x: gg + wd * x, g, ref)
        buf = d if buf is None else jax.tree.map(lambda b, dd: mom * b + dd, buf, d)   # torch: first buf = d
        ref = jax.tree.map(lambda x, b: x - lr * b, ref, buf)
    for k in PARAMS:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)
    assert tree_get(state, "mu") is None and int(state.count) == 3


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_a_skipped_step_changes_nothing_even_with_non_finite_gradients(name):
    nan = jax.tree.map(lambda x: np.full_like(x, np.nan), PARAMS)
    p1, s1 = _run(name, 1e-2, 0.1, GRADS[:2], [True, True])
    p2, s2 = _run(name, 1e-2, 0.1, [GRADS[0], nan, GRADS[1], GRADS[2]], [True, False, True, False])
    chex.assert_trees_all_equal((p1, s1), (p2, s2))                       # bit for bit, count included


def test_with_hparams_and_bad_name():
    s = optim.with_hparams(optim.init("adamw", PARAMS, 1e-3, 0.0), 0.5, 0.25)
    assert float(optim.learning_rate(s)) == 0.5 and float(optim.weight_decay(s)) == 0.25
    with pytest.raises(CrobustError, match="optimizer.*adamw, sgd"):
        optim.init("adam", PARAMS, 1e-3, 0.0)
    with pytest.raises(CrobustError, match="optimizer"):
        optim.step("adam", PARAMS, PARAMS, s, True)
