"""Claim rules on synthetic member tables whose answer is known, the multiple-claims correction, the table."""

import math

import numpy as np
import pytest
import scipy.stats

from crobust.study import claims as C
from crobust.study.table import Column, MemberTable, col

ALPHAS = [0.0, 0.01, 0.1, 1.0]


def table_of(**columns) -> MemberTable:
    """5 seeds × ALPHAS members with the given columns (functions of α and a seeded noise)."""
    t = MemberTable()
    rows = t.add_members([{"population": "p", "alpha": a, "seed": s} for a in ALPHAS for s in range(5)])
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
    assert math.isclose(v[0].stats["rho"], scipy.stats.spearmanr(t["alpha"], t["falling"]).statistic, rel_tol=1e-9)
    assert "Spearman |ρ| ≥ 0.5" in v[0].line() and "Rule:" in v[0].line()        # the rule is printed


def test_holds_is_broken_by_one_member_and_names_it():
    t = table_of(bound=lambda x, rng: 1.0 + x, gap=lambda x, rng: 0.5 + 0 * x)
    ok = C.Holds("C5", "bound ≥ gap", lhs="bound", rhs="gap")
    assert C.judge([ok], t)[0].verdict == "supported"
    t.columns["gap"][7] = 5.0                                     # one member breaks it
    v = C.judge([ok], t)[0]
    assert v.verdict == "contradicted" and v.stats["violations"] == 1 and "1 of 20" in v.detail
    assert C.judge([C.Holds("c", "small", lhs="gap", rhs=6.0, relation="<=")], t)[0].verdict == "supported"


def test_holm_adjusts_as_the_step_down_formula():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(C.holm(p), [0.03, 0.06, 0.06, 0.02])
    assert C.holm([0.5]) == [0.5] and max(C.holm([0.9, 0.8])) <= 1.0


def test_the_correction_turns_a_lone_borderline_claim_into_inconclusive_within_a_family():
    # a weak trend (p just under 0.05 alone) among several null claims: Holm multiplies its p by the family size
    t = MemberTable()
    rows = t.add_members([{"alpha": a, "seed": s} for a in (0.0, 1.0) for s in range(4)])
    t.set(rows, "weak", [0.0, 0.2, 0.1, 0.3, 0.3, 0.45, 0.35, 0.5])
    for i in range(5):
        t.set(rows, f"null{i}", np.random.default_rng(i).normal(size=8))
    weak = C.Trend("C0", "weak", x="alpha", y="weak", direction="increasing", min_abs_rho=0.5)
    alone = C.judge([weak], t)[0]
    family = C.judge([weak] + [C.Trend("C0", f"n{i}", x="alpha", y=f"null{i}") for i in range(5)], t)[0]
    assert alone.verdict == "supported" and alone.p_value < 0.05
    assert family.verdict == "inconclusive" and family.p_adjusted > 0.05 and family.p_value == alone.p_value


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


def test_matched_compares_pairs_of_equal_clean_accuracy_only():
    # RA falls with α only through clean accuracy: at matched clean accuracy there is no effect
    t = MemberTable()
    rows = t.add_members([{"alpha": a, "seed": s} for a in (0.0, 1.0) for s in range(20)])
    clean = np.r_[np.linspace(0.90, 0.97, 20), np.linspace(0.86, 0.93, 20)]     # overlap 0.90–0.93
    noise = np.random.default_rng(1).normal(scale=0.01, size=40)
    t.set(rows, "clean_acc", clean)
    t.set(rows, "through_clean", clean - 0.5 + noise)                      # RA = clean − 0.5
    t.set(rows, "direct", clean - 0.5 - 0.1 * t.coord("alpha") + noise)    # RA also falls 0.1 at equal clean
    rule = lambda y: C.Matched("C1", y, x="alpha", y=y, match="clean_acc", within=0.01)
    trivial, real = C.judge([rule("through_clean"), rule("direct")], t, correction=None)
    assert trivial.verdict == "inconclusive" and abs(trivial.stats["difference"]) < 0.01
    assert real.verdict == "supported" and abs(real.stats["difference"] + 0.1) < 0.01
    assert trivial.stats["pairs"] == real.stats["pairs"] >= 5
    # a naive trend sees a fall in both
    naive = C.judge([C.Trend("C1", "n", x="alpha", y="through_clean")], t)[0]
    assert naive.verdict == "supported"


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
