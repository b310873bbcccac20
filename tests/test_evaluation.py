"""crobust.evaluation: the RobustBench-style record, per-point worst case, ε grids, populations, and the checks."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.evaluation as E
from crobust._errors import CrobustError
from crobust.attacks import fgsm
from _margins import assert_far_from_ties
from test_attacks_mlp import trained_mlp  # the same session-cached trained MLP (tests/ is on sys.path)

FAST = (("apgd-ce", {"n_iter": 30}), ("square", {"n_queries": 300}))


@functools.lru_cache(maxsize=None)
def _population():
    """3 members: the digits MLP of test_attacks_mlp (trained once per session) with its weights perturbed by
    10 % multiplicative noise per member; 200 held-out digits (clean accuracy ≈ 0.9, some points misclassified)."""
    model, params, x, y = trained_mlp()
    keys = jax.random.split(jax.random.key(0), 3)
    members = jax.tree.map(lambda p: jnp.stack([p * (1 + 0.1 * jax.random.normal(k, p.shape)) for k in keys]),
                           params)
    return model, members, x[:200], y[:200]


def _member(params, m):
    return jax.tree.map(lambda p: p[m], params)


def test_report_is_consistent_json_able_and_robustbench_shaped():
    model, params, x, y = _population()
    f = functools.partial(model.apply, _member(params, 0))
    eps = [0, 8 / 255, 32 / 255, 0.5]
    report = E.robust_accuracy(f, x, y, jax.random.key(0), eps=eps, norm="linf", attacks=FAST, on_fail="ignore")
    clean = np.asarray(jnp.argmax(f(x), -1) == y)
    assert_far_from_ties(f(x))                          # eager decisions vs the jitted program's, compared exactly
    assert report.clean_acc == pytest.approx(clean.mean()) and 0.8 < report.clean_acc < 1
    np.testing.assert_array_equal(report.clean_correct, clean)
    # ε = 0 gives clean accuracy exactly, with the same points
    assert report.robust_acc[0] == report.clean_acc
    np.testing.assert_array_equal(report.robust_flags[0], clean)
    # per-point worst case: robust = clean ∧ every attack's flag; accuracies are their means
    every = np.logical_and.reduce([report.attack_flags[a] for a in report.attack_flags])
    np.testing.assert_array_equal(report.robust_flags, every & clean)
    np.testing.assert_allclose(report.robust_acc, report.robust_flags.mean(1))
    assert report.robust_acc_after["square"] == report.robust_acc
    for a in report.attack_acc:
        assert all(r <= s for r, s in zip(report.robust_acc, report.attack_acc[a]))
    assert list(report.robust_acc) == sorted(report.robust_acc, reverse=True) and report.robust_acc[2] < 1
    assert report.robust_acc[-1] <= 0.05 and report.checks["max_perturbation_excess"] <= 1e-6
    info = report.model_info(1, name="mlp")
    assert info["eps"] == "8/255" and info["threat_model"] == "Linf" and info["name"] == "mlp"
    assert info["clean_acc"] == f"{100 * report.clean_acc:.2f}" and isinstance(info["unreliable"], bool)
    assert report.eps_str == ("0", "8/255", "32/255", "0.5")
    record = json.loads(json.dumps(report.to_dict(per_point=True)))
    assert record["attacks"][0]["settings"]["n_iter"] == 30 and len(record["robust_flags"][0]) == len(y)


def test_population_equals_a_loop_over_members():
    """One compiled call for 3 members × 2 ε equals a Python loop over members of the single-model program
    (``robust_flags``, the array core of ``robust_accuracy``)."""
    model, params, x, y = _population()
    eps = [8 / 255, 32 / 255]
    attacks = (("apgd-ce", {"n_iter": 30}), "fgsm")
    key = jax.random.key(3)
    together = E.population_robust_accuracy(model.apply, params, x, y, key, eps=eps, attacks=attacks,
                                            on_fail="ignore")
    assert len(together) == 3
    single = jax.jit(lambda p, k: E.robust_flags(functools.partial(model.apply, p), x, y, k, jnp.asarray(eps),
                                                 attacks=attacks))
    for m in range(3):
        alone = single(_member(params, m), jax.random.fold_in(key, m))
        assert_far_from_ties(model.apply(_member(params, m), x))
        np.testing.assert_array_equal(together[m].clean_correct, np.asarray(alone["clean_correct"]))
        agree = np.mean(together[m].robust_flags == np.asarray(alone["robust"]))
        assert agree >= 1 - 1.5 / len(y), agree           # at most one borderline point may differ by rounding
    assert len({r.robust_acc for r in together}) > 1      # members differ
    assert 0 < together[0].robust_acc[1] < together[0].robust_acc[0] <= together[0].clean_acc


def _blocked_gradient_model():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    return lambda q: jax.lax.stop_gradient(q).reshape(q.shape[0], -1) @ w * 3.0


def test_gradient_masking_is_flagged_loudly():
    """A model that blocks gradients: zero gradients everywhere, the white-box attacks fail, Square does not."""
    f = _blocked_gradient_model()
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (100, 8, 8, 1)).astype(np.float32))
    y = jnp.argmax(f(x), -1)
    attacks = (("apgd-ce", {"n_iter": 10}), ("square", {"n_queries": 500}))
    with pytest.warns(E.RobustnessCheckWarning, match="Square beats the white-box"):
        report = E.robust_accuracy(f, x, y, jax.random.key(0), eps=[0.05], attacks=attacks)
    # (the second call reuses the compiled program: same logits_fn object)
    assert report.checks["zero_gradient_points_ce"] == 100 and not report.checks["passed"]
    assert any("zero gradients" in m for m in report.checks["failures"])
    assert report.model_info()["unreliable"] is True
    with pytest.raises(CrobustError, match="checks failed"):
        E.robust_accuracy(f, x, y, jax.random.key(0), eps=[0.05], attacks=attacks, on_fail="raise")


def _fake_attack(behaviour):
    def attack(logits_fn, x, y, key, *, eps, norm, **kwargs):
        if behaviour == "too_far":
            return jnp.clip(x + 2 * eps, 0, 1)
        if behaviour == "weaker_at_large_eps":            # strong below ε = 0.05, does nothing above
            return jnp.where(eps < 0.05, fgsm(logits_fn, x, y, eps=eps), x)
        return x                                          # "nothing": never perturbs
    return attack


@pytest.mark.parametrize("behaviour,message", [
    ("too_far", "perturbation exceeds eps"),
    ("weaker_at_large_eps", "increases with eps"),
    ("nothing", "grey image"),
])
def test_broken_attacks_are_caught_by_the_checks(monkeypatch, behaviour, message):
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    f = lambda q: q.reshape(q.shape[0], -1) @ w
    x = jnp.asarray(rng.uniform(0.2, 0.8, (60, 8, 8, 1)).astype(np.float32))
    y = jnp.argmax(f(x), -1)
    monkeypatch.setitem(E._ATTACKS, "fgsm", (_fake_attack(behaviour), {}))
    with pytest.warns(E.RobustnessCheckWarning, match=message):
        report = E.robust_accuracy(f, x, y, jax.random.key(0), eps=[0.02, 0.2, 0.5], attacks=("fgsm",))
    assert not report.checks["passed"]


def test_bad_input_names_the_argument():
    f = _blocked_gradient_model()
    x, y = jnp.full((4, 8, 8, 1), 0.5), jnp.array([0, 1, 2, 3])
    key = jax.random.key(0)
    with pytest.raises(CrobustError, match="attack"):
        E.robust_accuracy(f, x, y, key, eps=[0.1], attacks=("apgd-ce", "deepfool"))
    with pytest.raises(CrobustError, match="eps"):
        E.robust_accuracy(f, x, y, key, eps=[0.1, -0.1])
    with pytest.raises(CrobustError, match="norm"):
        E.robust_accuracy(f, x, y, key, eps=0.1, norm="l1")
    with pytest.raises(CrobustError, match="x must lie in"):
        E.robust_accuracy(f, x * 3, y, key, eps=0.1)
    with pytest.raises(CrobustError, match="y must have shape"):
        E.robust_accuracy(f, x, y[:3], key, eps=0.1)
    with pytest.raises(CrobustError, match="on_fail"):
        E.robust_accuracy(f, x, y, key, eps=0.1, on_fail="shout")
    with pytest.raises(CrobustError, match="attacks"):
        E.robust_accuracy(f, x, y, key, eps=0.1, attacks=(("pgd", {"eps": 0.3}),))
    with pytest.raises(CrobustError, match="leading member axis"):
        E.population_robust_accuracy(lambda p, q: f(q), {"w": jnp.ones(())}, x, y, key, eps=0.1)


def test_format_eps():
    assert [E.format_eps(e) for e in (0, 1 / 255, 8 / 255, 16 / 255, 0.5, 1.0, 0.3)] == \
        ["0", "1/255", "8/255", "16/255", "0.5", "1", "0.3"]


# ------------------------------------------------------------------------------------------ parameters as data

def test_stale_weights_a_closure_and_new_params_always_use_the_current_weights():
    """The issue's case: the same function object, weights changed in between — the second call must see them."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    x = jnp.asarray(rng.uniform(0, 1, (40, 8, 8, 1)).astype(np.float32))
    y = jnp.argmax(x.reshape(40, -1) @ w, -1)
    state = {"w": w}
    f = lambda q: q.reshape(q.shape[0], -1) @ state["w"]
    attacks = (("apgd-ce", {"n_iter": 3}),)
    kw = dict(eps=[0.0], attacks=attacks, on_fail="ignore")
    assert E.robust_accuracy(f, x, y, jax.random.key(0), **kw).clean_acc == 1.0
    size = E._run_one._cache_size()
    state["w"] = -w                                                    # every point now misclassified
    assert E.robust_accuracy(f, x, y, jax.random.key(0), **kw).clean_acc == 0.0
    assert E._run_one._cache_size() == size        # the closure's dict of arrays is traced data: no recompilation
    # apply_fn + params: one compiled program, new weights as data
    apply_fn = lambda p, q: q.reshape(q.shape[0], -1) @ p
    assert E.robust_accuracy(apply_fn, x, y, jax.random.key(0), params=w, **kw).clean_acc == 1.0
    size = E._run_one._cache_size()
    assert E.robust_accuracy(apply_fn, x, y, jax.random.key(0), params=-w, **kw).clean_acc == 0.0
    assert E._run_one._cache_size() == size
    # populations: params are traced
    both = E.population_robust_accuracy(apply_fn, jnp.stack([w, -w]), x, y, jax.random.key(0), **kw)
    assert [r.clean_acc for r in both] == [1.0, 0.0]


