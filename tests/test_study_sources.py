"""Study-specific computations of mlp_compressibility and source_invariance: the SGD lr × batch grid's members, the
hidden-layer mean, η/B, the pooled within-source correlation, and the pooled selection that counts the shared
baseline once."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import optim, training
from crobust.data import load_dataset, subsample
from crobust.study import claims as claims_lib
from crobust.study.claims_pooled import PooledCorrelation, centre_within, permute_within, within_correlation
from crobust.study.measures_compressibility import hidden_layer_mean, lr_over_batch
from crobust.study.table import MemberTable
from experiments import mlp_compressibility as mlpc
from experiments import source_invariance as si


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), n_train=300, n_test=50, seed=0)


def _cfg(**sources):
    cfg = si.PRESETS["smoke"]
    return dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, **sources))


# -- the learning-dynamics grid --------------------------------------------------------------------------------

def test_sgd_grid_is_exactly_lr_by_batch_by_seed_with_one_population_per_batch(digits):
    cfg = _cfg(sgd_lr=(0.005, 0.02, 0.2), sgd_batch=(25, 50, 100))
    pops = si.sgd_populations(cfg, digits)
    assert [p.train.batch_size for p in pops] == [25, 50, 100]                 # one population per batch size
    assert len({p.name for p in pops}) == 3
    got = sorted((p.coords["batch"], m["lr"], m["seed"]) for p in pops for m in p.members)
    want = sorted(itertools.product((25, 50, 100), (0.005, 0.02, 0.2), cfg.grid.seed_list))
    assert got == want                                                         # exactly the declared grid, no more
    for p in pops:
        assert p.coords == {"source": "sgd", "batch": p.train.batch_size}
        assert {tuple(sorted(m)) for m in p.members} == {("lr", "seed")}       # lr is a member axis, nothing else
        t = p.train
        assert (t.optimizer, t.momentum, t.weight_decay, t.regularizer, t.projection) == ("sgd", 0.0, 0.0, "none",
                                                                                         "none")


def test_sgd_members_take_one_step_with_their_own_traced_lr(digits):
    """One plain-SGD step from the same initialisation (same seed): p₁ − p₀ = −η·∇L, so the update of the member
    with lr η is exactly η/η' times that of the member with lr η' (same batch, same seed), and the optimiser state
    holds each member's lr."""
    cfg = _cfg(sgd_lr=(0.01, 0.04), sgd_batch=(32,))
    cfg = dataclasses.replace(cfg, sgd=dataclasses.replace(cfg.sgd, max_steps=1, eval_every=1, patience=None,
                                                           min_steps=0))
    pop, = si.sgd_populations(cfg, digits)
    members = [m for m in pop.members if m["seed"] == 0]
    state0 = training.init_population(pop.model, digits, pop.train, members)
    np.testing.assert_array_equal(np.asarray(optim.learning_rate(state0.opt_state)), np.float32([0.01, 0.04]))   # stored in float32
    fit = training.fit(pop.model, digits, pop.train, members, progress=False)
    d = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), fit.params, state0.params)
    for leaf in jax.tree.leaves(d):
        assert np.abs(leaf[0]).max() > 0
        # float32 params of size ~0.1 and updates ~1e-3: the difference carries ~1e-8 absolute rounding
        np.testing.assert_allclose(leaf[1], 4.0 * leaf[0], rtol=0, atol=2e-7)
    # and η/B as the measure reads it from the trainer's state
    tp = type("TP", (), {"fit": fit, "coords": pop.coords, "size": 2})()
    out = {c.key: v for c, v in lr_over_batch()(None, tp).items()}
    np.testing.assert_allclose(out["lr_over_batch"], [0.01 / 32, 0.04 / 32], rtol=1e-6)


def test_every_population_of_both_studies_has_the_declared_members(digits):
    cfg = si.PRESETS["small"]
    pops = si.populations(cfg, digits)
    names = [p.name for p in pops]
    assert names == ["l1", "group_lasso", "nuclear", "rank_2", "rank_8", "rank_dense", "sgd_b50", "sgd_b100"]
    assert [p.name for p in si.populations(si.PRESETS["smoke"], digits)] == ["l1", "sgd_b50"]     # include=(l1, sgd)
    by = {p.name: p for p in pops}
    assert by["l1"].train.regularizer == "l1" and by["rank_2"].train.regularizer == "none"
    assert by["rank_dense"].coords == {"source": "lowrank", "rank": cfg.model.width}
    cfg2 = mlpc.PRESETS["small"]
    pops2 = mlpc.populations(cfg2, digits)
    assert [p.name for p in pops2] == ["group_lasso", "nuclear", "rank_2", "rank_8", "rank_dense"]
    assert [p.name for p in mlpc.populations(mlpc.PRESETS["smoke"], digits)] == ["nuclear", "rank_2", "rank_dense"]
    smoke_figs = [f.name for f in mlpc.figures(mlpc.PRESETS["smoke"])]          # only the arms trained are drawn
    assert smoke_figs == ["spectral_nuclear", "ra_vs_eps_linf_nuclear", "ra_vs_eps_l2_nuclear", "spectral_low_rank",
                          "ra_vs_eps_linf_lowrank", "ra_vs_eps_l2_lowrank"]
    assert len(mlpc.figures(cfg2)) == 9
    assert [(p.coords.get("rank"), p.train.regularizer) for p in pops2[2:]] == [(2, "none"), (8, "none"),
                                                                                (cfg2.model.width, "none")]
    assert sorted(m["alpha"] for m in pops2[0].members) == sorted(list(cfg2.arms.alpha_group_lasso) * cfg2.grid.seeds)


