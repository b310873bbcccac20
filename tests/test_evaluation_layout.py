"""The evaluation's memory layout (crobust.evaluation_layout): the ε grid looped and the points chunked give the
per-point results of the vmapped program, a point's random numbers do not depend on the chunking, ART's APGD is
never chunked, and the automatic choice loops for a model over the budget and vmaps a small MLP.

Tolerance of the layout comparisons: the layouts run the same per-point operations, but the matmuls see batches of
C (a chunk) or N (all points, or E·N vmapped over ε) rows, which a CPU or GPU kernel may round differently
(float32, ~1e-7 relative). APGD and PGD step along sign(∇), so a gradient entry within round-off of 0 can send one
point down another trajectory — a chaotic point whose final flag may differ. We expect none (on these CPU kernels
the runs are bitwise equal) and allow at most 2 % of the points per radius, the bound of
tests/test_attacks_linear.py::test_chunking_only_changes_speed; a wrong layout (another point's random numbers,
padding counted, a radius dropped) changes far more.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.evaluation as E
from crobust import evaluation_layout as L
from crobust._errors import CrobustError
from crobust.attacks import square
from crobust.models import MLP, ResNet18
from test_attacks_mlp import trained_mlp  # the session-cached trained digits MLP (tests/ is on sys.path)
from _margins import assert_far_from_ties

GiB = 2 ** 30
CHAOTIC = 0.02


def _agree(a, b):
    """Fraction of points whose flags agree, the worst radius."""
    return float(np.min(np.mean(np.asarray(a) == np.asarray(b), axis=-1)))


# --------------------------------------------------------------------------------------------------------------
# The chooser, with numbers

def test_choose_layout_vmaps_what_fits_then_loops_eps_then_chunks_points():
    # an MLP point: 10 kB; 360 points × 6 radii = 21.6 MB ≪ 2 GiB → everything vmapped
    assert L.choose_layout(10_000, 360, 6, budget=2 * GiB) == (False, None)
    # 1 MB a point, 1000 points: 6 GB for the grid > 2 GiB ≥ 1 GB for one radius → loop ε, all points at once
    assert L.choose_layout(10 ** 6, 1000, 6, budget=2 * GiB) == (True, None)
    # 100 MB a point (a ResNet-18 under APGD-T): one radius needs 100 GB → chunks of ⌊2 GiB / 100 MB⌋ = 21 points
    assert L.choose_layout(10 ** 8, 1000, 6, budget=2 * GiB) == (True, 21)
    # 8 members attacked at once share the budget: ⌊2 GiB / (8 · 100 MB)⌋ = 2
    assert L.choose_layout(10 ** 8, 1000, 6, members=8, budget=2 * GiB) == (True, 2)
    # one radius: nothing to loop over
    assert L.choose_layout(10 ** 8, 1000, 1, budget=2 * GiB) == (False, 21)
    with pytest.raises(CrobustError, match="one evaluation point"):
        L.choose_layout(3 * GiB, 10, 2, budget=2 * GiB)


def test_point_bytes_follow_the_model_and_the_attacks():
    model = MLP(num_classes=10, width=64, depth=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    x = jnp.zeros((5, 8, 8, 1))
    a = L.activation_bytes(functools.partial(model.apply, params), x)
    # every intermediate of one point: normalised input (64), 3 hidden layers (pre-activation and ReLU, 64 each),
    # logits (10), in float32 — at least those, and no parameter-sized (64 × 64) value counted per point
    assert 4 * (64 + 3 * 2 * 64 + 10) <= a < 4 * 64 * 64
    specs = E._attack_specs((("apgd-t", {"n_target_classes": 9, "n_restarts": 2}), "square"), 10)
    assert max(L.runs_in_flight(n, kw) for n, _, kw in specs) == 18
    assert L.point_bytes(a, 64, 18) == 18 * (2 * a + 8 * 4 * 64)


def test_auto_layout_loops_for_a_large_model_and_vmaps_a_small_mlp():
    model, params, x, _ = trained_mlp()
    specs = E._attack_specs(E.DEFAULT_ATTACKS, 10)
    mlp = L.resolve_layout("auto", "auto", functools.partial(model.apply, params), x[:360], specs, 6,
                           budget=L.EVAL_MEMORY_BUDGET_BYTES)
    assert mlp == (False, None)
    # a ResNet-18 of width 8 on 1000 CIFAR-sized points under the standard ensemble (9 targets): over 2 GiB
    resnet = ResNet18(10, stem="cifar", width=8)
    shapes = jax.eval_shape(resnet.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)      # values do not matter here
    big = jnp.zeros((1000, 32, 32, 3))
    eps_loop, chunk = L.resolve_layout("auto", "auto", functools.partial(resnet.apply, variables), big, specs, 6,
                                       budget=L.EVAL_MEMORY_BUDGET_BYTES)
    assert eps_loop and chunk is not None and 1 <= chunk < 1000
    # explicit values win over the estimate
    assert L.resolve_layout(False, None, None, big, specs, 6) == (False, None)
    assert L.resolve_layout("auto", 7, functools.partial(model.apply, params), x[:360], specs, 6,
                            budget=L.EVAL_MEMORY_BUDGET_BYTES) == (False, 7)
    for bad in (dict(eps_loop="yes"), dict(point_chunk=0), dict(point_chunk=2.5)):
        with pytest.raises(CrobustError):
            L.check_layout(bad.get("eps_loop", "auto"), bad.get("point_chunk", "auto"))


# --------------------------------------------------------------------------------------------------------------
# Same results in every layout

def test_square_draws_do_not_depend_on_the_chunking():
    """Square's start and per-query draws are made for all points and sliced: point n's search is the same in
    chunks of 7 (last chunk padded) as in one batch. Fresh draws per chunk would change nearly every point."""
    model, params, x, y = trained_mlp()
    f = jax.tree_util.Partial(model.apply, params)
    run = lambda chunk: np.asarray(square(f, x[:40], y[:40], jax.random.key(1), eps=0.1, n_queries=60,
                                          chunk_size=chunk)).reshape(40, -1)
    whole, chunked = run(None), run(7)
    moved = np.any(whole != np.asarray(x[:40]).reshape(40, -1), axis=1)
    assert moved.sum() > 20                                            # the comparison has something to compare
    assert np.mean(np.all(np.isclose(whole, chunked, atol=1e-6), axis=1)) >= 1 - CHAOTIC


def test_looped_and_chunked_evaluation_equals_the_vmapped_one_on_an_mlp():
    model, params, x, y = trained_mlp()
    x, y = x[:50], y[:50]
    # APGD-T stands for the APGD family (same runs code), PGD for restarts counted in its chunks, FGSM for the
    # chunks made here, Square for sliced draws; ART's APGD runs unchunked (test_art_apgd_is_never_chunked…)
    attacks = (("apgd-t", {"n_iter": 8, "n_target_classes": 2}), ("pgd", {"n_iter": 4, "n_restarts": 2}), "fgsm",
               ("square", {"n_queries": 40}))
    eps = [0.05, 0.1]
    run = lambda loop, chunk: E.robust_accuracy(model.apply, x, y, jax.random.key(2), params=params, eps=eps,
                                                attacks=attacks, on_fail="ignore", eps_loop=loop, point_chunk=chunk,
                                                return_adv_at=[0.05])
    ref, looped = run(False, None), run(True, 7)                        # 50 = 7 chunks of 7 + 1 padded
    assert looped.layout == {"eps_loop": True, "point_chunk": 7} and ref.layout == {"eps_loop": False,
                                                                                      "point_chunk": None}
    assert_far_from_ties(model.apply(params, x))
    np.testing.assert_array_equal(ref.clean_correct, looped.clean_correct)
    assert 0 < ref.robust_acc[0] < ref.clean_acc                       # attacks break some points, not all
    assert _agree(ref.robust_flags, looped.robust_flags) >= 1 - CHAOTIC
    for a in ref.attack_flags:
        assert _agree(ref.attack_flags[a], looped.attack_flags[a]) >= 1 - CHAOTIC, a
    same = np.all(np.isclose(ref.adversarial(0.05), looped.adversarial(0.05), atol=1e-6).reshape(50, -1), axis=1)
    assert same.mean() >= 1 - CHAOTIC
    for k in ("zero_gradient_points_ce", "nan_count", "min_value", "max_value"):
        assert ref.checks[k] == looped.checks[k], k
    assert ref.checks["max_perturbation_excess"] == pytest.approx(looped.checks["max_perturbation_excess"], abs=1e-6)


class TinyCNN(nn.Module):
    """conv3×3(6) → ReLU → conv3×3(6, stride 2) → ReLU → flatten → dense(10): random weights already give
    input-dependent predictions (no global pooling to average the input away)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_population_layouts_agree_on_a_tiny_cnn():
    """A tiny CNN population of 2: vmapped grid and all points vs the ε loop and chunks of 8 (last one padded).
    Labels are member 0's own predictions, so every point of member 0 is correct and attacked."""
    model = TinyCNN()
    x = jax.random.uniform(jax.random.key(3), (30, 8, 8, 3))
    params = jax.vmap(lambda k: model.init(k, x[:1]))(jax.random.split(jax.random.key(4), 2))
    y = jnp.argmax(model.apply(jax.tree.map(lambda v: v[0], params), x), -1)
    for m in range(2):         # labels and clean flags come from other programs than the evaluation's
        assert_far_from_ties(model.apply(jax.tree.map(lambda v: v[m], params), x))
    attacks = (("apgd-t", {"n_iter": 6, "n_target_classes": 2}),)
    run = lambda loop, chunk: E.population_robust_accuracy(model.apply, params, x, y, jax.random.key(5),
                                                           eps=[0.02, 0.1], attacks=attacks, on_fail="ignore",
                                                           eps_loop=loop, point_chunk=chunk)
    ref, looped = run(False, None), run(True, 8)
    assert ref[0].clean_acc == 1.0 and ref[0].robust_acc[1] < 0.9 and len(set(np.asarray(y).tolist())) > 2
    for r, s in zip(ref, looped):
        np.testing.assert_array_equal(r.clean_correct, s.clean_correct)
        assert _agree(r.robust_flags, s.robust_flags) >= 1 - CHAOTIC
        assert s.layout == {"eps_loop": True, "point_chunk": 8, "execution": r.layout["execution"]}
        assert r.layout["execution"] in ("program", "host_steps")          # auto: by backend and model kind


def test_art_apgd_is_never_chunked_and_fgsm_is():
    seen = []

    def fake(logits_fn, x, y, key, *, eps, norm, **kwargs):
        seen.append((x.shape[0], kwargs.get("chunk_size")))
        return x

    x, y = jnp.zeros((10, 2, 2, 1)), jnp.zeros((10,), jnp.int32)
    E._attack("apgd-art", fake, {}, None, x, y, None, 0.1, "linf", 4)
    assert seen == [(10, None)]                                        # the whole batch: its stop rule couples it
    seen.clear()
    E._attack("fgsm", fake, {}, None, x, y, None, 0.1, "linf", 4)
    assert [n for n, _ in seen] == [4]                                 # traced once per chunk shape (lax.map)
    seen.clear()
    E._attack("apgd-ce", fake, {"n_restarts": 3}, None, x, y, None, 0.1, "linf", 4)
    assert seen == [(10, 4)]                                           # the attack chunks itself (its draws first)
    seen.clear()
    E._attack("pgd", fake, {"n_restarts": 3}, None, x, y, None, 0.1, "linf", 4)
    assert seen == [(10, 12)]                                          # PGD counts points × restarts