def test_default_ensemble_runs_on_binary_and_three_class_models():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(0, 1, (30, 4, 4, 1)).astype(np.float32))
    for classes in (2, 3):
        w = jnp.asarray(rng.normal(size=(16, classes)).astype(np.float32))
        apply_fn = lambda p, q: q.reshape(q.shape[0], -1) @ p
        y = jnp.argmax(x.reshape(30, -1) @ w, -1)
        attacks = (("apgd-ce", {"n_iter": 5}), ("apgd-t", {"n_iter": 5}), ("square", {"n_queries": 20}))
        report = E.robust_accuracy(apply_fn, x, y, jax.random.key(0), params=w, eps=[0.0, 0.3], attacks=attacks,
                                   on_fail="ignore")
        settings = {a["name"]: a["settings"] for a in report.attacks}
        assert settings["apgd-t"]["n_target_classes"] == classes - 1
        assert settings["apgd-t"]["loss"] == "ce-targeted"               # targeted DLR needs C >= 4
        assert f"{classes - 1} target" in report.description
        assert report.robust_acc[0] == report.clean_acc == 1.0 and report.robust_acc[1] < 1.0
    # flat feature vectors (N, d) too: Square reads them as one-row images
    report = E.robust_accuracy(apply_fn, x.reshape(30, 16), y, jax.random.key(0), params=w, eps=[0.3],
                               attacks="cheap", on_fail="ignore")
    assert report.robust_acc[0] < 1.0


