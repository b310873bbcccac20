"""The power check and the planted tables at every study's member layouts (no training): a strong planted effect is
supported, the reversed one contradicted, a null one neither, one below the stated size inconclusive; a preset whose
primary claims cannot reach the level makes ``--power`` exit 1; checks never enter the index's claim tallies."""

import importlib

import pytest

from crobust.study import claims as C
from crobust.study import power
from experiments import STUDIES, reproduce

LAYOUTS = [(name, preset) for name in sorted(STUDIES) for preset in ("small", "paper")]

# Known limits of a preset's layout, each expected to fail (strict: the day it passes, this list must shrink).
KNOWN_LIMITS = {
    ("planted", "filter_pruning"): "NoGain's exact one-sided sign-flip test over 3 seeds (E4's grid) has smallest p "
                                   "1/8, so a planted gain can never be called contradicted: E4 needs 5 seeds",
    ("reach", "finetuned_backbones", "paper"): "without the ViT-B/16 checkpoint on this machine the paper preset "
                                               "skips its ViT arm, whose claims are its only primary ones",
}


def _known_limit(request, test: str, name: str, preset: str) -> None:
    reason = KNOWN_LIMITS.get((test, name)) or KNOWN_LIMITS.get((test, name, preset))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture(scope="module", params=LAYOUTS, ids=[f"{n}-{p}" for n, p in LAYOUTS])
def layout(request):
    name, preset = request.param
    study = importlib.import_module(STUDIES[name]).STUDY
    cfg = study.presets[preset]
    claims = study.claims(cfg)
    table = power.layout(study, cfg)
    return study, cfg, preset, claims, table, power.power(claims, table)


def test_every_primary_claim_can_reach_the_level(layout, request):
    study, cfg, preset, claims, table, rows = layout
    _known_limit(request, "reach", study.name, preset)
    assert len(table) == sum(len(p.members) for p in study.populations(cfg, power.stand_in_data(cfg)))
    failing = [(r.claim.text, r.p_best) for r in rows if not r.ok]
    assert not failing, failing
    assert any(r.claim.family == "primary" for r in rows)
    for r in rows:                                # the best case in a family is never below the rule's own best
        assert r.p_best is None or r.p_best >= r.p_min


def test_planted_effects_at_the_preset_layout(layout, request):
    study, cfg, preset, claims, table, rows = layout
    _known_limit(request, "planted", study.name, preset)
    for r in rows:
        c = r.claim
        if c.family != "primary" or r.p_best is None:
            continue
        judge = lambda s, size=3.0: c.test(power.plant(c, table, s, size), C.LEVEL, p_adjusted=r.p_best)[0]
        assert judge(+1).verdict == "supported", c.text
        assert judge(-1).verdict == "contradicted", c.text
        assert judge(0).verdict == "inconclusive", c.text
        if power.stated_effect(c):
            below = judge(+1, size=0.5)
            assert below.verdict == "inconclusive" and below.reason.startswith("effect below"), c.text


def test_the_power_command_passes_at_small_and_fails_where_seeds_are_too_few(capsys):
    from experiments import decision_boundary
    assert decision_boundary.main(["--preset", "small", "--power"]) == 0
    out = capsys.readouterr().out
    assert "| primary | C2:" in out and "Every primary claim can reach the level" in out
    # 4 seeds: a paired comparison of two populations has 2⁴ sign flips, smallest two-sided p ≈ 2/16 > 0.05
    assert decision_boundary.main(["--preset", "small", "--set", "grid.seeds=4", "--power"]) == 1
    assert "primary claim(s) cannot reach the level" in capsys.readouterr().out


def test_checks_never_appear_in_the_index_tally():
    claims = [{"paper": "C3", "verdict": "supported", "family": "primary"},
              {"paper": "C3", "verdict": "inconclusive", "family": "secondary"},
              {"paper": "C3", "verdict": "supported", "family": "check"},
              {"paper": "C3", "verdict": "supported", "family": "check"},
              {"paper": "C5", "verdict": "supported", "family": "check"}]
    assert reproduce.claim_tally(claims, "C3") == "1 supported (primary); 1 inconclusive (secondary)"
    assert reproduce.claim_tally(claims, "C5") == "checks only"
    results = [{"study": "s", "title": "S", "status": "complete", "paper_claims": ["C3", "C5"], "wall_time_s": 1.0,
                "verdicts": ["- **C3: x** — **supported**"], "checks": ["- **C5: y** — **supported**"],
                "claims": claims}]
    text = "\n".join(reproduce.index_lines("small", "forced", results, coverage={}))
    assert "s: 1 supported (primary); 1 inconclusive (secondary)" in text and "s: checks only" in text
    assert text.index("Checks (not counted above)") < text.index("- **C5: y**")


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_confound_tolerances_are_smaller_than_the_primary_effect(name):
    study = importlib.import_module(STUDIES[name]).STUDY
    for preset in ("small", "paper"):
        claims = study.claims(study.presets[preset])
        effects = [power.stated_effect(c) for c in claims if c.family == "primary" and power.stated_effect(c)]
        flats = [c for c in claims if isinstance(c, C.Flat)]
        assert all(f.tolerance < min(effects, default=float("inf")) for f in flats), [f.text for f in flats]


def test_a_headline_budget_off_the_ladder_is_refused():
    from crobust.study.blocks import EvalConfig
    with pytest.raises(ValueError, match="must be a rung of the convergence ladder"):
        EvalConfig(n_iter=30, convergence_iters=(20, 40)).validate()
    EvalConfig(n_iter=40, n_restarts=2, convergence_iters=(20, 40), convergence_restarts=(1, 2)).validate()
    # Square's query ladder starts at the headline's own query budget, and needs Square in the ensemble
    with pytest.raises(ValueError, match="starting at eval.n_queries"):
        EvalConfig(n_iter=40, n_queries=100, convergence_iters=(20, 40), convergence_queries=(50, 100)).validate()
    with pytest.raises(ValueError, match="with square among eval.attacks"):
        EvalConfig(n_iter=40, n_queries=100, attacks=("apgd-ce",), convergence_iters=(20, 40),
                   convergence_queries=(100, 200)).validate()
    EvalConfig(n_iter=40, n_queries=100, convergence_iters=(20, 40), convergence_queries=(100, 200)).validate()


def test_a_primary_rule_that_cannot_decide_with_every_member_trained_fails():
    from experiments import spectral_fixed_scale as sfs
    study, cfg = sfs.STUDY, sfs.PRESETS["smoke"]               # 2 α × 2 seeds
    rows = {r.claim.text: r for r in power.power(study.claims(cfg), power.layout(study, cfg))}
    matched = next(r for t, r in rows.items() if "at equal clean accuracy" in t)
    assert matched.p_min is None and not matched.ok and "4 members for a model with 4 parameters" in matched.note
    trend = next(r for r in rows.values() if r.claim.family == "primary" and r.p_min is not None)
    assert trend.p_min > 0.25 and not trend.ok                 # 2² within-seed arrangements: p ≈ 2/4 at best
