"""Study measures on a batch-norm population: every measure runs the model in eval mode with each member's running
statistics (never batch statistics, never without the statistics), equals evaluating with
``crobust.training.for_evaluation`` directly, and a second evaluation compiles nothing.

The population: a ResNet-18 (CIFAR stem) at width 2 with one block per stage, on 8×8 digits, 2 members, untrained;
its running statistics are set to member-specific values far from the initial ones (mean 0, variance 1) and from
any batch's statistics, and its head is scaled up (logits of order 1), so eval mode, train mode (batch statistics)
and dropped statistics give clearly different losses, margins and predictions. Results are compared with the same program run directly (identical operation sequence: exact), or with a
direct computation of the same logits outside the measure (float32 round-off of a reduction over
≤ 360 points: 1e-5 relative); the other modes must differ by far more (1e-2).
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.evaluation as E
from crobust import training
from crobust.data import load_dataset, to_float
from crobust.models import ResNet18
from crobust.study import blocks
from crobust.study import measures as M
from crobust.training import TrainConfig, init_population
from crobust.training import loop as _loop
from crobust.training.population import EvalApply, FitResult
from _margins import assert_far_from_ties

DATA = load_dataset("digits")
MODEL = ResNet18(10, stem="cifar", width=2, stage_sizes=(1, 1, 1, 1), mean=tuple(DATA.mean), std=tuple(DATA.std))
MEMBERS = [{"seed": 0}, {"seed": 1}]
EVAL = blocks.EvalConfig(n_points=24, eps_linf=(0.0, 0.05), headline_linf=0.05, attacks=("apgd-ce", "square"),
                         n_iter=4, n_queries=10)


@functools.lru_cache(maxsize=None)
def _population():
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=32, max_steps=1, eval_every=1, patience=None)
    state = init_population(MODEL, DATA, cfg, MEMBERS)
    leaves, tree = jax.tree.flatten(state.model_state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.model_state)[0]]
    new = [0.5 + 1.5 * jax.random.uniform(k, a.shape) if "var" in p else 0.3 * jax.random.normal(k, a.shape)
           for k, a, p in zip(keys, leaves, paths)]
    stats = jax.tree.unflatten(tree, new)
    # a head 30× its initial size: logits of order 1, so the modes' losses and margins differ clearly
    params = jax.tree_util.tree_map_with_path(lambda p, a: a * 30 if "head" in jax.tree_util.keystr(p) else a,
                                              state.params)
    state = state.replace(params=params, best_params=params, model_state=stats, best_model_state=stats)
    fit = FitResult(members=list(MEMBERS), state=state, history={}, wall_time=0.0, steps_run=0, compiles=0)
    pop = M.TrainedPopulation("bn", MODEL, list(MEMBERS), {}, fit, fit.best_params, fit.best_model_state)
    x = to_float(DATA.test_images[:EVAL.n_points])
    ctx = M.Context(EVAL, blocks.MeasureConfig(), DATA, x, jnp.asarray(DATA.test_labels[:EVAL.n_points], jnp.int32))
    return fit, pop, ctx


def _member(tree, m):
    return jax.tree.map(lambda a: a[m], tree)


def _columns(out):
    return {c.key: np.asarray(v) for c, v in out.items()}


@functools.partial(jax.jit, static_argnames="mode")
def _logits(variables, x, mode):
    """Member logits in eval mode, train mode (batch statistics) or with the running statistics dropped (reset to
    their initial values: what a measure that passed the parameters alone to a fresh state would see)."""
    if mode == "eval":
        return MODEL.apply(variables, x, train=False)
    if mode == "train":
        return MODEL.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    fresh = MODEL.init(jax.random.key(0), x[:1])
    return MODEL.apply({"params": variables["params"], "batch_stats": fresh["batch_stats"]}, x, train=False)


def _median_margin(z, y):
    true = np.take_along_axis(z, y[:, None], axis=1)[:, 0]
    other = np.max(np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z), axis=1)
    return np.median(true - other)


def test_eval_apply_is_a_stable_callable():
    fit, _, _ = _population()
    a, va = training.for_evaluation(MODEL, fit)
    b, _ = training.eval_apply(ResNet18(10, stem="cifar", width=2, stage_sizes=(1, 1, 1, 1), mean=tuple(DATA.mean),
                                        std=tuple(DATA.std)), fit.best_params, fit.best_model_state)
    assert isinstance(a, EvalApply) and a == b and hash(a) == hash(b)
    assert a != EvalApply(ResNet18(10, width=4)) and set(va) == {"params", "batch_stats"}
    v0 = _member(va, 0)
    x = to_float(DATA.test_images[:4])
    np.testing.assert_array_equal(a(v0, x), MODEL.apply(v0, x, train=False))


def test_measures_use_running_statistics_and_match_for_evaluation():
    fit, pop, ctx = _population()
    apply_fn, variables = training.for_evaluation(MODEL, fit)
    x_test, y_test = to_float(DATA.test_images), np.asarray(DATA.test_labels)
    x, y = ctx.x, np.asarray(ctx.y)

    # clean accuracy and loss on the whole test set
    clean = _columns(M.clean_accuracy()(ctx, pop))
    loss, acc = training.evaluate(apply_fn, variables, DATA.test_images, DATA.test_labels)
    np.testing.assert_array_equal(clean["test_loss"], np.asarray(loss))
    np.testing.assert_array_equal(clean["clean_acc"], np.asarray(acc))
    for m in range(2):
        v = _member(variables, m)
        ce = lambda z: float(np.mean(jax.nn.logsumexp(z, -1) - np.take_along_axis(np.asarray(z), y_test[:, None],
                                                                                   1)[:, 0]))
        assert clean["test_loss"][m] == pytest.approx(ce(_logits(v, x_test, "eval")), rel=1e-5)
        for other in ("train", "dropped"):
            assert abs(clean["test_loss"][m] - ce(_logits(v, x_test, other))) > 1e-2, other

    # median margin on the evaluation points
    margins = _columns(M.margins_and_head()(ctx, pop))["median_margin"]
    for m in range(2):
        v = _member(variables, m)
        assert margins[m] == pytest.approx(_median_margin(np.asarray(_logits(v, x, "eval")), y), rel=1e-5, abs=1e-6)
        for other in ("train", "dropped"):
            assert abs(margins[m] - _median_margin(np.asarray(_logits(v, x, other)), y)) > 1e-3, other

    # robust accuracy: the same program as evaluating for_evaluation's (apply_fn, variables) directly
    ra = _columns(M.robust_accuracy(("linf",))(ctx, pop))
    keys = M.member_eval_keys(pop.seeds, "attack/linf")
    attacks = M.attack_list(EVAL, DATA.num_classes)
    direct = E.population_robust_accuracy(apply_fn, variables, x, y, eps=list(EVAL.eps_linf), norm="linf",
                                          attacks=attacks, on_fail="ignore", member_keys=keys,
                                          return_adv_at=[EVAL.headline_linf])
    for m, r in enumerate(direct):
        assert ra["robust_acc[norm=linf,eps=0.05]"][m] == r.robust_acc[1]
        assert ra["clean_acc_points"][m] == r.clean_acc
        np.testing.assert_array_equal(ctx.cache[("bn", "x_adv", "linf")][m], r.adversarial(EVAL.headline_linf))
        assert_far_from_ties(_logits(_member(variables, m), x, "eval"))
        eval_correct = np.argmax(np.asarray(_logits(_member(variables, m), x, "eval")), -1) == y
        np.testing.assert_array_equal(r.clean_correct, eval_correct)
    # the attacked points' clean flags could not have come from batch statistics or dropped statistics
    for other in ("train", "dropped"):
        flags = [np.argmax(np.asarray(_logits(_member(variables, m), x, other)), -1) == y for m in range(2)]
        assert any((f != r.clean_correct).any() for f, r in zip(flags, direct)), other


def test_second_evaluation_compiles_nothing():
    _, pop, ctx = _population()
    measures = (M.clean_accuracy(), M.robust_accuracy(("linf",)))
    for measure in measures:
        measure(ctx, pop)
    sizes = (E._run_population._cache_size(), _loop._evaluate_members._cache_size())
    compiled = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Finished XLA compilation" in record.getMessage():
                compiled.append(record.getMessage())

    handler = Count()
    logging.getLogger("jax").addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        # a new population object around the same model: eval_apply builds a new (equal) callable
        again = M.TrainedPopulation("bn", MODEL, pop.members, {}, pop.fit, pop.params, pop.model_state)
        for measure in measures:
            measure(ctx, again)
    finally:
        jax.config.update("jax_log_compiles", False)
        logging.getLogger("jax").removeHandler(handler)
    assert (E._run_population._cache_size(), _loop._evaluate_members._cache_size()) == sizes
    assert not compiled, compiled
