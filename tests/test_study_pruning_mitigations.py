"""The pruning-mitigations study (docs/paper.md §E11): the smoke preset end to end, the retention columns against
the pruned accuracies they are made of, β-control's value on a planted kernel against its closed form, ε-pruning's
per-layer count on planted filter norms against a brute-force count, the paired-columns rule on planted tables,
bad configs, and the paper preset on stand-in CIFAR-10 archives."""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import pruning, regularizers, training
from crobust._errors import CrobustError
from crobust.config import derive
from crobust.models.matrices import get_leaf, layer_specs
from crobust.study.claims import ColumnsPaired, judge
from crobust.study.table import MemberTable, col
from experiments import pruning_mitigations as PM
from tests import _paper_data
from _study_runs import smoke_run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, workdir, out = smoke_run("pruning_mitigations", tmp_path_factory)   # shared with the contract tests
    with open(workdir / "members.csv") as f:
        rows = list(csv.DictReader(f))
    return workdir, out, rows


def test_smoke_run_writes_every_arm_claim_and_figure(smoke):
    workdir, out, rows = smoke
    cfg = PM.PRESETS["smoke"]
    assert sorted({r["arm"] for r in rows}) == sorted(PM.ARMS)
    assert len(rows) == 3 * cfg.grid.seeds
    report = (workdir / "report.md").read_text()
    verdicts = json.loads((workdir / "verdicts.json").read_text())
    assert [v["text"] for v in verdicts] == [c.text for c in PM.claims(cfg)]
    assert sum(v["family"] == "primary" for v in verdicts) == 4
    for v in verdicts:                                  # every claim's columns were measured: none skipped as unmeasured
        assert "not measured" not in v["detail"], v
        assert v["text"] in report
    for c in cfg.mitigations.criteria:
        for kind in PM.KINDS:
            assert (workdir / f"retention_{kind}_{c}.png").exists()
    # each arm's strengths are its coordinates (0 where the arm does not add that penalty)
    for r in rows:
        assert float(r["beta_control"]) == (cfg.mitigations.beta_control if r["arm"] == "beta_control" else 0.0)
        assert float(r["alignment"]) == (cfg.mitigations.alignment if r["arm"] == "alignment" else 0.0)


def test_retention_is_pruned_accuracy_over_unpruned_accuracy(smoke):
    """retention[kind, c, r] = acc(c, r)/acc(ratio 0) and retention_high = its mean over r ≥ high, member by member
    (float64 arithmetic on values read back from the CSV: 1e-9 relative)."""
    _, _, rows = smoke
    m = PM.PRESETS["smoke"].mitigations
    acc = {"clean": lambda c, r: col("pruned_clean_acc", criterion=c, ratio=f"{r:g}"),
           "robust_linf": lambda c, r: col("pruned_robust_acc", norm="linf", criterion=c, ratio=f"{r:g}")}
    for row in rows:
        for kind in PM.KINDS:
            base = float(row[acc[kind]("ratio", 0.0)])
            assert base > 0
            for c in m.criteria:
                highs = []
                for r in m.ratios:
                    ret = float(row[col("retention", kind=kind, criterion=c, ratio=f"{r:g}")])
                    assert ret == pytest.approx(float(row[acc[kind](c, r)]) / base, rel=1e-9)
                    highs.append(ret) if r >= m.high else None
                assert float(row[col("retention_high", kind=kind, criterion=c)]) == pytest.approx(np.mean(highs),
                                                                                                  rel=1e-9)
                assert float(row[col("retention", kind=kind, criterion=c, ratio="0")]) == 1.0
        # the ε-pruning sweep reaches the global ratio (⌊r·R⌋ rows, more only on ties), fixed ratio removes ⌊r·out⌋
        for r in m.ratios:
            assert float(row[col("pruned_removed", criterion="epsilon_ratio", ratio=f"{r:g}")]) >= r - 0.1
            assert float(row[col("pruned_removed", criterion="ratio", ratio=f"{r:g}")]) <= r + 1e-9


