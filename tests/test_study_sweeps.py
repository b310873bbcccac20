"""Sweep measures, curves over any qualifier, batch-norm recalibration and the measures' declared dependencies.

- Pruning ratio 0 multiplies every weight by one: the sweep's clean and robust accuracy then equal the unpruned
  robust-accuracy measure's exactly (the same compiled program on the same bits, the same attack stream).
- The removed fraction at per-layer ratio r is Σ_l ⌊r·out_l⌋ / Σ_l out_l (counted from the model's layers).
- A pruned member's accuracy equals evaluating ``crobust.pruning.prune``'s variables directly (same program: exact).
- Recalibration of Dense → BatchNorm: the running mean and variance become the mean over the K batches of each
  batch's mean and (biased) variance of x·W + b, computed here in float64 (float32 round-off of sums over 32
  points: 1e-5 relative).
"""

import csv
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import pruning
from crobust._errors import CrobustError
from crobust.data import load_dataset, to_float
from crobust.models import ResNet18
from crobust.recalibration import recalibrate_batch_stats
from crobust.study import Curves, blocks, dependencies
from crobust.study import measures as M
from crobust.study import measures_pruning as MP
from crobust.study.table import MemberTable, col
from crobust.training import TrainConfig, init_population
from crobust.training.population import FitResult

DATA = load_dataset("digits")
MODEL = ResNet18(10, stem="cifar", width=4, stage_sizes=(1, 1, 1, 1), mean=tuple(DATA.mean), std=tuple(DATA.std))
MEMBERS = [{"seed": 0}, {"seed": 1}]
EVAL = blocks.EvalConfig(n_points=24, eps_linf=(0.05,), headline_linf=0.05, attacks=("apgd-ce",), n_iter=3)


@functools.lru_cache(maxsize=None)
def _population():
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, max_steps=1, eval_every=1, patience=None)
    state = init_population(MODEL, DATA, cfg, MEMBERS)
    # a head 30× its initial size: logits of order 1, so pruning visibly moves predictions
    params = jax.tree_util.tree_map_with_path(lambda p, a: a * 30 if "head" in jax.tree_util.keystr(p) else a,
                                              state.params)
    state = state.replace(params=params, best_params=params)
    fit = FitResult(members=list(MEMBERS), state=state, history={}, wall_time=0.0, steps_run=0, compiles=0)
    pop = M.TrainedPopulation("bn", MODEL, list(MEMBERS), {}, fit, fit.best_params, fit.best_model_state)
    x = to_float(DATA.test_images[:EVAL.n_points])
    ctx = M.Context(EVAL, blocks.MeasureConfig(), DATA, x, jnp.asarray(DATA.test_labels[:EVAL.n_points], jnp.int32))
    return pop, ctx


def _columns(out):
    return {c.key: np.asarray(v) for c, v in out.items()}


@functools.lru_cache(maxsize=None)
def _sweep():
    pop, ctx = _population()
    return _columns(MP.pruning_sweep((0.0, 0.5), ("ratio", "global_ratio"), ("linf",))(ctx, pop))


def test_pruning_ratio_zero_equals_the_unpruned_measure():
    pop, ctx = _population()
    plain = _columns(M.robust_accuracy(("linf",))(ctx, pop))
    sweep = _sweep()
    for c in ("ratio", "global_ratio"):
        np.testing.assert_array_equal(sweep[col("pruned_robust_acc", norm="linf", criterion=c, ratio="0")],
                                      plain[col("robust_acc", norm="linf", eps="0.05")])
        np.testing.assert_array_equal(sweep[col("pruned_clean_acc", criterion=c, ratio="0")],
                                      plain["clean_acc_points"])
        assert sweep[col("pruned_removed", criterion=c, ratio="0")].tolist() == [0.0, 0.0]


def test_the_ladder_reads_its_first_rung_from_the_headline_evaluation(monkeypatch):
    """When the headline budget is the ladder's first rung, the ladder does not attack at it again: it reads the
    headline evaluation's per-attack flags (the same attacks, keys and points), and its record is the one it gets
    running the rung itself, up to the float rounding of another memory layout (one point of 24 at most)."""
    from crobust import evaluation
    pop, ctx = _population()
    e = dataclasses.replace(EVAL, convergence_iters=(3, 6))
    fresh = lambda: M.Context(e, blocks.MeasureConfig(), DATA, ctx.x, ctx.y)
    alone = fresh()
    M.budget_convergence(("linf",))(alone, pop)
    both = fresh()
    M.robust_accuracy(("linf",))(both, pop)
    calls = []
    real = evaluation.population_robust_accuracy
    monkeypatch.setattr(evaluation, "population_robust_accuracy",
                        lambda *a, **k: calls.append(k["attacks"]) or real(*a, **k))
    M.budget_convergence(("linf",))(both, pop)
    assert [c[0][1]["n_iter"] for c in calls] == [6]                  # the top rung only
    for a, b in zip(alone.log["convergence"], both.log["convergence"]):
        for rung_a, rung_b in zip(a["budgets"], b["budgets"]):
            assert abs(rung_a["robust_acc"][0] - rung_b["robust_acc"][0]) <= 1 / 24 + 1e-9
    # another first rung than the headline's budget: nothing to read, every rung runs
    calls.clear()
    other = M.Context(dataclasses.replace(e, convergence_iters=(2, 3, 6)), blocks.MeasureConfig(), DATA, ctx.x,
                      ctx.y, cache=both.cache)
    M.budget_convergence(("linf",))(other, pop)
    assert [c[0][1]["n_iter"] for c in calls] == [2, 3, 6]