def test_named_ensembles_and_their_description():
    from crobust.attacks import presets
    assert [a for a, _ in presets.ensemble("standard")] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    text = presets.describe("standard", num_classes=10)
    assert "APGD-CE (100 iterations" in text and "9 targets" in text and "5000 queries" in text
    assert "FAB-T (100 iterations, 9 targets)" in text
    assert "FAB-T (100 iterations, 2 targets)" in presets.describe("standard", num_classes=3)
    cheap = presets.describe("cheap", num_classes=10)
    assert "50 iterations" in cheap and "1000 queries" in cheap and "FAB-T left out" in cheap
    assert "ART-APGD" in presets.describe("art")


# ------------------------------------------------------------------------------------------ checks

def _fake_out_of_range(kind):
    def attack(logits_fn, x, y, key, *, eps, norm, **kwargs):
        if kind == "below_zero":                   # inside the ε-ball, outside [0, 1]
            return x - eps
        return x.at[0, 0, 0, 0].set(jnp.nan)        # one NaN entry
    return attack


@pytest.mark.parametrize("kind,check,message", [("below_zero", "inputs_in_unit_range", "leave \\[0, 1\\]"),
                                                ("nan", "no_nan", "NaN in adversarial inputs: 1 entries")])
def test_range_and_nan_failure_branches_fire(monkeypatch, kind, check, message):
    rng = np.random.default_rng(6)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    f = lambda q: q.reshape(q.shape[0], -1) @ w
    x = jnp.asarray(rng.uniform(0.0, 0.05, (20, 8, 8, 1)).astype(np.float32))
    y = jnp.argmax(f(x), -1)
    monkeypatch.setitem(E._ATTACKS, "fgsm", (_fake_out_of_range(kind), {}))
    with pytest.warns(E.RobustnessCheckWarning, match=message):
        report = E.robust_accuracy(f, x, y, jax.random.key(0), eps=[0.1], attacks=("fgsm",))
    assert report.checks["ran"][check] != "passed" and not report.checks["passed"]
    assert report.checks["ran"]["perturbation_within_eps"] == "passed"
    # what could not run says why: no black-box attack, no ε reaching the grey image, one ε only
    assert "black-box" in report.checks["not_run"]["gradient_masking"]
    assert "grey image" in report.checks["not_run"]["large_eps"]
    assert "two distinct eps" in report.checks["not_run"]["monotone_in_eps"]


