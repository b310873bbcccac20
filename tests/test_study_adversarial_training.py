"""The adversarial-training study (docs/paper.md §E7, claim C7): the relative robust accuracy against a planted
table, the AT arm's training batches against the reference attack recomputed by hand, the smoke preset end to end
and the paper preset on stand-in CIFAR-10 archives."""

import csv
import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import attacks
from crobust.attacks import presets
from crobust.config import derive
from crobust.data import to_float
from crobust.study import measures as M
from crobust.training import init_population, objective
from experiments import adversarial_training as E7
from experiments import resnet_row_sparsity as E4
from tests._paper_data import ONE_ATTACK, SHALLOW, run_paper_preset, write_cifar10
from _study_runs import smoke_run

NAN = np.nan


# --------------------------------------------------------------------------------------------------------------
# Relative robust accuracy on a planted table

ALPHA = np.array([0.1, 0.0, 0.03, 0.0, 0.1, 0.03, 0.0, 0.1, 0.03])
SEEDS = np.array([1, 0, 1, 1, 0, 0, 2, 2, 2])
RA = np.array([0.6, 0.8, 0.72, 0.9, 0.4, 0.8, 0.0, 0.3, 0.2])
# each member over its own seed's α = 0 member (seed 2's baseline RA is 0: the ratio is undefined)
WANT = np.array([0.6 / 0.9, 1.0, 0.72 / 0.9, 1.0, 0.4 / 0.8, 0.8 / 0.8, NAN, NAN, NAN])


def test_relative_robust_accuracy_divides_by_the_same_seeds_alpha_0_member():
    # the same float64 division, so equal bit for bit (NaN where the baseline is 0)
    np.testing.assert_array_equal(M.relative_to_baseline(RA, ALPHA, SEEDS), WANT)
    # a seed without an α = 0 member has no baseline
    np.testing.assert_array_equal(M.relative_to_baseline([0.5, 0.4], [0.0, 0.1], [0, 1]), [1.0, NAN])


def test_the_relative_measure_reads_the_headline_ra_of_its_own_population():
    members = [{"alpha": float(a), "seed": int(s)} for a, s in zip(ALPHA, SEEDS)]
    pop = types.SimpleNamespace(name="at", members=members, coords={}, seeds=SEEDS)
    ctx = types.SimpleNamespace(cache={("at", "ra_headline", "linf"): RA, ("standard", "ra_headline", "linf"): 1 - RA})
    out = {c.key: v for c, v in M.relative_robust_accuracy(("linf",))(ctx, pop).items()}
    assert list(out) == ["ra_relative[norm=linf]"]
    np.testing.assert_array_equal(out["ra_relative[norm=linf]"], WANT)
    assert "relative_robust_accuracy" in M.MEASURES


# --------------------------------------------------------------------------------------------------------------
# The AT arm's batches: half of each batch is the reference's PGD, the standard arm's batch is clean

SMOKE = E7.PRESETS["smoke"]


@pytest.fixture(scope="module")
def arms():
    data = SMOKE.data.load()
    standard, at = E7.populations(SMOKE, data)
    state = init_population(at.model, data, at.train, list(at.members[:1]))
    variables = {**jax.tree.map(lambda a: a[0], state.params), **jax.tree.map(lambda a: a[0], state.model_state)}
    x = to_float(jnp.asarray(data.train_images[:64]))
    y = jnp.asarray(data.train_labels[:64], jnp.int32)
    eval_fn = lambda v, z: at.model.apply(v, z, train=False)
    return standard, at, variables, x, y, eval_fn


def _inputs(train, eval_fn, variables, x, y, key):
    """The batch a step of ``train`` trains on, as the trainer makes it (compiled, as inside the step)."""
    a = train.adversarial
    hp = {} if a is None else {"at_eps": a.eps, "at_step_size": a.step_size, "at_ratio": a.ratio}
    inputs = objective.make_inputs(train, eval_fn)
    return jax.jit(lambda v, k: inputs(v, x, y, k, hp)[0])(variables, key)


def test_the_arms_differ_only_by_the_reference_adversarial_training():
    for preset in ("smoke", "small", "paper"):
        cfg = E7.PRESETS[preset]
        a = cfg.train.adversarial
        assert (a.labels, a.clip, a.n_iter, a.ratio, a.norm) == (
            presets.PGD_REFERENCE_AT["labels"], presets.PGD_REFERENCE_AT["clip"],
            3 if preset == "smoke" else presets.PGD_REFERENCE_AT["n_iter"], 0.5, "linf")
        assert a.step_size == pytest.approx(a.eps / 4)
        # the model, data, penalty and α grid are E4's preset's (steps, seeds, points may be smaller)
        e4 = E4.PRESETS[preset]
        assert (cfg.model, cfg.data, cfg.grid.alpha) == (e4.model, e4.data, e4.grid.alpha)
        assert (cfg.train.regularizer, cfg.train.optimizer, cfg.train.lr) == (e4.train.regularizer, e4.train.optimizer,
                                                                             e4.train.lr)
    assert E7.PRESETS["paper"].train.adversarial.eps == 8 / 255
    assert E7.PRESETS["small"].train.adversarial.eps == E7.PRESETS["small"].eval.headline_linf