def test_pruning_sweep_removes_the_stated_rows_and_measures_the_pruned_model():
    pop, ctx = _population()
    sweep = _sweep()
    outs = [s for s in pruning.row_norms(pop.variables).values()]
    expected = sum(int(np.floor(0.5 * o.shape[-1])) for o in outs) / sum(o.shape[-1] for o in outs)
    np.testing.assert_allclose(sweep[col("pruned_removed", criterion="ratio", ratio="0.5")], [expected] * 2,
                               rtol=1e-12)
    pruned, _ = pruning.prune(pop.variables, ratio=0.5)
    direct = [float(jnp.mean(jnp.argmax(pop.apply_fn(jax.tree.map(lambda a: a[m], pruned), ctx.x), -1) == ctx.y))
              for m in range(2)]
    np.testing.assert_allclose(sweep[col("pruned_clean_acc", criterion="ratio", ratio="0.5")], direct, atol=1e-6)


def test_pruning_sweep_refuses_bad_ratios_and_criteria():
    with pytest.raises(CrobustError, match=r"\[0, 1\)"):
        MP.pruning_sweep((0.0, 1.0))
    with pytest.raises(CrobustError, match="unknown pruning criterion"):
        MP.pruning_sweep((0.5,), ("largest",))


class _DenseBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(3, name="dense")(x.reshape(x.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train, momentum=0.8, name="bn")(h)


def test_recalibration_sets_the_mean_of_the_batch_statistics():
    model = _DenseBN()
    x = jax.random.uniform(jax.random.key(0), (4, 32, 5))                 # K = 4 batches of 32
    variables = model.init(jax.random.key(1), x[0])
    stale = jax.tree.map(lambda a: a + 7.0, variables["batch_stats"])      # far from any batch's statistics
    out = recalibrate_batch_stats(model, {**variables, "batch_stats": stale}, x)
    w = np.asarray(variables["params"]["dense"]["kernel"], np.float64)
    b = np.asarray(variables["params"]["dense"]["bias"], np.float64)
    h = np.asarray(x, np.float64) @ w + b                                  # (K, B, 3)
    np.testing.assert_allclose(out["batch_stats"]["bn"]["mean"], h.mean(1).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["batch_stats"]["bn"]["var"], h.var(1).mean(0), rtol=1e-5, atol=1e-6)
    assert out["params"] is variables["params"]
    with pytest.raises(CrobustError, match="batch norm"):
        recalibrate_batch_stats(model, {"params": variables["params"]}, x)


def test_curves_draw_any_qualifier(tmp_path):
    table = MemberTable()
    rows = table.add_members([{"alpha": 0.0, "seed": 0}, {"alpha": 0.0, "seed": 1}, {"alpha": 0.1, "seed": 0}])
    for r, values in (("0", [0.8, 0.6, 0.9]), ("0.5", [0.4, 0.2, 0.1])):
        table.set(rows, M.column("pruned_robust_acc", norm="linf", criterion="ratio", ratio=r), values)
        table.set(rows, M.column("pruned_robust_acc", norm="linf", criterion="global_ratio", ratio=r), [0, 0, 0])
    fig = Curves("ra_vs_ratio", measurement="pruned_robust_acc", over="ratio",
                 fixed=(("norm", "linf"), ("criterion", "ratio")))
    png = fig.draw(table, tmp_path)
    with open(png.with_suffix(".csv")) as f:
        got = {(r["curve"], float(r["x"])): float(r["mean"]) for r in csv.DictReader(f)}
    assert got == pytest.approx({("alpha=0", 0.0): 0.7, ("alpha=0", 0.5): 0.3, ("alpha=0.1", 0.0): 0.9,
                                 ("alpha=0.1", 0.5): 0.1})
    with pytest.raises(CrobustError, match="no column"):
        Curves("none", measurement="pruned_robust_acc", over="ratio", fixed=(("criterion", "epsilon"),)).draw(
            table, tmp_path)


def _named(name, **kw):
    f = lambda ctx, pop: {}
    f.__qualname__ = name
    return dependencies.declare(f, **kw)


def test_measures_run_in_dependency_order_whatever_the_listed_order():
    a = _named("a", requires=("x_adv/l2",))
    b = _named("b")
    c = _named("c", provides=("x_adv/l2",))
    assert [m.__qualname__ for m in dependencies.order([a, b, c])] == ["b", "c", "a"]
    assert [m.__qualname__ for m in dependencies.order([c, b, a])] == ["c", "b", "a"]    # already fine: unchanged
    real = dependencies.order([M.weaker_evaluation(("l2",)), M.representation_shift(("l2",)),
                               M.robust_accuracy(("l2",))])
    assert dependencies.provides(real[0]) == ("x_adv/l2", "ra_headline/l2", "robust_flags/l2")


def test_measure_dependencies_are_checked_before_any_work():
    with pytest.raises(CrobustError, match="x_adv/linf"):
        dependencies.order([M.representation_shift(("linf",)), M.robust_accuracy(("l2",))])
    with pytest.raises(CrobustError, match="both provide"):
        dependencies.order([M.robust_accuracy(("l2",)), M.robust_accuracy(("l2",))])
    with pytest.raises(CrobustError, match="cycle"):
        dependencies.order([_named("p", provides=("u",), requires=("v",)),
                            _named("q", provides=("v",), requires=("u",))])


def test_every_measure_factory_is_in_the_catalogue():
    import inspect

    import crobust.study as S

    modules = [S.measures, S.measures_bounds, S.measures_boundary, S.measures_compressibility, S.measures_pruning,
               S.measures_universal]
    for module in modules:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            src = inspect.getsource(fn)
            if "def measure(" in src:                          # a factory: it returns a measure
                assert S.MEASURES.get(name) is fn, f"{module.__name__}.{name} is not in crobust.study.MEASURES"