def _quantised_model():
    """A gradient-masking model: its input layer rounds pixels to 4 levels (∇ = 0 almost everywhere)."""
    rng = np.random.default_rng(7)
    w = jnp.asarray(rng.normal(size=(64, 10)).astype(np.float32))
    return lambda q: (jnp.round(q * 3) / 3).reshape(q.shape[0], -1) @ w


def test_masking_check_fires_on_a_quantising_model_and_is_silent_on_a_plain_mlp():
    attacks = (("apgd-ce", {"n_iter": 20}), ("square", {"n_queries": 300}))
    f = _quantised_model()
    x = jnp.asarray(np.random.default_rng(8).uniform(0, 1, (100, 8, 8, 1)).astype(np.float32))
    y = jnp.argmax(f(x), -1)
    report = E.robust_accuracy(f, x, y, jax.random.key(0), eps=[0.1], attacks=attacks, on_fail="ignore")
    assert "Square beats the white-box" in report.checks["ran"]["gradient_masking"]
    assert report.checks["square_only_fraction"][0] > E.SQUARE_TOL
    model, params, xm, ym = _population()
    plain = E.robust_accuracy(model.apply, xm, ym, jax.random.key(0), params=_member(params, 0), eps=[8 / 255],
                              attacks=attacks, on_fail="ignore")
    assert plain.checks["ran"]["gradient_masking"] == "passed"
    assert 0 < plain.robust_acc[0] < plain.clean_acc                      # the attacks did work there