def test_half_of_each_at_batch_is_the_reference_pgd_and_the_standard_batch_is_clean(arms):
    standard, at, variables, x, y, eval_fn = arms
    assert standard.train.adversarial is None and standard.members == at.members
    assert dataclasses.replace(at.train, adversarial=None) == standard.train
    key = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(_inputs(standard.train, eval_fn, variables, x, y, key)), np.asarray(x))

    a = at.train.adversarial
    mixed = np.asarray(_inputs(at.train, eval_fn, variables, x, y, key))
    moved = np.flatnonzero(np.any(mixed != np.asarray(x), axis=(1, 2, 3)))
    # a random start in the ε-box moves every attacked point almost surely: exactly ⌊0.5·64⌋ rows changed
    assert len(moved) == 32
    # the rows changed are the first half of the step's permutation, each the reference attack (PGD_REFERENCE_AT:
    # predicted labels, no clipping, one random start, last iterate) recomputed here from the documented key split
    k_perm, k_att = jax.random.split(key)
    sel = np.asarray(jax.random.permutation(k_perm, 64)[:32])
    assert sorted(sel.tolist()) == moved.tolist()
    reference = {**presets.PGD_REFERENCE_AT, "n_iter": a.n_iter, "step_size": a.step_size}
    want = jax.jit(lambda v, k: attacks.pgd(lambda z: eval_fn(v, z), x[sel], y[sel], k, eps=a.eps, norm="linf",
                                            **reference))(variables, k_att)
    # the same computation in two programs: float32 round-off only (pixel units, ε = 0.05)
    np.testing.assert_allclose(mixed[sel], np.asarray(want), atol=1e-6)
    delta = mixed - np.asarray(x)
    assert np.abs(delta).max() <= a.eps + 1e-6
    assert mixed.min() < -1e-3           # not clipped to [0, 1]: black digit pixels (0) are pushed below 0

    # the standard PGD-AT variant (true labels, clipped): the same half, every pixel in [0, 1]
    variant = derive(SMOKE, {"train.adversarial.labels": "true", "train.adversarial.clip": True}).train
    clipped = np.asarray(_inputs(variant, eval_fn, variables, x, y, key))
    assert np.any(clipped != np.asarray(x), axis=(1, 2, 3)).sum() == 32
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0


