"""Claim rules on synthetic member tables whose answer is known, the multiple-claims correction, the table."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from crobust.study import claims as C
from crobust.study.table import Column, MemberTable, col

ALPHAS = [0.0, 0.01, 0.1, 1.0]


def table_of(**columns) -> MemberTable:
    """8 seeds × ALPHAS members with the given columns (functions of α and a seeded noise). Eight seeds: a paired
    comparison of two settings has 2⁸ sign flips, so its smallest two-sided p is ≈ 2/256 < 0.05."""
    t = MemberTable()
    rows = t.add_members([{"population": "p", "alpha": a, "seed": s} for a in ALPHAS for s in range(8)])
    rng = np.random.default_rng(0)
    x = t.coord("alpha")
    for name, fn in columns.items():
        t.set(rows, name, fn(x, rng))
    return t


FALLING = lambda x, rng: -np.log1p(100 * x) + 0.05 * rng.normal(size=x.size)
RISING = lambda x, rng: np.log1p(100 * x) + 0.05 * rng.normal(size=x.size)
NOISE = lambda x, rng: rng.normal(size=x.size)


def test_trend_rule_on_falling_flat_and_rising_series():
    t = table_of(falling=FALLING, rising=RISING, noise=NOISE)
    down = lambda y: C.Trend("C0", y, x="alpha", y=y, direction="decreasing")
    v = C.judge([down("falling"), down("rising"), down("noise")], t, correction=None)
    assert [x.verdict for x in v] == ["supported", "contradicted", "inconclusive"]
    assert v[0].stats["rho"] < -0.8 and v[0].p_value < 0.01 and v[0].stats["change"] < 0
    seeds = t["seed"]
    within = np.mean([scipy.stats.spearmanr(t["alpha"][seeds == s], t["falling"][seeds == s]).statistic
                      for s in range(8)])
    assert math.isclose(v[0].stats["rho"], within, rel_tol=1e-9)                 # the mean within-seed ρ
    assert "Spearman |ρ| ≥ 0.5" in v[0].line() and "Rule:" in v[0].line()        # the rule is printed


def test_holds_is_broken_by_one_member_and_names_it():
    t = table_of(bound=lambda x, rng: 1.0 + x, gap=lambda x, rng: 0.5 + 0 * x)
    ok = C.Holds("C5", "bound ≥ gap", lhs="bound", rhs="gap")
    assert C.judge([ok], t)[0].verdict == "supported"
    t.columns["gap"][7] = 5.0                                     # one member breaks it
    v = C.judge([ok], t)[0]
    assert v.verdict == "contradicted" and v.stats["violations"] == 1 and "1 of 32" in v.detail
    assert C.judge([C.Holds("c", "small", lhs="gap", rhs=6.0, relation="<=")], t)[0].verdict == "supported"


def test_holm_adjusts_as_the_step_down_formula():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(C.holm(p), [0.03, 0.06, 0.06, 0.02])
    assert C.holm([0.5]) == [0.5] and max(C.holm([0.9, 0.8])) <= 1.0


def test_the_correction_turns_a_lone_borderline_claim_into_inconclusive_within_a_family():
    # a weak trend (p just under 0.05 alone: 6 seeds, 2⁶ within-seed arrangements) among null claims of its family;
    # Holm multiplies its p by the family size, while a claim of another family leaves it alone
    t = MemberTable()
    rows = t.add_members([{"alpha": a, "seed": s} for a in (0.0, 1.0) for s in range(6)])
    t.set(rows, "weak", [0.0, 0.2, 0.1, 0.3, 0.25, 0.15, 0.3, 0.45, 0.35, 0.5, 0.4, 0.3])
    for i in range(5):
        t.set(rows, f"null{i}", np.random.default_rng(i).normal(size=12))
    weak = C.Trend("C0", "weak", x="alpha", y="weak", direction="increasing", family="primary")
    nulls = [C.Trend("C0", f"n{i}", x="alpha", y=f"null{i}") for i in range(5)]
    alone = C.judge([weak], t)[0]
    family = C.judge([weak] + [dataclasses.replace(n, family="primary") for n in nulls], t)[0]
    apart = C.judge([weak] + nulls, t)[0]                                  # the nulls are secondary
    assert alone.verdict == "supported" and alone.p_value < 0.05
    assert family.verdict == "inconclusive" and family.p_adjusted > 0.05 and family.p_value == alone.p_value
    assert apart.verdict == "supported" and apart.p_adjusted == alone.p_value and apart.family == "primary"


def test_compare_correlation_and_flat():
    t = table_of(y=FALLING, clean=lambda x, rng: 0.95 - 0.01 * x + 0.001 * rng.normal(size=x.size),
                 dropping=lambda x, rng: 0.95 - 0.2 * x + 0.001 * rng.normal(size=x.size))
    v = C.judge([C.Compare("C1", "lower at α=1", y="y", a=(("alpha", 1.0),), b=(("alpha", 0.0),), direction="less"),
                 C.Compare("C1", "higher at α=1", y="y", a=(("alpha", 1.0),), b=(("alpha", 0.0),),
                           direction="greater"),
                 C.Correlation("C5", "r", x="alpha", y="dropping", sign=-1, target=-0.9),
                 C.Flat("SA", "flat", x="alpha", y="clean", tolerance=0.05),
                 C.Flat("SA", "not flat", x="alpha", y="dropping", tolerance=0.05)], t)
    assert [x.verdict for x in v] == ["supported", "contradicted", "supported", "supported", "contradicted"]
    assert math.isclose(v[2].stats["r"], scipy.stats.pearsonr(t["alpha"], t["dropping"]).statistic, rel_tol=1e-9)
    assert "paper -0.900" in v[2].detail


def test_missing_columns_and_too_few_members_are_skipped_not_judged():
    t = table_of(y=FALLING)
    v = C.judge([C.Trend("C0", "absent", y="nope"), C.Holds("C5", "absent", lhs="y", rhs="gone")], t)
    assert [x.verdict for x in v] == ["skipped", "skipped"] and "not measured: nope" in v[0].detail
    t.columns["y"][:] = np.nan
    assert C.judge([C.Trend("C0", "nan", y="y")], t)[0].verdict == "skipped"


def test_table_records_use_one_vocabulary_and_nan_pad_new_members():
    t = MemberTable()
    a = t.add_members([{"population": "p", "member": 0, "seed": 3, "alpha": 0.1}])
    t.set(a, Column("robust_acc", (("norm", "linf"), ("eps", "8/255"))), [0.25])
    b = t.add_members([{"population": "q", "member": 0, "seed": 3, "rank": 4}])
    t.set(b, "clean_acc", [0.9])
    assert col("robust_acc", norm="linf", eps="8/255") == "robust_acc[norm=linf,eps=8/255]"
    assert np.isnan(t["robust_acc[norm=linf,eps=8/255]"][1]) and np.isnan(t["clean_acc"][0])
    recs = t.records(study="s")
    assert {"study": "s", "population": "p", "member": 0, "seed": 3, "alpha": 0.1, "measurement": "robust_acc",
            "norm": "linf", "eps": "8/255", "value": 0.25} in recs
    assert np.isnan(t.coord("rank")[0]) and t.coord("rank")[1] == 4
    stats = t.group_stats("population", "clean_acc")
    assert [(g["population"], g["n"]) for g in stats] == [("p", 0), ("q", 1)] and stats[1]["mean"] == 0.9


def test_matched_adjusts_for_clean_accuracy_within_seeds():
    # clean accuracy falls with α (and varies within seeds); RA follows clean accuracy only ("through"), or also
    # falls 0.1 at equal clean accuracy ("direct"): the adjusted rule finds nothing in the first, −0.1 in the second
    t = table_of()
    rng = np.random.default_rng(1)
    g = np.searchsorted(ALPHAS, t["alpha"]) / 3
    clean = 0.9 - 0.05 * g + 0.005 * rng.normal(size=len(t))
    noise = 0.001 * rng.normal(size=len(t))
    rows = slice(0, len(t))
    t.set(rows, "clean_acc", clean)
    t.set(rows, "through", clean - 0.5 + noise + 0.05 * t["seed"])         # seed levels: removed by the pairing
    t.set(rows, "direct", clean - 0.5 - 0.1 * g + noise + 0.05 * t["seed"])
    rule = lambda y: C.Matched("C1", y, x="alpha", y=y, match="clean_acc", min_change=0.05)
    trivial, real = C.judge([rule("through"), rule("direct")], t, correction=None)
    assert trivial.verdict == "inconclusive" and abs(trivial.stats["difference"]) < 0.01
    assert abs(trivial.stats["gamma"] - 1) < 0.1                           # RA moves one for one with clean accuracy
    assert real.verdict == "supported" and abs(real.stats["difference"] + 0.1) < 0.01
    naive = C.judge([C.Trend("C1", "n", x="alpha", y="through")], t)[0]   # a naive trend sees a fall in both
    assert naive.verdict == "supported"
    t.set(rows, "collinear", 0.9 - 0.05 * g)                               # clean accuracy a function of α
    v = C.judge([C.Matched("C1", "c", x="alpha", y="direct", match="collinear")], t)[0]
    assert v.verdict == "skipped" and "not identifiable" in v.detail


def _planted(n_seeds, settings, effect, offsets=True):
    """n_seeds × settings members; y rises by ``effect`` from the first to the last setting (linearly in its
    index), plus a level per seed far larger than the effect when ``offsets``."""
    t = MemberTable()
    rows = t.add_members([{"alpha": a, "seed": s} for a in settings for s in range(n_seeds)])
    g = np.searchsorted(settings, t["alpha"]) / (len(settings) - 1)
    t.set(rows, "y", 0.5 + effect * g + (0.3 * t["seed"] if offsets else 0))
    return t


def test_pairing_by_seed_removes_seed_levels_larger_than_the_effect():
    # the seed levels (0.3 apart) dwarf the effect (0.02): pooled over members ρ is weak, within seeds it is 1
    t = _planted(6, [0.0, 0.1, 1.0], 0.02)
    v = C.judge([C.Trend("C0", "rises", x="alpha", y="y", direction="increasing")], t)[0]
    assert v.verdict == "supported" and v.stats["rho"] == pytest.approx(1.0) and v.stats["se"] == 0
    assert abs(C.spearman(t["alpha"], t["y"])) < 0.5
    cmp = C.judge([C.Compare("C0", "higher", y="y", a=(("alpha", 1.0),), b=(("alpha", 0.0),), direction="greater")],
                  t)[0]
    assert cmp.verdict == "supported" and 0.02 < cmp.p_value < 0.045      # 2⁶ sign flips: p ≈ 2/64 at best
    assert "6 seeds paired" in cmp.detail


def test_pairing_by_alpha_and_seed_pairs_each_member_with_its_twin_in_the_other_arm():
    # two arms over 3 α × 2 seeds: arm b = arm a + 0.05 member by member, under α levels 0.5 apart. By seed alone
    # there are 2 pairs (2² sign flips: never p < 0.05); by α and seed, 6 pairs (p = 2/64 at best).
    t = MemberTable()
    coords = [{"population": pop, "alpha": a, "seed": s} for pop in ("a", "b") for a in (0.0, 0.1, 1.0)
              for s in range(2)]
    rows = t.add_members(coords)
    t.set(rows, "y", np.array([0.5 * c["alpha"] + 0.01 * c["seed"] + 0.05 * (c["population"] == "b")
                               for c in coords]))
    by_seed = C.Compare("C0", "b higher", y="y", a=(("population", "b"),), b=(("population", "a"),),
                        direction="greater")
    by_pair = dataclasses.replace(by_seed, pair_by=("alpha", "seed"))
    (v_seed,), (v_pair,) = C.judge([by_seed], t), C.judge([by_pair], t)      # judged apart: no Holm between them
    assert v_seed.verdict == "inconclusive" and v_seed.p_value > 0.2 and "2 seeds paired" in v_seed.detail
    assert v_pair.verdict == "supported" and 0.02 < v_pair.p_value < 0.045
    assert v_pair.stats["difference"] == pytest.approx(0.05) and v_pair.stats["se"] == pytest.approx(0, abs=1e-12)
    assert "6 pairs by alpha and seed" in v_pair.detail and "paired by alpha and seed" in v_pair.rule


def test_an_effect_below_the_stated_size_is_inconclusive_and_says_so():
    t = _planted(8, [0.0, 0.5, 1.0], -0.02)
    ok = C.Trend("C3", "falls by 0.01", x="alpha", y="y", min_change=0.01)
    small = dataclasses.replace(ok, min_change=0.05)
    collapse = dataclasses.replace(ok, min_change=0.0, min_fraction=0.5)    # half of the value at α = 0 (0.5 + …)
    v_ok, v_small, v_collapse = C.judge([ok, small, collapse], t)
    assert v_ok.verdict == "supported"
    assert v_small.label == "inconclusive (effect below 0.05)" and "stated effect" in v_small.rule
    assert v_collapse.verdict == "inconclusive" and v_collapse.reason.startswith("effect below")
    assert "— **inconclusive** (effect below 0.05) (" in v_small.line()


def test_a_claim_with_too_few_trained_members_is_skipped_with_that_reason():
    t = _planted(3, [0.0, 1.0], -0.2)
    t.columns["y"][t["alpha"] == 1.0] = np.nan               # every member at the largest α diverged
    v = C.judge([C.Trend("C3", "falls", x="alpha", y="y")], t)[0]
    assert v.label == "skipped (too few trained members)"


def test_families_are_validated_and_carried_to_the_verdict():
    t = _planted(4, [0.0, 1.0], 0.5)
    v = C.judge([C.Holds("x", "holds", lhs="y", rhs=0.0, family="check")], t)[0]
    assert v.family == "check" and v.verdict == "supported"
    with pytest.raises(ValueError, match="family must be one of primary, secondary, check"):
        C.Trend("C0", "t", y="y", family="main")


def test_a_primary_claim_on_an_unconverged_headline_is_at_most_inconclusive():
    t = _planted(6, [0.0, 0.5, 1.0], -0.2)
    ra = Column("robust_acc", (("norm", "l2"), ("eps", "0.5")))
    rows = slice(0, len(t))
    t.set(rows, ra, t["y"])
    flag = np.where(t["alpha"] == 1.0, 1.0, np.nan)           # checked at the largest α only, all converged
    t.set(rows, Column("headline_converged", (("norm", "l2"),)), flag)
    claim = C.Trend("C3", "falls", "primary", x="alpha", y=ra.key)
    assert C.judge([claim], t)[0].verdict == "supported"
    flag[np.flatnonzero(t["alpha"] == 1.0)[2]] = 0.0          # one member's headline did not converge
    t.set(rows, Column("headline_converged", (("norm", "l2"),)), flag)
    primary, secondary = C.judge([claim, dataclasses.replace(claim, family="secondary")], t)
    assert primary.label == "inconclusive (not converged)" and "l2" in primary.detail
    assert secondary.verdict == "supported"                 # only a primary claim is held back
    assert C.unconverged(C.Trend("C3", "other norm", x="alpha", y="y"), t) == []


def test_the_headline_is_vouched_for_only_by_its_own_rung_of_a_converged_ladder():
    from crobust.study.measures import headline_converged
    rung = lambda t, r, ra, over: {"n_iter": t, "n_restarts": r, "robust_acc": [ra], "overstated_pp": over}
    # the ladder 10, 20, 40 × 1 restart, then 40 × 2, converged at the top; overstated_pp: the points robust at a
    # rung that a stronger rung breaks
    result = {"budgets": [rung(10, 1, 0.60, 5.3), rung(20, 1, 0.55, 0.3), rung(40, 1, 0.548, 0.1),
                          rung(40, 2, 0.547, 0.0)], "converged": True, "tolerance_pp": 0.5}
    assert headline_converged(result, 40, 1)                  # 0.1 pp of its points broken by a stronger rung
    assert headline_converged(result, 20, 1)                  # 0.3 pp
    assert not headline_converged(result, 10, 1)              # 5.3 pp: the headline overstates robust accuracy
    assert not headline_converged(result, 80, 1)              # not on the ladder: nothing vouches for it
    assert not headline_converged({**result, "converged": False}, 40, 1)
    # on 100 points the tolerance is its floor, 2 points (2 pp): one point overstated is within it, two are not
    floor = {"budgets": [rung(40, 1, 0.34, 1.0), rung(80, 1, 0.33, 0.0)], "converged": True, "tolerance_pp": 2.0}
    assert headline_converged(floor, 40, 1)
    assert not headline_converged({**floor, "budgets": [rung(40, 1, 0.34, 2.0), rung(80, 1, 0.32, 0.0)]}, 40, 1)
    # with Square on the ladder (its queries a third axis), the headline's query budget must be a rung too
    square = {"budgets": [{**rung(20, 1, 0.55, 0.4), "n_queries": 100}, {**rung(40, 1, 0.548, 0.2), "n_queries": 100},
                          {**rung(40, 1, 0.546, 0.0), "n_queries": 200}], "converged": True, "tolerance_pp": 0.5}
    assert headline_converged(square, 20, 1, 100) and headline_converged(square, 40, 1, 200)
    assert not headline_converged(square, 20, 1, 50) and not headline_converged(square, 20, 1)


def test_a_claim_given_another_holds_only_where_that_one_is_supported():
    t = _planted(8, [0.0, 0.5, 1.0], -0.2)
    t.set(slice(0, len(t)), "flat", np.full(len(t), 0.7))
    falls = C.Trend("C9", "falls with α", x="alpha", y="y", min_change=0.1)
    flat = C.Flat("C9", "flat with scale", x="alpha", y="flat", tolerance=0.03, given=falls.text)
    assert [v.verdict for v in C.judge([falls, flat], t)] == ["supported", "supported"]
    weak = dataclasses.replace(falls, min_change=0.5)                   # the premise is now below its stated size
    v = C.judge([weak, dataclasses.replace(flat, given=weak.text)], t)[1]
    assert v.label == "inconclusive (its premise is not supported)" and "inconclusive (effect below" in v.detail
    assert C.judge([flat], t)[0].verdict == "inconclusive"             # a premise not judged at all


def test_a_table_without_seeds_is_one_unpaired_group():
    t = MemberTable()
    rows = t.add_members([{"alpha": a} for a in ALPHAS for _ in range(5)])
    t.set(rows, "y", -np.searchsorted(ALPHAS, t["alpha"]) + 0.01 * np.random.default_rng(0).normal(size=len(t)))
    v = C.judge([C.Trend("C0", "falls", x="alpha", y="y")], t)[0]
    assert v.verdict == "supported" and "unpaired" in v.detail
    assert math.isclose(v.stats["rho"], scipy.stats.spearmanr(t["alpha"], t["y"]).statistic, rel_tol=1e-9)


def test_a_penalty_term_strength_is_a_claims_x():
    """Members from ``training.grid`` over a second penalty's strength axis carry it as a coordinate, so a claim
    can take it as its x (here a planted fall with β-control's strength at a fixed α)."""
    from crobust import training

    t = MemberTable()
    rows = t.add_members([{"population": "p", **m} for m in training.grid(alpha=[0.1], beta_control=ALPHAS,
                                                                          seeds=range(5))])
    t.set(rows, "beta_sigma", FALLING(t.coord("beta_control"), np.random.default_rng(0)))
    v = C.judge([C.Trend("C9", "β falls with β-control", x="beta_control", y="beta_sigma"),
                 C.Trend("C9", "β against α", x="alpha", y="beta_sigma")], t, correction=None)
    assert [x.verdict for x in v] == ["supported", "skipped"]