# ------------------------------------------------------------------------------------------ populations

def test_population_member_keys_mesh_and_adversarial_examples_at_named_eps():
    from crobust import parallel
    model, params, x, y = _population()
    x, y = x[:80], y[:80]
    attacks = (("apgd-ce", {"n_iter": 10}), ("fgsm", {}))
    keys = jax.random.split(jax.random.key(11), 3)
    eps = [4 / 255, 16 / 255]
    reports = E.population_robust_accuracy(model.apply, params, x, y, eps=eps, attacks=attacks, on_fail="ignore",
                                           member_keys=keys, mesh=parallel.member_mesh(), return_adv_at=[16 / 255])
    # member identity: reversing the population and its keys reverses the reports
    flipped = E.population_robust_accuracy(model.apply, jax.tree.map(lambda p: p[::-1], params), x, y, eps=eps,
                                           attacks=attacks, on_fail="ignore", member_keys=keys[::-1])
    for m in range(3):
        agree = np.mean(reports[m].robust_flags == flipped[2 - m].robust_flags)
        assert agree >= 1 - 1.5 / len(y)
    for m, r in enumerate(reports):
        x_adv = r.adversarial(16 / 255)
        assert x_adv.shape == x.shape and r.x_adv_eps == (16 / 255,)
        assert np.max(np.abs(x_adv - np.asarray(x))) <= 16 / 255 + 1e-6
        wrong = np.asarray(jnp.argmax(model.apply(_member(params, m), jnp.asarray(x_adv)), -1) != y)
        # the returned example breaks exactly the points the evaluation calls broken (up to rounding)
        assert np.mean(wrong == ~r.robust_flags[1]) >= 1 - 1.5 / len(y)
    with pytest.raises(CrobustError, match="not on the eps grid"):
        E.population_robust_accuracy(model.apply, params, x, y, jax.random.key(0), eps=eps, attacks=attacks,
                                     return_adv_at=[0.3])
    with pytest.raises(CrobustError, match="member_keys"):
        E.population_robust_accuracy(model.apply, params, x, y, eps=eps, attacks=attacks, member_keys=keys[:2])


def test_the_convergence_tolerance_is_half_a_percent_with_a_floor_of_one_new_break():
    # below 400 points 0.5 % is under 2 points: the floor allows one new break (strictly fewer than 2 points)
    assert E.convergence_tolerance_pp(100) == pytest.approx(2.0)        # 1 of 100 passes, 2 of 100 fail
    assert E.convergence_tolerance_pp(200) == pytest.approx(1.0)
    assert E.convergence_tolerance_pp(400) == pytest.approx(0.5)        # from here the percentage alone decides
    assert E.convergence_tolerance_pp(10_000) == pytest.approx(0.5)     # 49 of 10,000 pass, 50 fail
    assert E.convergence_tolerance_pp(100, min_points=1) == pytest.approx(1.0)   # no floor: zero new breaks at N=100
    assert E.convergence_tolerance_pp(1000, tolerance_pp=1.0) == pytest.approx(1.0)
    with pytest.raises(CrobustError, match="tolerance_min_points"):
        model, params, x, y = _population()
        E.budget_convergence(model.apply, jax.tree.map(lambda p: p[:1], params), x[:4], y[:4],
                             jax.random.split(jax.random.key(0), 1), eps=0.0, iterations=(1,), restarts=(1,),
                             attacks=("apgd-ce",), tolerance_min_points=0)