def test_penalty_columns_are_the_regularisers_at_strength_one(smoke):
    """The penalty columns are β-control and the alignment bound of the measured parameters (≥ 0 by definition; the
    β-control arm trained on the β term, so its value is finite and positive)."""
    _, _, rows = smoke
    for r in rows:
        assert float(r["penalty_beta_control"]) > 0
        assert float(r["penalty_alignment"]) > 0


def _planted_resnet():
    cfg = PM.PRESETS["smoke"]
    data = cfg.data.load()
    model = cfg.model.build(data)
    state = training.init_population(model, data, cfg.train, [{"alpha": 0.1, "seed": 0}])
    return jax.tree.map(lambda a: np.array(a[0]), state.params)


def test_beta_control_on_planted_kernels_matches_the_closed_form():
    """Every regularised conv's kernel is planted so that filter o has row-ℓ1 norm ν_o = s_l·(o + 1) exactly
    (constant entries s_l(o + 1)/(kh·kw·in)). The top K = max(h − ⌊0.95h⌋, 2) norms are s_l·(h−K+1 … h), K
    consecutive multiples of s_l, whose population variance is s_l²(K² − 1)/12; β-control sums that over layers.
    float32 sums of ≤ 600 entries: 1e-5 relative."""
    params = _planted_resnet()
    expected = 0.0
    for i, spec in enumerate(s for s in layer_specs(params).values() if not (s.is_head or s.is_stem)):
        leaf = get_leaf(params, spec)
        kh, kw, cin, h = leaf["kernel"].shape
        scale = 0.5 + 0.25 * i
        nu = scale * np.arange(1, h + 1, dtype=np.float64)
        leaf["kernel"][...] = np.broadcast_to(nu / (kh * kw * cin), leaf["kernel"].shape)
        K = max(h - math.floor(0.95 * h), 2)
        expected += scale ** 2 * (K * K - 1) / 12
    assert expected > 0
    got = float(regularizers.beta_control(jax.tree.map(jnp.asarray, params), 1.0))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(regularizers.beta_control(jax.tree.map(jnp.asarray, params), 0.3)) == pytest.approx(0.3 * got,
                                                                                                      rel=1e-6)


def test_epsilon_pruning_per_layer_count_matches_brute_force_on_planted_norms():
    """Filters planted with known ℓ2 norms (every entry of filter o equal): ε-pruning swept to a global ratio
    removes, in each layer, the largest n with Σ of its n smallest squared norms ≤ ε·‖W‖_F² (counted by brute force
    over n), and the total is ⌊r·R⌋ (distinct shares, no ties)."""
    params = _planted_resnet()
    rng = np.random.default_rng(0)
    norms = {}
    for spec in layer_specs(params).values():
        if spec.is_head or spec.is_stem:
            continue
        leaf = get_leaf(params, spec)
        kh, kw, cin, h = leaf["kernel"].shape
        nu = rng.uniform(0.1, 3.0, size=h)
        leaf["kernel"][...] = np.broadcast_to(nu / math.sqrt(kh * kw * cin), leaf["kernel"].shape)
        norms[spec.name] = nu
    variables = {"params": jax.tree.map(jnp.asarray, params)}
    ratio = 0.5
    eps, masks, achieved = pruning.epsilon_for_ratio(variables, ratio)
    total = sum(len(v) for v in norms.values())
    removed = 0
    for name, nu in norms.items():
        sq = np.sort(nu ** 2)
        n_brute = max(n for n in range(len(sq)) if sq[:n].sum() <= eps * sq.sum() * (1 + 1e-9))
        mask = np.asarray(masks[name])
        assert int((~mask).sum()) == n_brute, name
        assert np.all(nu[~mask][:, None] <= nu[mask][None, :] + 1e-6)        # the removed are the smallest
        removed += n_brute
    assert removed == math.floor(ratio * total)
    assert float(achieved) == pytest.approx(removed / total)


def _table(a, b, seeds=None):
    t = MemberTable()
    t.add_members([{"population": "p", "member": i, "seed": i if seeds is None else seeds[i]} for i in range(len(a))])
    t.set(slice(0, len(a)), "a", np.asarray(a, float))
    t.set(slice(0, len(a)), "b", np.asarray(b, float))
    return t