def test_bad_adversarial_settings_are_one_error_line_before_anything_is_written(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("CROBUST_CACHE_DIR", "off")
    for setting, needle in (("train.adversarial.eps=0", "train.adversarial.eps must be > 0"),
                            ("train.adversarial.method=trades", "must be ℓ∞ PGD adversarial training"),
                            ("grid.alpha=0.03,0.1", "grid.alpha needs 0")):
        capfd.readouterr()
        code = E7.main(["--preset", "smoke", "--set", setting, "--workdir", str(tmp_path / "w"), "--quiet"])
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
        assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------------------------------
# The smoke preset end to end

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, workdir, out = smoke_run("adversarial_training", tmp_path_factory)   # shared with the contract tests
    with open(workdir / "members.csv") as f:
        rows = list(csv.DictReader(f))
    return workdir, out, rows


def test_smoke_run_reports_both_arms_and_every_claim(smoke):
    workdir, out, rows = smoke
    assert json.loads((workdir / "run.json").read_text())["status"] == "complete"
    verdicts = json.loads((workdir / "verdicts.json").read_text())
    assert [(v["paper"], v["text"], v["family"]) for v in verdicts] == [(c.paper, c.text, c.family)
                                                                         for c in E7.claims(SMOKE)]
    assert verdicts[0]["family"] == "primary" and "RA(α)/RA(α = 0)" in verdicts[0]["text"]
    assert sorted((r["population"], float(r["alpha"]), int(r["seed"])) for r in rows) == sorted(
        (p, a, s) for p in E7.ARMS for a in SMOKE.grid.alpha for s in SMOKE.grid.seed_list)
    report = (workdir / "report.md").read_text()
    assert "Stand-ins: digits for CIFAR-10" in report and "predicted labels, no clipping" in report
    assert "PGD adversarial training (linf, ε 0.05, 3 steps of 0.0125, 50% of each batch)" in report
    config = json.loads((workdir / "config.json").read_text())
    assert config["train"]["adversarial"]["labels"] == "predicted" and config["train"]["adversarial"]["clip"] is False


def test_smoke_relative_ra_is_each_members_ra_over_its_seeds_alpha_0_member_in_its_arm(smoke):
    workdir, out, rows = smoke
    ra, rel = E7.headline_ra(SMOKE.eval, "linf"), "ra_relative[norm=linf]"
    base = {(r["population"], r["seed"]): float(r[ra]) for r in rows if float(r["alpha"]) == 0.0}
    for r in rows:
        b = base[(r["population"], r["seed"])]
        if b > 0:                   # members.csv holds the float64 values (repr): the same division, exactly
            assert float(r[rel]) == float(r[ra]) / b
        else:
            assert r[rel] == ""
    for r in rows:
        assert float(r[ra]) <= float(r["clean_acc_points"]) + 1e-12


def test_smoke_figure_draws_each_curve_once_per_arm(smoke):
    workdir, out, rows = smoke
    with open(workdir / "figure_at_vs_alpha.csv") as f:
        fig = list(csv.DictReader(f))
    curves = {r["curve"] for r in fig if r["panel"].startswith("relative robust accuracy")}
    assert curves == {"RA(α) / RA(α = 0) (standard)", "RA(α) / RA(α = 0) (at)"}
    for arm in E7.ARMS:             # a curve holds its own arm's members only (the others are NaN: empty, not drawn)
        values = [r["value"] for r in fig if r["curve"] == f"RA(α) / RA(α = 0) ({arm})"]
        assert sum(v not in ("", "nan") for v in values) == sum(
            r["population"] == arm and r["ra_relative[norm=linf]"] != "" for r in rows) > 0
    for name in ("robust_acc_vs_eps_linf_standard", "robust_acc_vs_eps_linf_at"):
        assert (workdir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------------------------------
# The paper preset on stand-in CIFAR-10 archives

def test_paper_preset_runs_on_cifar10_archives(tmp_path):
    paper = E7.PRESETS["paper"].model
    assert (paper.width, tuple(paper.stage_sizes), paper.stem) == (64, (2, 2, 2, 2), "imagenet")
    data_dir = write_cifar10(tmp_path / "data")
    # two members per arm, two steps; width 8 and one block per stage (the layer metrics' SVDs and the attacks of
    # width 64 cost minutes; the full depth runs in resnet_row_sparsity's paper test)
    out = run_paper_preset(E7.STUDY, tmp_path / "run", data_dir, **{"grid.alpha": (0.0, 0.1), "grid.seeds": 1,
                                                                    "model.width": 8, **ONE_ATTACK, **SHALLOW})
    table = out["table"]
    assert sorted(set(table.coord("population").tolist())) == ["at", "standard"] and len(table) == 4
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    at = config["train"]["adversarial"]
    assert (at["eps"], at["step_size"], at["n_iter"], at["ratio"], at["labels"], at["clip"]) == (
        8 / 255, 2 / 255, 10, 0.5, "predicted", False)
    assert config["data"]["dataset"] == "cifar10" and config["model"]["stem"] == "imagenet"
    assert list(config["model"]["stage_sizes"]) == [1, 1, 1, 1] and config["train"]["optimizer"] == "sgd"
    rel = table["ra_relative[norm=linf]"]
    alpha0 = table.coord("alpha") == 0.0
    assert np.all((rel[alpha0] == 1.0) | np.isnan(rel[alpha0]))      # the baselines read 1 (NaN where RA = 0)


def test_a_primary_claim_on_relative_ra_is_gated_by_the_headlines_convergence():
    """``ra_relative`` comes from the headline attack: an unconverged headline on a member it reads makes a primary
    claim at most inconclusive, as for ``robust_acc`` (crobust.study.claims.HEADLINE_MEASUREMENTS)."""
    from crobust.study import MemberTable, Trend, judge
    from crobust.study.table import column

    t = MemberTable()
    rows = t.add_members([{"alpha": a, "seed": s} for s in range(4) for a in (0.0, 0.03, 0.1)])
    t.set(rows, column("ra_relative", norm="linf"), np.array([1.0, 0.95, 0.9] * 4))
    t.set(rows, column("headline_converged", norm="linf"), np.ones(12))
    claim = Trend("C7", "falls", "primary", x="alpha", y="ra_relative[norm=linf]", min_change=0.03)
    assert judge([claim], t)[0].verdict == "supported"
    t.set(rows, column("headline_converged", norm="linf"), np.r_[np.ones(5), 0.0, np.ones(6)])
    v = judge([claim], t)[0]
    assert (v.verdict, v.reason) == ("inconclusive", "not converged")