def test_budget_convergence_reports_each_doubling_and_the_verdict():
    model, params, x, y = _population()
    x, y = x[:60], y[:60]
    selected = jax.tree.map(lambda p: p[:2], params)
    keys = jax.random.split(jax.random.key(5), 2)
    out = E.budget_convergence(model.apply, selected, x, y, keys, eps=16 / 255, iterations=(1, 2, 4),
                               restarts=(1, 2), attacks=("apgd-ce",))
    assert len(out) == 2
    for m, member in enumerate(out):
        assert [(b["n_iter"], b["n_restarts"]) for b in member["budgets"]] == [(1, 1), (2, 1), (4, 1), (4, 2)]
        ra = {(b["n_iter"], b["n_restarts"]): b["robust_acc"][0] for b in member["budgets"]}
        # each rung recomputed alone: the per-point flags the ladder's statistics are made of
        flags = {(t, r): E.population_robust_accuracy(
            model.apply, jax.tree.map(lambda p: p[m:m + 1], selected), x, y, eps=16 / 255, member_keys=keys[m:m + 1],
            attacks=(("apgd-ce", {"n_iter": t, "n_restarts": r}),), on_fail="ignore")[0].robust_flags[0]
            for t, r in ra}
        assert all(np.mean(flags[b]) == pytest.approx(ra[b]) for b in ra)
        # new breaks: robust at every rung before on the path, broken at the axis' top rung
        assert member["last_doubling_pp"]["iterations"] == pytest.approx(
            100 * np.mean(flags[1, 1] & flags[2, 1] & ~flags[4, 1]))
        assert member["last_doubling_pp"]["restarts"] == pytest.approx(
            100 * np.mean(flags[1, 1] & flags[2, 1] & flags[4, 1] & ~flags[4, 2]))
        assert member["last_doubling_pp"]["queries"] is None           # no Square: no query axis
        # the first rung overstates robust accuracy by the points a stronger rung breaks
        assert member["budgets"][0]["overstated_pp"] == pytest.approx(
            100 * np.mean(flags[1, 1] & ~(flags[2, 1] & flags[4, 1] & flags[4, 2])))
        assert member["budgets"][-1]["overstated_pp"] == 0.0
        # 60 points: 0.5 % is under two points, so the tolerance is the floor, fewer than 2 of 60 points
        assert member["tolerance_pp"] == pytest.approx(100 * 2 / 60)
        assert member["converged"] == (max(member["last_doubling_pp"]["iterations"],
                                           member["last_doubling_pp"]["restarts"]) < 100 * 2 / 60)
        assert member["robust_acc"] == [ra[4, 2]]
    # the doublings of APGD on this MLP still find new breaks (one of the 60 points on a CPU: within the floor of 2
    # points, out of tolerance without it); the floor only ever adds convergence, never removes it
    moved = [max(m["last_doubling_pp"]["iterations"], m["last_doubling_pp"]["restarts"]) for m in out]
    assert max(moved) > 0
    strict = [d < E.convergence_tolerance_pp(60, min_points=1) for d in moved]
    assert all(m["converged"] for m, s in zip(out, strict) if s)
    # an attack that is exact from the first iteration (ε = 0: nothing to search) has converged
    zero = E.budget_convergence(model.apply, selected, x, y, keys, eps=0.0, iterations=(1, 2), restarts=(1, 2),
                                attacks=("apgd-ce",))
    assert all(m["converged"] for m in zero)


