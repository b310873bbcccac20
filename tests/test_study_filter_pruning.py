"""Post-hoc filter pruning (experiments/filter_pruning.py, docs/paper.md §E10): the smoke preset end to end (the
row members trained by resnet_row_sparsity's folder beside it and restored), a planted case of dead filters that
pruning must remove first with the accuracy unchanged, the fine-tuning stage's per-member ratios, the NoGain rule
of claim (a), bad input, and the paper preset on stand-in archives."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import pruning
from crobust._errors import CrobustError
from crobust.config import derive
from crobust.study import MemberTable, NoGain, col, open_run, power, staging
from crobust.study import measures_pruning as MP
from crobust.study import measures_radii as R
from crobust.study.measures import Context, TrainedPopulation
from experiments import filter_pruning as E10
from experiments import resnet_row_sparsity as E4
from tests._paper_data import ONE_ATTACK, SHALLOW, run_paper_preset, write_cifar10
from _study_runs import smoke_run

SMOKE = E10.PRESETS["smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, workdir, result = smoke_run("filter_pruning", tmp_path_factory)     # shared with the contract tests
    with open(workdir / "members.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return workdir, result, rows


def _num(v):
    return math.nan if v in ("", None) else float(v)


def test_smoke_runs_end_to_end_on_the_row_members_of_resnet_row_sparsity(smoke):
    workdir, result, rows = smoke
    assert json.loads((workdir / "run.json").read_text())["status"] == "complete"
    # the source was trained in its own study's folder, beside this one, and both populations were measured
    assert (workdir.parent / E4.STUDY.name / "checkpoints" / "row").is_dir()
    n = len(SMOKE.grid.alpha) * SMOKE.grid.seeds
    assert [r["population"] for r in rows] == ["posthoc"] * n + ["finetuned"] * n * len(SMOKE.pruning.finetune_ratios)
    verdicts = json.loads((workdir / "verdicts.json").read_text())
    assert [v["paper"] for v in verdicts if v["family"] == "primary"] == ["C11"] * 4
    assert all(v["verdict"] == "supported" for v in verdicts if v["family"] == "check"), verdicts
    report = (workdir / "report.md").read_text()
    assert "Stand-ins: digits for CIFAR-10" in report and "## Checks" in report
    assert len(list(workdir.glob("retention_*.png"))) == len(E10.figures(SMOKE)) - 1     # and radii_linf
    # the radii section: FMN on the conv members, no certificate, and the report says why
    assert "| posthoc | linf | no: " + R.NO_CERTIFICATE in report and (workdir / "radii_linf.png").exists()
    posthoc = [r for r in rows if r["population"] == "posthoc"]
    value = lambda s: float(s) if s not in ("", None) else math.nan
    assert all(np.isnan(value(r["radius_certified[norm=linf]"])) for r in posthoc)
    assert all(value(r["radius_attack[norm=linf]"]) >= 0 for r in posthoc)


@pytest.fixture(scope="module")
def opened(smoke):
    return open_run(smoke[0])


def test_posthoc_members_are_the_source_members_untouched(smoke, opened):
    # posthoc is the row members restored, nothing trained: its variables are the source's best-validation ones
    workdir, _, _ = smoke
    run = opened
    data = run.data
    row = E10.populations(run.config, data)[0].start.source                 # E4's row, as the study builds it
    source = staging.restore_finished(row, data, workdir.parent / E4.STUDY.name / "checkpoints" / "row")
    for a, b in zip(jax.tree.leaves(run["posthoc"].params), jax.tree.leaves(source.best_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.asarray(run["posthoc"].fit.state.step) == 0)


def test_ratio_zero_is_the_unpruned_model_and_retention_is_one_there(smoke):
    # smoke prunes without batch-norm recalibration, so ratio 0 is the unpruned model bit for bit
    _, result, _ = smoke
    t = result["table"]
    post = t.where(population="posthoc")
    np.testing.assert_array_equal(t[E10.pruned_acc("clean", "ratio", 0.0)][post], t["clean_acc_points"][post])
    np.testing.assert_array_equal(t[E10.pruned_acc("robust", "ratio", 0.0)][post],
                                  t[col("robust_acc", norm="linf", eps="0.05")][post])
    for m, q in (("clean", {}), ("robust", {"norm": "linf"})):
        np.testing.assert_array_equal(t[col(f"pruned_{m}_retention", **q, criterion="ratio", ratio="0")][post], 1.0)
        r = t[col(f"pruned_{m}_retention", **q, criterion="ratio", ratio="0.5")][post]
        np.testing.assert_allclose(r, t[E10.pruned_acc(m, "ratio", 0.5)][post] / t[E10.pruned_acc(m, "ratio", 0)][post],
                                   rtol=1e-12)
        np.testing.assert_allclose(t[E10.retention_high(m)][post], r, rtol=1e-12)   # the only high ratio is 0.5
    assert np.all(t["pruned_removed_error"][post] == 0.0)


def test_finetuned_members_keep_exactly_their_pruned_filters_at_zero(smoke, opened):
    # fine-tuning holds the pruned filters at 0 and every other filter stays alive: the exactly-zero share is the
    # documented per-layer count Σ⌊r·out⌋/Σout of the member's own ratio
    _, result, _ = smoke
    t = result["table"]
    run = opened
    outs = [v.shape[-1] for v in pruning.row_norms(run["finetuned"].params).values()]
    for r in SMOKE.pruning.finetune_ratios:
        sel = t.where(population="finetuned", ratio=float(r))
        assert sel.sum() == len(SMOKE.grid.alpha) * SMOKE.grid.seeds
        expected = sum(math.floor(r * o) for o in outs) / sum(outs)
        np.testing.assert_allclose(t["finetuned_removed"][sel], expected, rtol=0, atol=1e-12)
        for m in ("clean", "robust"):
            assert np.all(np.isfinite(t[E10.finetuned(m, "acc", r)][sel]))
            assert np.all(np.isnan(t[E10.finetuned(m, "acc", r)][~sel]))
        np.testing.assert_array_equal(t[E10.finetuned("clean", "retention", 0.0)][t.where(ratio=0.0)], 1.0)


def _kill(variables, masks):
    """The variables with every filter that ``masks`` removes set to exactly zero (kernel column, bias and the
    layer's own batch-norm scale and bias): the dead filters a pruning should find first."""
    return pruning.apply_masks(variables, masks)


def test_planted_dead_filters_are_pruned_first_and_leave_the_accuracy_unchanged(opened):
    # Kill, in every prunable layer of the trained members, the ⌊0.25·out⌋ filters of largest norm (so nothing
    # but the planting can make them the smallest). Per-layer pruning at 0.25 must then remove exactly them
    # (⌊0.25·out⌋ filters per layer, the documented count) and leave clean and robust accuracy bit for bit as at
    # ratio 0 (their outputs are already 0); at 0.75 it must remove more and the accuracy must move.
    run, pop = opened, opened["posthoc"]
    variables = {**pop.params, **(pop.model_state or {})}
    norms = pruning.row_norms(variables)
    planted = {}
    for name, v in norms.items():
        k = math.floor(0.25 * v.shape[-1])
        keep = np.ones(v.shape, bool)
        for m in range(v.shape[0]):
            keep[m, np.argsort(-v[m], kind="stable")[:k]] = False
        planted[name] = keep
    dead = _kill(variables, planted)
    masks = pruning.ratio_masks(dead, 0.25)
    for name in norms:
        np.testing.assert_array_equal(masks[name], planted[name])
        assert np.all((~masks[name]).sum(-1) == math.floor(0.25 * norms[name].shape[-1]))
    tp = TrainedPopulation("posthoc", pop.model, pop.members, {}, pop.fit, {"params": dead["params"]},
                           {k: v for k, v in dead.items() if k != "params"})
    cfg = derive(run.config, {"pruning.ratios": (0.0, 0.25, 0.75), "pruning.high": 0.75})
    ctx = Context.build(cfg.eval, cfg.measure, run.data)
    out = {c.key: np.asarray(v) for c, v in E10.retention_sweep(cfg)(ctx, tp).items()}
    for m in ("clean", "robust"):
        np.testing.assert_array_equal(out[E10.pruned_acc(m, "ratio", 0.25)], out[E10.pruned_acc(m, "ratio", 0.0)])
        np.testing.assert_array_equal(out[col(f"pruned_{m}_retention", **E10._q(m), criterion="ratio",
                                              ratio="0.25")], 1.0)
    assert np.any(out[E10.pruned_acc("clean", "ratio", 0.75)] != out[E10.pruned_acc("clean", "ratio", 0.0)])
    assert np.all(out["pruned_removed_error"] == 0.0)


def test_ratio_masks_prune_each_member_at_its_own_ratio(opened):
    # the fine-tuning stage's masks: member i (ratio-major layout) loses ⌊r_i·out⌋ filters per layer, its own
    # lowest-norm ones; the stage's identity names the ratios
    pop = opened["posthoc"]
    n = pop.size
    ratios = (0.0, 0.25, 0.5)
    variables = jax.tree.map(lambda a: jnp.concatenate([a] * 3), pop.params)
    masks = E10.RatioMasks("ratio", ratios, n)(variables)
    for name, v in pruning.row_norms(pop.params).items():
        out = v.shape[-1]
        for k, r in enumerate(ratios):
            np.testing.assert_array_equal((~masks[name][k * n:(k + 1) * n]).sum(-1), math.floor(r * out))
            np.testing.assert_array_equal(masks[name][k * n:(k + 1) * n], pruning.ratio_masks(pop.params, r)[name])
    a = staging._named(E10.RatioMasks("ratio", (0.0, 0.5), 4))
    b = staging._named(E10.RatioMasks("ratio", (0.0, 0.75), 4))
    assert a != b and "0.5" in a and a.startswith("experiments.filter_pruning.RatioMasks(")


def _table(gains, base=0.9, noise=None):
    """Members of α 0 and 0.1 over len(gains[0]) seeds, one column per entry of ``gains`` (α 0.1 − α 0 per seed)."""
    t = MemberTable()
    seeds = len(gains[0])
    t.add_members([{"population": "p", "alpha": a, "seed": s} for a in (0.0, 0.1) for s in range(seeds)])
    rows = slice(0, len(t))
    for i, g in enumerate(gains):
        levels = 0.01 * np.arange(seeds)
        t.set(rows, f"y{i}", np.r_[base + levels, base + levels + np.asarray(g, float)])
    return t


def _nogain(n_cols, margin=0.02):
    return NoGain("C11", "no gain", family="primary", ys=tuple(f"y{i}" for i in range(n_cols)),
                  a=(("alpha", 0.1),), b=(("alpha", 0.0),), min_change=margin)


def test_nogain_rule_supports_contradicts_and_stays_inconclusive_as_stated():
    # supported: every per-seed gain within ±0.004, so gain + 2 s.e. < 0.02 at both columns
    v, p = _nogain(2).test(_table([[0.002, -0.004, 0.0], [0.0, 0.001, -0.001]]), 0.05)
    assert v.verdict == "supported" and p == pytest.approx(1.0)
    # a consistent gain of 0.05 over 3 seeds: the smallest one-sided sign-flip p is 2^-3 = 0.125 (Holm over two
    # columns 0.25): not significant, and a gain of 0.02 is not excluded -> inconclusive
    v, p = _nogain(2).test(_table([[0.05, 0.06, 0.055], [0.0, 0.0, 0.0]]), 0.05)
    assert v.verdict == "inconclusive" and p == pytest.approx(0.25)
    # the same gain over 7 seeds: one-sided p = 2^-7, Holm ×2 < 0.05 -> contradicted (the data show a gain)
    v, p = _nogain(2).test(_table([[0.05, 0.06, 0.055, 0.05, 0.07, 0.06, 0.05], [0.0] * 7]), 0.05)
    assert v.verdict == "contradicted" and p == pytest.approx(2 * 2 ** -7)
    # a loss is never a contradiction, whatever its size
    v, _ = _nogain(1).test(_table([[-0.3, -0.31, -0.29, -0.3, -0.3, -0.3, -0.3]]), 0.05)
    assert v.verdict == "supported"


def test_small_preset_power_check_passes_for_every_primary_claim():
    cfg = E10.PRESETS["small"]
    rows = power.power(E10.claims(cfg), power.layout(E10.STUDY, cfg))
    primary = [r for r in rows if r.claim.family == "primary"]
    assert len(primary) == 4 and all(r.ok for r in primary)
    assert all(r.p_best < 0.05 for r in primary if isinstance(r.claim, E10.Trend))


@pytest.mark.parametrize("delta, needle", [
    ({"pruning.ratios": (0.25, 0.5)}, "pruning.ratios must start at 0"),
    ({"pruning.criteria": ("global_ratio",)}, "pruning.criteria must include 'ratio'"),
    ({"pruning.finetune_criterion": "epsilon"}, "pruning.finetune_criterion must be one of"),
    ({"pruning.high": 0.9}, "leaves no high ratio"),
    ({"grid.alpha": (0.03, 0.1)}, "grid.alpha must hold α = 0"),
])
def test_bad_pruning_settings_are_one_clear_error(delta, needle):
    with pytest.raises(CrobustError, match=needle):
        derive(SMOKE, delta).validate()


def test_paper_preset_runs_on_stand_in_cifar10(tmp_path):
    # the paper preset (CIFAR-10 archive layout, ResNet-18's ImageNet stem) shrunk: two members, two steps, width 8
    # and one block per stage (compiling the full depth's programs alone takes minutes on a shared CPU)
    data_dir = write_cifar10(tmp_path / "data", n_train=100, n_test=20)
    workdir = tmp_path / "paper" / E10.STUDY.name
    result = run_paper_preset(E10.STUDY, workdir, data_dir, **{
        "grid.alpha": (0.0, 0.1), "grid.seeds": 1, "model.width": 8, **SHALLOW,
        "train.val_ratio": 0.2,
        "pruning.ratios": (0.0, 0.5), "pruning.criteria": ("ratio",), "pruning.robust_criteria": ("ratio",),
        "pruning.finetune_ratios": (0.0, 0.5), "pruning.finetune_steps": 2, "pruning.finetune_eval_every": 1,
        "pruning.recalibrate": False, **ONE_ATTACK})
    assert json.loads((workdir / "run.json").read_text())["status"] == "complete"
    t = result["table"]
    assert len(t) == 2 + 4 and t.where(population="finetuned").sum() == 4
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["data"]["dataset"] == "cifar10" and cfg["model"]["stem"] == "imagenet"
    assert (workdir.parent / E4.STUDY.name / "checkpoints" / "row").is_dir()
    np.testing.assert_array_equal(t[E10.pruned_acc("clean", "ratio", 0.0)][t.where(population="posthoc")],
                                  t["clean_acc_points"][t.where(population="posthoc")])


def test_a_clean_only_sweep_gives_the_clean_accuracy_of_the_attacked_one(smoke, opened):
    # pruning_sweep with no norm (the study's clean-only criteria) measures the same pruned models: its
    # pruned_clean_acc equals the attacked sweep's (counts of correct points over the same points: exact)
    _, result, _ = smoke
    t = result["table"]
    run = opened
    ctx = Context.build(run.config.eval, run.config.measure, run.data)
    out = MP.pruning_sweep((0.0, 0.5), ("ratio", "global_ratio"), ())(ctx, run["posthoc"])
    post = t.where(population="posthoc")
    for r in (0.0, 0.5):
        for c in ("ratio", "global_ratio"):
            got = np.asarray(out[MP.column("pruned_clean_acc", criterion=c, ratio=MP.ratio_label(r))])
            np.testing.assert_array_equal(got, t[E10.pruned_acc("clean", c, r)][post])
