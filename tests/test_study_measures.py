"""Measures of the study framework: analytic cases and the invariants that catch a wrong implementation."""

import jax
import jax.numpy as jnp
import numpy as np

from crobust.data import load_dataset
from crobust.models import MLP
from crobust.study import blocks
from crobust.study import measures as M


def test_prunable_fraction_is_the_energy_share_of_singular_values():
    f = lambda s, e=0.9: float(M.prunable_fraction(jnp.asarray(s, jnp.float32), e))
    assert f([3.0, 0.0, 0.0, 0.0]) == 0.25
    assert f(np.sqrt([4.0, 3.0, 2.0, 1.0])) == 0.75         # cumulative σ² shares 0.4, 0.7, 0.9 (exactly), 1.0
    assert f(np.sqrt([4.0, 3.0, 2.0, 1.0]), 0.91) == 1.0
    assert abs(f(np.ones(10)) - 0.9) < 1e-6
    assert f(np.zeros(5)) == 0.0


def test_evaluation_keys_follow_a_members_seed_not_its_position():
    a = M.member_eval_keys([3, 5, 7], "attack/linf")
    b = M.member_eval_keys([5], "attack/linf")
    same = lambda k1, k2: bool(jnp.all(jax.random.key_data(k1) == jax.random.key_data(k2)))
    assert same(a[1], b[0])                                   # adding members before it changes nothing
    assert not same(a[1], M.member_eval_keys([5], "attack/l2")[0])     # another stream, other noise
    assert not same(a[0], a[1])


def test_representation_shift_averages_the_finite_correct_points_and_counts_the_rest():
    # one hidden unit reading pixel 0: a point with pixel 0 = 0 has z = 0; moving pixel 0 up makes the shift +inf.
    # The head gives both classes the same logit, so every point is predicted 0: label 1 makes point 3 misclassified
    ds = load_dataset("digits")
    model = MLP(num_classes=2, width=1, depth=2, mean=(0.0,), std=(1.0,))
    w1 = np.zeros((64, 1), np.float32)
    w1[0, 0] = 1.0
    params = {"params": {"hidden_0": {"kernel": jnp.asarray(w1)[None]},
                         "head": {"kernel": jnp.ones((1, 1, 2), jnp.float32)}}}
    x = jnp.zeros((4, 8, 8, 1)).at[2:, 0, 0, 0].set(0.5)      # points 0, 1: dead representation; 2, 3: z = 0.5
    x_adv = x.at[:, 0, 0, 0].add(0.25)                         # every point moves by 0.25 along pixel 0
    ctx = M.Context(blocks.EvalConfig(), blocks.MeasureConfig(), ds, x, jnp.asarray([0, 0, 0, 1], jnp.int32))
    pop = M.TrainedPopulation("p", model, [{"seed": 0}], {}, None, params)
    ctx.cache[("p", "x_adv", "l2")] = x_adv[None]
    out = {c.key: v for c, v in M.representation_shift(("l2",))(ctx, pop).items()}
    assert np.allclose(out["shift[norm=l2]"], [0.5])          # |0.75 − 0.5| / 0.5 on point 2, the finite correct one
    assert out["shift_left_out[norm=l2]"].tolist() == [2]     # points 0, 1: correct, infinite shift
    assert out["shift_misclassified[norm=l2]"].tolist() == [1]


def test_attack_list_caps_apgd_t_targets_below_the_class_count():
    e = blocks.EvalConfig(n_targets=9, n_iter=7)
    specs = dict(s if isinstance(s, tuple) else (s, {}) for s in M.attack_list(e, num_classes=3))
    assert specs["apgd-t"]["n_target_classes"] == 2 and specs["apgd-ce"]["n_iter"] == 7