# -- hidden-layer mean ------------------------------------------------------------------------------------------

def test_hidden_layer_mean_leaves_the_head_out():
    v = np.array([[1.0, 3.0, 100.0], [2.0, 4.0, -7.0]])
    np.testing.assert_allclose(hidden_layer_mean(v, ["hidden_0", "hidden_1", "head"]), [2.0, 3.0])
    np.testing.assert_allclose(hidden_layer_mean(v[:, [2, 0]], ["head", "hidden_0"]), [1.0, 2.0])
    with pytest.raises(ValueError):
        hidden_layer_mean(v[:, :1], ["head"])


def test_hidden_layer_mean_of_a_conv_net_leaves_stem_shortcuts_and_head_out():
    v = np.array([[100.0, 1.0, 3.0, -50.0, 5.0, 7.0]])
    layers = ["stem", "layer1_0/conv1", "layer2_0/conv1", "layer2_0/shortcut", "layer2_0/conv2", "head"]
    np.testing.assert_allclose(hidden_layer_mean(v, layers), [3.0])                # (1 + 3 + 5) / 3
    np.testing.assert_allclose(hidden_layer_mean(v[:, :2], ["embedding", "Transformer/encoderblock_0/x"]), [1.0])


# -- pooled within-source correlation ---------------------------------------------------------------------------

def _simpson():
    """Two sources: inside each, y = x exactly (within correlation +1); between them, the source with larger x has
    much smaller y, so the pooled correlation is negative."""
    x = np.r_[np.arange(5.0), 10 + np.arange(5.0)]
    y = np.r_[100 + np.arange(5.0), np.arange(5.0)]
    g = np.array(["a"] * 5 + ["b"] * 5, dtype=object)
    return x, y, g


def test_within_correlation_removes_the_sources_levels():
    x, y, g = _simpson()
    assert claims_lib.pearson(x, y) < -0.8
    assert within_correlation(x, y, g) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(centre_within(x, g), np.r_[np.arange(5.0) - 2, np.arange(5.0) - 2])
    # brute force: the definition with explicit group means
    rng = np.random.default_rng(1)
    x2, y2 = rng.normal(size=12), rng.normal(size=12)
    g2 = np.array(list("aaabbbbccccc"), dtype=object)
    xc = x2 - np.array([x2[g2 == k].mean() for k in g2])
    yc = y2 - np.array([y2[g2 == k].mean() for k in g2])
    assert within_correlation(x2, y2, g2) == pytest.approx(np.sum(xc * yc) / np.sqrt(np.sum(xc**2) * np.sum(yc**2)))


def test_permutation_within_groups_keeps_each_groups_values():
    x, y, g = _simpson()
    yp = permute_within(y, g, np.random.default_rng(0))
    for k in ("a", "b"):
        assert sorted(yp[g == k]) == sorted(y[g == k])


def _table(x, y, g):
    t = MemberTable()
    rows = t.add_members([{"population": str(s), "member": i, "seed": i, "source": str(s)} for i, s in enumerate(g)])
    t.set(rows, "x", x)
    t.set(rows, "y", y)
    return t


def test_pooled_claims_on_simpsons_paradox():
    x, y, g = _simpson()
    x, y, g = np.r_[x, x + 0.5], np.r_[y, y + 0.5], np.r_[g, g]               # 20 members, same structure
    t = _table(x, y, g)
    within = PooledCorrelation("C6", "within", x="x", y="y", within="source", n_perm=500)
    pooled = PooledCorrelation("C6", "pooled", x="x", y="y", n_perm=500)
    v_w, = claims_lib.judge([within], t, correction=None)
    v_p, = claims_lib.judge([pooled], t, correction=None)
    assert v_w.verdict == "supported" and v_w.stats["r"] == pytest.approx(1.0)
    assert v_p.verdict == "contradicted" and v_p.stats["r"] < -0.8
    only_a = PooledCorrelation("C6", "a only", x="x", y="y", select=((("source", "a"),),), n_perm=200)
    v_a, = claims_lib.judge([only_a], t, correction=None)
    assert v_a.stats["n"] == 10 and v_a.verdict == "supported"


@pytest.mark.parametrize("include", [si.SOURCES, ("nuclear", "lowrank", "sgd"), ("lowrank", "sgd")])
def test_pooled_selection_counts_the_shared_baseline_once(digits, include):
    cfg = si.PRESETS["small"]
    cfg = dataclasses.replace(cfg, sources=dataclasses.replace(cfg.sources, include=include))
    pops = si.populations(cfg, digits)
    t = MemberTable()
    for p in pops:
        t.add_members([{"population": p.name, "member": i, **dict(p.coords), **m} for i, m in enumerate(p.members)])
    claim = PooledCorrelation("C6", "", x="x", y="y", select=si.pooled_selection(cfg))
    mask = claim.mask(t)
    s = cfg.sources
    seeds = cfg.grid.seeds
    compressed = {"l1": sum(a > 0 for a in s.alpha_l1), "group_lasso": sum(a > 0 for a in s.alpha_group_lasso),
                  "nuclear": sum(a > 0 for a in s.alpha_nuclear), "lowrank": len(s.ranks),
                  "sgd": len(s.sgd_lr) * len(s.sgd_batch)}
    baseline = any(src in include for src in ("l1", "group_lasso", "nuclear", "lowrank"))
    want = seeds * (sum(compressed[src] for src in include) + baseline)
    assert mask.sum() == want
    base = np.array([c.get("alpha") == 0.0 or c.get("rank") == cfg.model.width for c in t.coords])
    assert (mask & base).sum() == seeds * baseline                           # the AdamW dense baseline, once per seed
