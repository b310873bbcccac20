"""The universal-perturbation study's own computations: the Frobenius sweep's scale control, the universal
adversary of UAT (one shared δ in the ε-ball, analytic maximiser on a linear model) and the universal-accuracy
scores (brute force)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import regularizers, training
from crobust.data import load_dataset, subsample
from crobust.models import MLP
from crobust.study import blocks
from crobust.study import measures as M
from crobust.study import measures_universal as MU
from crobust.training.universal import UniversalAdversary, shared_perturbation
from experiments import universal_vs_scale as U

# float32: ‖W‖_F is a sum of ≤ 64·16 squares and the projection multiplies by ref/‖W‖; the relative rounding of
# the resulting norm is a few ulp (≈ 1e-6) — 1e-5 leaves margin and still catches any scale that is off.
FRO_RTOL = 1e-5


def _fro(params):
    return {k: np.asarray(v) for k, v in jax.vmap(regularizers.hidden_frobenius_norms)(params).items()}


def test_scale_sweep_holds_each_member_at_its_scale_times_its_initial_norm():
    data = subsample(load_dataset("digits"), n_train=300, n_test=50, seed=0)
    model = MLP(num_classes=10, width=16, depth=2, mean=data.mean, std=data.std)
    cfg = training.TrainConfig(batch_size=32, max_steps=30, eval_every=10, patience=None, regularizer="nuclear",
                               projection="frobenius", lr=1e-2)
    members = [{"alpha": 0.0, "seed": 0}, {"alpha": 0.0, "seed": 0}, {"alpha": 0.1, "seed": 1}]
    scales = np.array([0.5, 3.0, 2.0])
    init = training.init_population(model, data, cfg, members)
    ref0 = _fro(init.params)["hidden_0"]
    state = U.rescale_hidden(scales)(init)
    # the hook itself: kernels, best parameters and the projection's targets all scaled per member; head untouched
    np.testing.assert_allclose(_fro(state.params)["hidden_0"], scales * ref0, rtol=FRO_RTOL)
    np.testing.assert_allclose(_fro(state.best_params)["hidden_0"], scales * ref0, rtol=FRO_RTOL)
    np.testing.assert_allclose(np.asarray(state.ref_norms["hidden_0"]), scales * ref0, rtol=FRO_RTOL)
    np.testing.assert_array_equal(np.asarray(state.params["params"]["head"]["kernel"]),
                                  np.asarray(init.params["params"]["head"]["kernel"]))
    fit = training.fit(model, data, cfg, members, state=state, progress=False)
    w_final = np.asarray(fit.params["params"]["hidden_0"]["kernel"])
    w_start = np.asarray(state.params["params"]["hidden_0"]["kernel"])
    assert np.all(np.abs(w_final - w_start).reshape(3, -1).max(1) > 1e-3)          # training moved every member
    np.testing.assert_allclose(_fro(fit.params)["hidden_0"], scales * ref0, rtol=FRO_RTOL)
    np.testing.assert_allclose(_fro(fit.best_params)["hidden_0"], scales * ref0, rtol=FRO_RTOL)


def test_study_population_pairs_each_member_with_its_scale():
    cfg = U.PRESETS["smoke"]
    fixed, scale, uat = U.populations(cfg, cfg.data.load())
    n_seeds = cfg.grid.seeds
    assert [m["alpha"] for m in fixed.members] == [a for a in cfg.grid.alpha for _ in range(n_seeds)]
    assert fixed.train.regularizer == "nuclear" and scale.train.regularizer == "none"
    assert [(m["alpha"], m["seed"], c["fro_scale"]) for m, c in zip(scale.members, scale.member_coords)] == \
        [(0.0, k, s) for s in cfg.scale.scales for k in cfg.grid.seed_list]
    assert uat.adversary == cfg.uat.adversary() and uat.train.adversarial.ratio == 1.0
    assert [m["alpha"] for m in uat.members] == [a for a in cfg.uat.alpha for _ in range(n_seeds)]


def _random_mlp():
    model = MLP(num_classes=10, width=32, depth=2)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    return model, params


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_universal_adversary_moves_every_point_by_one_delta_inside_the_ball(norm, eps):
    model, params = _random_mlp()
    x = jax.random.uniform(jax.random.key(1), (16, 4, 4, 1), minval=0.3, maxval=0.7)    # no clipping at ε ≤ 0.3
    y = jnp.arange(16) % 10
    adv = UniversalAdversary(norm=norm, eps=eps, n_iter=4)
    x_adv = adv(model.apply, params, x, y, jax.random.key(2))
    d = np.asarray(x_adv - x).reshape(16, -1)
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-6)       # (x+δ)−x: float32 rounding
    size = np.abs(d[0]).max() if norm == "linf" else np.linalg.norm(d[0])
    assert size <= eps * (1 + 1e-6) and size > 0.5 * eps
    loss = lambda z: float(training.cross_entropy(model.apply(params, z), y))
    assert loss(x_adv) > loss(x)                                                     # ascent, not descent


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_shared_perturbation_finds_the_analytic_maximiser_of_a_linear_model(norm):
    # logits (0, wᵀx), every label 0: the mean loss mean softplus(wᵀ(x+δ)) rises with wᵀδ, so the maximiser over the
    # ball is ε·sign(w) (ℓ∞) or ε·w/‖w‖ (ℓ2); two steps of 2.5ε/3 from 0 along that direction reach it
    w = jax.random.normal(jax.random.key(3), (16,))
    logits_fn = lambda z: jnp.stack([jnp.zeros(z.shape[0]), z.reshape(z.shape[0], -1) @ w], axis=1)
    x = jax.random.uniform(jax.random.key(4), (8, 4, 4, 1), minval=0.3, maxval=0.7)
    delta = shared_perturbation(logits_fn, x, jnp.zeros(8, jnp.int32), eps=0.2, norm=norm, n_iter=3)
    want = 0.2 * (jnp.sign(w) if norm == "linf" else w / jnp.linalg.norm(w))
    np.testing.assert_allclose(np.asarray(delta).reshape(-1), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_universal_training_config_perturbs_every_point_with_true_labels():
    adv = UniversalAdversary(norm="l2", eps=1.0, n_iter=5)
    at = adv.train_config(training.TrainConfig()).adversarial
    assert (at.ratio, at.labels, at.clip, at.norm, at.eps, at.n_iter) == (1.0, "true", True, "l2", 1.0, 5)
    assert at.step_size == pytest.approx(0.5)
    assert hash(adv) == hash(UniversalAdversary(norm="l2", eps=1.0, n_iter=5))     # one compiled block per setting


def test_universal_scores_count_only_points_correct_clean():
    rng = np.random.default_rng(0)
    clean, pert = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    y = rng.integers(0, 5, 200)
    c, u = clean.argmax(1) == y, pert.argmax(1) == y
    acc, ratio = MU.universal_scores(jnp.asarray(clean), jnp.asarray(pert), jnp.asarray(y))
    assert float(acc) == pytest.approx((c & u).mean())
    assert float(ratio) == pytest.approx((c & u).sum() / c.sum())
    assert (c & ~u).any() and (~c & u).any()              # both kinds of disagreement occur, so the count matters
    none_clean = MU.universal_scores(jnp.zeros((3, 5)).at[:, 0].set(1.0), jnp.zeros((3, 5)), jnp.ones(3, jnp.int32))
    assert float(none_clean[0]) == 0.0 and np.isnan(float(none_clean[1]))     # no clean-correct point: ratio undefined


def test_universal_measure_at_zero_radius_is_clean_accuracy():
    data = subsample(load_dataset("digits"), n_train=200, n_test=60, seed=0)
    model = MLP(num_classes=10, width=16, depth=2, mean=data.mean, std=data.std)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 8, 8, 1))))(jax.random.split(jax.random.key(0), 2))
    ucfg = MU.UniversalConfig(eps_linf=(0.0, 0.3), eps_l2=(0.0, 2.0), headline_linf=0.3, headline_l2=2.0,
                              n_source=100, n_passes=2, batch_size=50)
    ctx = M.Context.build(blocks.EvalConfig(n_points=60), blocks.MeasureConfig(), data)
    pop = M.TrainedPopulation("p", model, [{"seed": 0}, {"seed": 1}], {}, None, params)
    out = {c.key: np.asarray(v) for c, v in MU.universal_accuracy(ucfg)(ctx, pop).items()}
    clean = np.asarray(jax.vmap(lambda p: jnp.mean(jnp.argmax(model.apply(p, ctx.x), -1) == ctx.y))(params))
    for norm, eps in (("linf", "0.3"), ("l2", "2")):
        np.testing.assert_allclose(out[f"uap_acc[norm={norm},eps=0]"], clean, atol=1e-7)
        np.testing.assert_allclose(out[f"uap_over_sa[norm={norm},eps=0]"], 1.0)
        assert np.all(out[f"uap_acc[norm={norm},eps={eps}]"] <= clean + 1e-7)
        assert np.all((0 <= out[f"uap_top_energy[norm={norm}]"]) & (out[f"uap_top_energy[norm={norm}]"] <= 1 + 1e-6))


def test_no_drop_rule_is_one_sided():
    from crobust.study.table import MemberTable

    def table(means):
        t = MemberTable()
        rows = t.add_members([{"s": float(i), "seed": k} for i in range(len(means)) for k in range(4)])
        t.set(rows, "y", [m + d for m in means for d in (-0.01, 0.0, 0.0, 0.01)])
        return t
    rule = U.NoDrop("C9", "y does not fall", x="s", y="y", tolerance=0.05)
    verdict = lambda means: rule.test(table(means), 0.05)[0].verdict
    assert verdict([0.5, 0.6, 0.9]) == "supported"              # a rise is no drop (Flat would say contradicted)
    assert verdict([0.5, 0.48, 0.5]) == "supported"
    assert verdict([0.5, 0.5, 0.3]) == "contradicted"           # a 20-point drop
    assert verdict([0.5, 0.45, 0.5]) == "inconclusive"          # a drop of exactly the tolerance, ± its s.e.