def test_budget_convergence_doubles_square_queries_on_an_axis_of_its_own():
    model, params, x, y = _population()
    x, y = x[:40], y[:40]
    selected = jax.tree.map(lambda p: p[:1], params)
    keys = jax.random.split(jax.random.key(6), 1)
    attacks = ("apgd-ce", ("square", {"n_queries": 2}))
    out = E.budget_convergence(model.apply, selected, x, y, keys, eps=16 / 255, iterations=(1, 2), restarts=(1,),
                               attacks=attacks, queries=(2, 8))[0]
    # Square at its first budget on the gradient rungs, then the largest gradient budget with Square's queries raised
    assert [(b["n_iter"], b["n_restarts"], b["n_queries"]) for b in out["budgets"]] == [(1, 1, 2), (2, 1, 2), (2, 1, 8)]
    ra = [b["robust_acc"][0] for b in out["budgets"]]
    flags = [E.population_robust_accuracy(model.apply, selected, x, y, eps=16 / 255, member_keys=keys,
                                          attacks=(("apgd-ce", {"n_iter": t, "n_restarts": 1}),
                                                   ("square", {"n_queries": q})), on_fail="ignore")[0].robust_flags[0]
             for t, q in ((1, 2), (2, 2), (2, 8))]
    assert [np.mean(f) for f in flags] == pytest.approx(ra)
    # the query axis' new breaks: robust at both earlier rungs, broken with Square's raised budget
    assert out["last_doubling_pp"]["queries"] == pytest.approx(100 * np.mean(flags[0] & flags[1] & ~flags[2]))
    assert "Square" in out["description"] and "8 queries" in out["description"]
    with pytest.raises(CrobustError, match="must hold 'square'"):
        E.budget_convergence(model.apply, selected, x, y, keys, eps=16 / 255, iterations=(1,), attacks=("apgd-ce",),
                             queries=(2, 4))


def test_budget_convergence_moves_fab_t_with_the_gradient_attacks():
    """FAB-T gets each rung's iterations and restarts, as APGD-T does (the paper presets' ladder)."""
    model, params, x, y = _population()
    x, y = x[:20], y[:20]
    selected = jax.tree.map(lambda p: p[:1], params)
    keys = jax.random.split(jax.random.key(7), 1)
    attacks = (("apgd-ce", {"n_iter": 1}), ("fab-t", {"n_iter": 1, "n_target_classes": 2}))
    out = E.budget_convergence(model.apply, selected, x, y, keys, eps=16 / 255, iterations=(1, 3), restarts=(1, 2),
                               attacks=attacks)[0]
    assert "FAB-T (3 iterations, 2 targets × 2 restarts)" in out["description"]


def test_art_variant_runs_as_a_named_attack_and_ensemble():
    model, params, x, y = _population()
    x, y = x[:60], y[:60]
    p0 = _member(params, 0)
    art = E.robust_accuracy(model.apply, x, y, jax.random.key(0), params=p0, eps=[16 / 255],
                            attacks=(("apgd-art", {"n_iter": 10, "n_restarts": 2}),), on_fail="ignore")
    assert "ART-APGD (10 iterations, 2 restarts" in art.description
    assert "gradient_masking" in art.checks["not_run"]
    assert 0 <= art.robust_acc[0] < art.clean_acc
    assert [a for a, _ in __import__("crobust.attacks.presets", fromlist=["x"]).ensemble("art")] == ["apgd-art"]