def test_columns_paired_on_planted_tables():
    """a = b + δ on every member: supported at δ = 0.05 ≥ the stated 0.02, inconclusive (effect) at δ = 0.01,
    contradicted at δ = −0.05, inconclusive with no difference; the p-value of 8 same-sign members is the sign-flip
    minimum ≈ 2·2⁻⁸ (Monte Carlo over 2000 flips)."""
    rng = np.random.default_rng(1)
    b = 0.6 + 0.1 * rng.random(8)
    noise = 0.002 * rng.standard_normal(8)
    claim = ColumnsPaired("C11", "a above b", "primary", a="a", b="b", min_change=0.02)
    verdict = lambda d: judge([claim], _table(b + d + noise, b))[0]
    v = verdict(0.05)
    assert v.verdict == "supported"
    assert v.stats["difference"] == pytest.approx(0.05 + noise.mean(), abs=1e-12)
    assert v.p_value < 0.02
    assert verdict(0.01).verdict == "inconclusive" and "effect below" in verdict(0.01).reason
    assert verdict(-0.05).verdict == "contradicted"
    assert verdict(0.0).verdict == "inconclusive"
    less = ColumnsPaired("C11", "a below b", a="a", b="b", direction="less")
    assert judge([less], _table(b - 0.05, b))[0].verdict == "supported"
    with pytest.raises(CrobustError, match="direction"):
        ColumnsPaired("C11", "x", a="a", b="b", direction="up")


@pytest.mark.parametrize("change, match", [
    ({"grid.alpha": (0.0, 0.1)}, "grid.alpha"),
    ({"mitigations.ratios": (0.2, 0.3)}, "mitigations.high"),
    ({"mitigations.criteria": ("ratio", "global_ratio")}, "epsilon_ratio"),
    ({"mitigations.beta_control": 0.0}, "beta_control"),
    ({"train.penalties": ("alignment",)}, "penalties"),
])
def test_bad_config_is_one_clear_error_before_anything_is_written(tmp_path, change, match):
    with pytest.raises(CrobustError, match=match):
        PM.STUDY.run(derive(PM.PRESETS["smoke"], change), tmp_path / "run", preset="custom", progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_paper_preset_on_stand_in_archives(tmp_path):
    """The paper preset (CIFAR-10 binary layout, ImageNet-stem ResNet-18) runs end to end, shrunk: width 4, one
    block per stage, one seed per arm, one ratio, two criteria, two steps, two points."""
    data_dir = _paper_data.write_cifar10(tmp_path / "data")
    cfg = PM.PRESETS["paper"]
    assert (cfg.data.dataset, cfg.model.stem, cfg.model.width, cfg.grid.alpha) == ("cifar10", "imagenet", 64, (0.1,))
    out = _paper_data.run_paper_preset(PM.STUDY, tmp_path / "paper", data_dir, **{
        "model.width": 4, "grid.seeds": 1, "mitigations.ratios": (0.5,),
        "mitigations.criteria": ("ratio", "epsilon_ratio"), **_paper_data.ONE_ATTACK, **_paper_data.SHALLOW})
    table = out["table"]
    assert len(table) == 3
    assert (tmp_path / "paper" / "report.md").exists()
    for kind in PM.KINDS:
        assert col("retention_high", kind=kind, criterion="epsilon_ratio") in table


def test_small_preset_can_decide_its_primary_claims():
    """--power on the small preset: every primary claim (the paired-columns rule included, through its own planted
    columns) reaches the level after Holm's correction and detects a planted effect of its stated size."""
    from crobust.study import power
    cfg = PM.PRESETS["small"]
    rows = power.power(PM.claims(cfg), power.layout(PM.STUDY, cfg))
    primary = [r for r in rows if r.claim.family == "primary"]
    assert len(primary) == 4 and all(r.ok and r.p_best < 0.05 for r in primary)
    paired = [r for r in rows if isinstance(r.claim, ColumnsPaired)]
    assert paired and all(r.detected for r in paired)
