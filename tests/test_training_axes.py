"""Trainer settings beyond the MLP baseline: learning-rate schedules (optax's, applied per epoch to each member's
lr), any numeric setting as a member axis (momentum, adversarial ε / ratio, TRADES β: traced per member, so a
member with a neutral value equals a run without the feature), TRADES' pieces, and bad member settings.

Tiny MLPs on digits (1294 training points at val_ratio 0.1: 20 steps per epoch at batch 64).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.tree_utils import tree_get

from _trees import assert_trees_close, member
from crobust import optim, training
from crobust._errors import CrobustError
from crobust.data import load_dataset
from crobust.models import MLP
from crobust.training import AdversarialTraining, TrainConfig, fit, grid, init_population, lr_factor
from crobust.training import adversarial

DATA = load_dataset("digits")
TINY = MLP(10, width=8, depth=2, mean=DATA.mean, std=DATA.std)
SGD = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=64, max_steps=25,
                  eval_every=5, patience=None, val_ratio=0.1)




# ----------------------------------------------------------------------------------------------------------
# Schedules

def test_multistep_and_cosine_factors_follow_torch_per_epoch():
    spe = 5
    multi = lr_factor(dataclasses.replace(SGD, lr_schedule="multistep", lr_milestones=(2, 4), lr_gamma=0.1), spe)
    for step in range(40):
        e = step // spe
        want = 0.1 ** sum(m <= e for m in (2, 4))                       # torch MultiStepLR after e epochs
        np.testing.assert_allclose(float(multi(jnp.int32(step))), want, rtol=1e-6)
    rho, t_max = 0.1, 4
    cos = lr_factor(dataclasses.replace(SGD, lr_schedule="cosine", cosine_epochs=t_max, cosine_min_ratio=rho), spe)
    for step in range(40):
        e = min(step // spe, t_max)
        want = rho + (1 - rho) * (1 + math.cos(math.pi * e / t_max)) / 2     # CosineAnnealingLR, η_min = ρ·η
        np.testing.assert_allclose(float(cos(jnp.int32(step))), want, rtol=1e-6, atol=1e-7)
    assert lr_factor(SGD, spe) is None


def test_lr_scale_scales_adamw_update_and_decoupled_decay_alike():
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.3, 6)}
    scaled = optim.step("adamw", params, grads, optim.init("adamw", params, 0.1, 0.05), True, lr_scale=0.3)
    direct = optim.step("adamw", params, grads, optim.init("adamw", params, 0.1 * 0.3, 0.05), True)
    np.testing.assert_allclose(scaled[0]["w"], direct[0]["w"], rtol=1e-6)


def test_a_milestone_in_the_trainer_equals_continuing_with_the_lower_lr():
    """multistep (milestone at epoch 1 = step 20, γ 0.5) for 25 steps == constant lr for 20 steps, then the
    same state continued with lr·γ (0.1·0.5 is exact in float32, so the two programs compute the same numbers)."""
    members = [{"seed": 0}, {"seed": 1, "lr": 0.2}]
    scheduled = fit(TINY, DATA, dataclasses.replace(SGD, lr_schedule="multistep", lr_milestones=(1,),
                                                    lr_gamma=0.5), members, progress=False)
    snaps = {}
    fit(TINY, DATA, SGD, members, progress=False, on_block=lambda s, m: snaps.setdefault(int(s.step[0]), s))
    at20 = snaps[20]
    halved = [dict(m, lr=m.get("lr", SGD.lr) * 0.5) for m in members]
    hp = training.member_hparams(halved, SGD)
    at20 = at20.replace(opt_state=optim.with_hparams(at20.opt_state, hp["lr"], hp["weight_decay"]))
    continued = fit(TINY, DATA, SGD, halved, state=at20, progress=False)
    np.testing.assert_array_equal(continued.state.step, [25, 25])
    assert_trees_close(scheduled.params, continued.params, rtol=1e-6)
    assert_trees_close(tree_get(scheduled.state.opt_state, "trace"), tree_get(continued.state.opt_state, "trace"), rtol=1e-6)
    # and the schedule really changed something: the constant run's step 25 differs
    assert not np.allclose(np.asarray(jax.tree.leaves(snaps[25].params)[0]),
                           np.asarray(jax.tree.leaves(scheduled.params)[0]))


# ----------------------------------------------------------------------------------------------------------
# Member axes

AT = AdversarialTraining(norm="linf", eps=0.1, step_size=0.05, n_iter=2, ratio=0.5, labels="true", clip=True)


@pytest.fixture(scope="module")
def plain():
    """The reference without adversarial training: momentum 0 and 0.9, seed 0."""
    return fit(TINY, DATA, SGD, grid(momentum=[0.0, 0.9], seeds=[0]), progress=False)


def test_momentum_eps_and_ratio_are_traced_per_member(plain):
    """One PGD-AT population whose neutral members (ε = 0: PGD in a ball of radius 0 returns the clean points;
    ratio 0: no point replaced) equal the plain runs, member by member (float32 round-off of two programs)."""
    members = [{"seed": 0, "momentum": 0.0, "at_eps": 0.0}, {"seed": 0, "momentum": 0.9, "at_ratio": 0.0},
               {"seed": 0, "momentum": 0.9}]
    res = fit(TINY, DATA, dataclasses.replace(SGD, adversarial=AT), members, progress=False)
    assert_trees_close(member(res.params, 0), member(plain.params, 0), rtol=1e-5)
    assert_trees_close(member(res.params, 1), member(plain.params, 1), rtol=1e-5)
    w_at, w_plain = (np.asarray(jax.tree.leaves(member(t, i))[0]) for t, i in ((res.params, 2), (plain.params, 1)))
    assert np.max(np.abs(w_at - w_plain)) > 1e-3                    # ε = 0.1 on half the batch: another run


def test_trades_beta_is_a_member_axis_and_beta_zero_is_the_plain_step(plain):
    cfg = dataclasses.replace(SGD, adversarial=dataclasses.replace(AT, method="trades"))
    res = fit(TINY, DATA, cfg, grid(trades_beta=[0.0, 6.0], seeds=[0]), progress=False)
    assert_trees_close(member(res.params, 0), member(plain.params, 1), rtol=1e-5)
    w_tr, w_plain = (np.asarray(jax.tree.leaves(member(t, i))[0]) for t, i in ((res.params, 1), (plain.params, 1)))
    assert np.max(np.abs(w_tr - w_plain)) > 1e-3


def test_trades_inner_maximisation_raises_the_kl_inside_the_ball():
    w = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ w
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        at = dataclasses.replace(AT, norm=norm, n_iter=10, clip=True)
        x_adv = jax.jit(adversarial.trades_examples, static_argnums=(0, 3))(logits_fn, x, jax.random.key(2), at, eps,
                                                                            eps / 4)
        delta = np.asarray(x_adv - x).reshape(16, -1)
        size = np.max(np.abs(delta), 1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert np.all(size <= eps * (1 + 1e-5)) and float(jnp.min(x_adv)) >= 0 and float(jnp.max(x_adv)) <= 1
        kl_adv = float(adversarial.kl_divergence(logits_fn(x), logits_fn(x_adv)))
        kl_rand = float(adversarial.kl_divergence(logits_fn(x), logits_fn(
            jnp.clip(x + eps * jnp.sign(jax.random.normal(jax.random.key(3), x.shape)) / (8 if norm == "l2" else 1),
                     0, 1))))
        assert kl_adv > 3 * kl_rand > 0


def test_kl_divergence_is_torch_batchmean():
    p = np.random.default_rng(0).normal(size=(5, 4))
    q = np.random.default_rng(1).normal(size=(5, 4))
    lp = p - np.log(np.exp(p).sum(1, keepdims=True))
    lq = q - np.log(np.exp(q).sum(1, keepdims=True))
    want = np.sum(np.exp(lp) * (lp - lq)) / 5
    np.testing.assert_allclose(float(adversarial.kl_divergence(jnp.asarray(p), jnp.asarray(q))), want, rtol=1e-5)


def test_grid_accepts_every_member_axis_and_keeps_the_old_form():
    assert grid(alpha=[0.0, 0.5], seeds=range(2)) == [{"alpha": a, "seed": s} for a in (0.0, 0.5) for s in (0, 1)]
    members = grid(lr=[0.1, 0.05], at_eps=[0.0, 8 / 255], seeds=[3])
    assert members[1] == {"lr": 0.1, "at_eps": 8 / 255, "seed": 3} and len(members) == 4
    hp = training.member_hparams(members, dataclasses.replace(SGD, adversarial=AT))
    assert set(hp) == set(training.HPARAMS)
    np.testing.assert_allclose(hp["at_eps"], [0, 8 / 255, 0, 8 / 255], rtol=1e-7)
    np.testing.assert_allclose(hp["at_step_size"], [AT.step_size] * 4, rtol=1e-7)   # config's default


@pytest.mark.parametrize("cfg_kwargs, members, match", [
    ({}, [{"eps": 0.1, "seed": 0}], "unknown member key 'eps'.*valid: alpha, lr, weight_decay, momentum, at_eps"),
    ({}, [{"at_eps": 0.1, "seed": 0}], "at_eps.*needs adversarial training"),
    ({"optimizer": "adamw"}, [{"momentum": 0.5, "seed": 0}], "momentum is an sgd setting"),
    ({"adversarial": AT}, [{"at_ratio": 0.75, "seed": 0}], r"at_ratio must be >= 0 and <= 0.5"),
    ({"adversarial": AT}, [{"at_step_size": 0.0, "seed": 0}], "at_step_size must be > 0"),
    ({}, [{"momentum": 1.5, "seed": 0}], "momentum must be >= 0 and <= 1"),
    ({"lr_schedule": "step"}, [{"seed": 0}], "lr_schedule.*multistep"),
    ({"augment": "flip"}, [{"seed": 0}], "augment.*crop_flip"),
    ({"lr_milestones": (150, 100)}, [{"seed": 0}], "lr_milestones"),
    ({"adversarial": dataclasses.replace(AT, method="mart")}, [{"seed": 0}], "adversarial method.*trades"),
    ({"adversarial": dataclasses.replace(AT, norm="l1")}, [{"seed": 0}], "adversarial norm.*linf, l2"),
])
def test_bad_member_settings_raise_one_clear_error(cfg_kwargs, members, match):
    cfg = dataclasses.replace(SGD, **cfg_kwargs)
    with pytest.raises(CrobustError, match=match):
        init_population(TINY, DATA, cfg, members)
    with pytest.raises(CrobustError, match="seeds are given as grid"):
        grid(seed=[0, 1])


# ----------------------------------------------------------------------------------------------------------
# Several penalty terms, each strength its own member axis

ROW_BETA = dataclasses.replace(SGD, regularizer="group_lasso", penalties=("beta_control",), max_steps=10)


def test_two_penalties_with_strengths_a_0_and_0_b_equal_each_single_penalty():
    """(α, β) = (a, 0) trains as the row penalty alone at a, (0, b) as β-control alone at b: the strength axes
    reach their own terms. The programs differ (another penalty, other member counts), so the match is to float32
    round-off of 10 SGD steps, not bitwise (the penalty itself is bitwise equal: test_regularizers)."""
    a, b = 1e-3, 0.05
    both = fit(TINY, DATA, ROW_BETA, [{"alpha": a, "beta_control": 0.0, "seed": 0},
                                      {"alpha": 0.0, "beta_control": b, "seed": 0}], progress=False)
    row = fit(TINY, DATA, dataclasses.replace(ROW_BETA, penalties=()), [{"alpha": a, "seed": 0}], progress=False)
    beta = fit(TINY, DATA, dataclasses.replace(ROW_BETA, regularizer="beta_control", penalties=()),
               [{"alpha": b, "seed": 0}], progress=False)
    assert_trees_close(member(both.params, 0), member(row.params, 0), rtol=1e-5)
    assert_trees_close(member(both.params, 1), member(beta.params, 0), rtol=1e-5)
    # and the two members really differ: each strength acts
    assert not np.allclose(member(both.params, 0)["params"]["hidden_0"]["kernel"],
                           member(both.params, 1)["params"]["hidden_0"]["kernel"], atol=1e-4)


def test_penalty_axes_in_the_grid_and_their_errors():
    members = grid(alpha=[0.0, 0.1], beta_control=[0.0, 0.01], seeds=[0])
    assert members[1] == {"alpha": 0.0, "beta_control": 0.01, "seed": 0} and len(members) == 4
    assert ROW_BETA.penalty_terms() == (("group_lasso", "alpha"), ("beta_control", "beta_control"))
    assert SGD.penalty_terms() == (("none", "alpha"),)
    with pytest.raises(CrobustError, match="'beta_control'.*penalty term.*does not list"):
        init_population(TINY, DATA, SGD, [{"beta_control": 0.1, "seed": 0}])
    with pytest.raises(CrobustError, match="beta_control must be >= 0"):
        init_population(TINY, DATA, ROW_BETA, [{"beta_control": -0.1, "seed": 0}])
    for bad, match in ((("betacontrol",), "penalties entry.*beta_control"), (("none",), "penalties entry"),
                       (("nuclear", "nuclear"), "each penalty once"), (("group_lasso",), "not the regularizer")):
        with pytest.raises(CrobustError, match=match):
            dataclasses.replace(ROW_BETA, penalties=bad).validate()