@pytest.mark.parametrize("norm,eps", [("linf", [0.0, 16 / 255]), ("l2", [0.5, 0.0])])
def test_the_zero_radius_is_not_attacked_and_reads_what_the_attacks_return_there(monkeypatch, norm, eps):
    """At ε = 0 the threat set is {x}: the reports hold there exactly what running the attacks gives (every output
    is x), but the compiled program is handed only the radii > 0."""
    model, params, x, y = _population()
    x, y = x[:60], y[:60]
    key = jax.random.key(5)
    zero = eps.index(0.0)
    ran = []
    real = E._run_one
    monkeypatch.setattr(E, "_run_one", lambda *a, **k: ran.append(np.asarray(a[4])) or real(*a, **k))
    report = E.robust_accuracy(model.apply, x, y, key, params=_member(params, 0), eps=eps, norm=norm, attacks=FAST,
                               on_fail="ignore", return_adv_at=eps)
    assert [r.tolist() for r in ran] == [[np.float32(max(eps))]]
    full = jax.jit(lambda p: E.robust_flags(functools.partial(model.apply, p), x, y, key, jnp.asarray(eps),
                                            norm=norm, attacks=FAST))(_member(params, 0))
    full = jax.tree.map(np.asarray, full)
    assert_far_from_ties(model.apply(_member(params, 0), x))
    np.testing.assert_array_equal(report.robust_flags[zero], full["robust"][zero])
    for i, name in enumerate(("apgd-ce", "square")):
        np.testing.assert_array_equal(report.attack_flags[name][zero], full["attack_correct"][zero, i])
    assert report.checks["max_perturbation_excess"] <= 1e-6 and report.checks["nan_count"] == 0
    assert (report.checks["min_value"], report.checks["max_value"]) == (float(full["min_value"].min()),
                                                                        float(full["max_value"].max()))
    np.testing.assert_array_equal(report.adversarial(0.0), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(full["x_adv"][zero]), np.asarray(x))
    other = 1 - zero                                     # the attacked radius: the same run up to rounding
    assert np.mean(report.robust_flags[other] == full["robust"][other]) >= 1 - 1.5 / len(y)
    assert 0 < report.robust_acc[other] < report.robust_acc[zero] == report.clean_acc
    # a population: the same fill, one leading member axis
    pop = E.population_robust_accuracy(model.apply, params, x, y, eps=eps, norm=norm, attacks=FAST,
                                       on_fail="ignore", member_keys=jax.random.split(key, 3), return_adv_at=[0.0])
    for r in pop:
        np.testing.assert_array_equal(r.robust_flags[zero], r.clean_correct)
        np.testing.assert_array_equal(r.adversarial(0.0), np.asarray(x))
        assert r.robust_acc[other] < r.robust_acc[zero]


def test_budget_convergence_reads_a_known_rung_instead_of_running_it(monkeypatch):
    """A rung given in ``known`` is not run: with the first rung's flags from the same call form the ladder's record
    is the one it computes itself (the same program on the same bits), and planted flags are what it reads."""
    model, params, x, y = _population()
    x, y = x[:60], y[:60]
    selected = jax.tree.map(lambda p: p[:2], params)
    keys = jax.random.split(jax.random.key(5), 2)
    kw = dict(eps=16 / 255, iterations=(1, 2), restarts=(1,), attacks=("apgd-ce",))
    alone = E.budget_convergence(model.apply, selected, x, y, keys, **kw)
    first = np.stack([r.robust_flags for r in E.population_robust_accuracy(
        model.apply, selected, x, y, eps=[16 / 255], member_keys=keys, attacks=(("apgd-ce", {"n_iter": 1}),),
        on_fail="ignore")])                                                            # (2, 1, 60)
    calls = []
    real = E.population_robust_accuracy
    monkeypatch.setattr(E, "population_robust_accuracy", lambda *a, **k: calls.append(k["attacks"]) or real(*a, **k))
    read = E.budget_convergence(model.apply, selected, x, y, keys, known={(1, 1, None): first}, **kw)
    assert [c[0][1]["n_iter"] for c in calls] == [2]                                 # only the top rung ran
    assert read == alone
    planted = E.budget_convergence(model.apply, selected, x, y, keys, known={(1, 1, None): np.ones_like(first)}, **kw)
    for m, r in enumerate(planted):                  # every point robust at the first rung: each top break is new
        assert r["budgets"][0]["robust_acc"] == [1.0]
        assert r["last_doubling_pp"]["iterations"] == pytest.approx(100 * (1 - alone[m]["robust_acc"][0]))
    for bad in ({(2, 1, None): first}, {(1, 1, None): first[:1]}, {(1, 1, None): first.astype(int)},
                {(3, 1, None): first}):
        with pytest.raises(CrobustError, match="known"):
            E.budget_convergence(model.apply, selected, x, y, keys, known=bad, **kw)
