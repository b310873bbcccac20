"""The bound-vs-gap study's computations (crobust.study.measures_bounds): each member's Corollary 3.3 bound is paired
with its own measured gap (a brute-force recomputation of one member, in numpy where the quantity has a closed
form), and Theorem 3.1's printed forms against analytic cases (docs/findings.md §1).

Tolerances: float32 forward passes on inputs of size ≈ 1 (losses to ~1e-6 relative); singular values from float32
SVD (~1e-6 relative); the Lipschitz bounds are products of three such factors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust.attacks import losses as attack_losses
from crobust.attacks.apgd import apgd_single_run
from crobust.data import load_dataset
from crobust.metrics import encoder_lipschitz
from crobust.models import LowRankMLP
from crobust.study import blocks
from crobust.study import measures as M
from crobust.study import measures_bounds as MB


def _population():
    ds = load_dataset("synthetic_gaussian", n_train=40, n_test=30, num_classes=2, image_shape=(4, 4, 1))
    model = LowRankMLP(num_classes=2, width=6, depth=3, rank=3, mean=ds.mean, std=ds.std)
    x = jnp.asarray(ds.test_images[:30], jnp.float32) / 255.0
    p0 = model.init(jax.random.key(0), x[:1])
    p1 = model.init(jax.random.key(1), x[:1])
    p1 = jax.tree.map(lambda v: 2.0 * v, p1)                    # a different scale: a different bound and gap
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)
    e = blocks.EvalConfig(n_points=30, eps_l2=(0.0, 0.5), headline_l2=0.5, n_iter=10)
    ctx = M.Context.build(e, blocks.MeasureConfig(), ds)
    pop = M.TrainedPopulation("p", model, [{"seed": 3}, {"seed": 7}], {"rank": 3}, None, params)
    x_hat = jnp.stack([jnp.clip(ctx.x + 0.01, 0, 1), jnp.clip(ctx.x - 0.01, 0, 1)])   # stand-in ensemble examples
    ctx.cache[("p", "x_adv", "l2")] = x_hat
    return ds, model, ctx, pop, params, x_hat


def _ce(logits, y):
    z = np.asarray(logits, np.float64)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), np.asarray(y)]


def test_each_members_bound_is_paired_with_its_own_gap():
    with jax.default_matmul_precision("float32"):
        _pairing()


def _pairing():
    ds, model, ctx, pop, params, x_hat = _population()
    out = {c.key: np.asarray(v) for c, v in MB.gap_and_bound(("l2",))(ctx, pop).items()}
    delta = 0.5
    keys = M.member_eval_keys([3, 7], "gap/l2")
    for m in range(2):
        p = jax.tree.map(lambda v: v[m], params)
        f = lambda q: model.apply(p, q)
        clean = _ce(f(ctx.x), ctx.y)
        x_best, *_ = apgd_single_run(f, lambda z: attack_losses.cross_entropy(z, ctx.y), ctx.x, ctx.y, keys[m],
                                     delta, "l2", 10)
        worst = np.maximum(clean, np.maximum(_ce(f(x_best), ctx.y), _ce(f(x_hat[m]), ctx.y)))
        assert out["clean_loss"][m] == pytest.approx(clean.mean(), rel=1e-5)
        assert out["gap[norm=l2]"][m] == pytest.approx(worst.mean() - clean.mean(), rel=1e-4, abs=1e-6)
        # naive bound by brute force: δ · Π‖W_l‖₂ · (1/std) · ‖c₁ − c₀‖₂, every factor from numpy
        tree = p["params"]
        mats = [np.asarray(tree[n]["down"] @ tree[n]["up"], np.float64).T for n in ("hidden_0", "hidden_1")]
        head = np.asarray(tree["head"]["kernel"], np.float64).T
        lip = np.prod([np.linalg.norm(w, 2) for w in mats]) / float(np.min(ds.std))
        naive = delta * lip * np.linalg.norm(head[1] - head[0])
        assert out["gap_bound_naive[norm=l2]"][m] == pytest.approx(naive, rel=1e-4)
        aligned = encoder_lipschitz([jnp.asarray(w, jnp.float32) for w in mats], p=2, kappa=0.1,
                                    input_scale=1.0 / float(np.min(ds.std)))["aligned"]
        assert out["gap_bound_aligned[norm=l2]"][m] == pytest.approx(
            delta * float(aligned) * np.linalg.norm(head[1] - head[0]), rel=1e-4)
        assert out["gap_bound_aligned[norm=l2]"][m] <= out["gap_bound_naive[norm=l2]"][m] * (1 + 1e-6)
        assert out["bound_over_gap_naive[norm=l2]"][m] == pytest.approx(naive / out["gap[norm=l2]"][m], rel=1e-4)
    # Corollary 3.3: the measured gap (a lower estimate of the true one) never exceeds the bound
    assert np.all(out["gap[norm=l2]"] >= 0)
    assert np.all(out["gap_bound_aligned[norm=l2]"] >= out["gap[norm=l2]"])
    # the two members differ, so a swapped pairing would fail above
    assert abs(out["gap_bound_naive[norm=l2]"][0] - out["gap_bound_naive[norm=l2]"][1]) > 0.1 * out[
        "gap_bound_naive[norm=l2]"][0]


def test_printed_spectral_form_with_q2_fails_on_a_flat_spectrum_and_q1_is_tight():
    # 64 equal singular values at k = 32 (docs/findings.md §1): q = 2 gives (1 − √½)·√64/32·‖W‖_F = 0.586 < σ₁ = 1
    w = jnp.eye(64, dtype=jnp.float32)
    printed = float(MB.spectral_printed(w, 32, q=2))
    assert printed == pytest.approx((1 - np.sqrt(0.5)) * 8 / 32 * 8, rel=1e-5) and printed < 1
    assert float(MB.spectral_printed(w, 32, q=1)) == pytest.approx(1.0, rel=1e-5)      # q = 1: exactly σ₁


def test_printed_neuron_form_fails_on_a_wide_layer_and_the_sound_form_holds():
    # W (h = 2) × (d = 32): one row of ones. ν = (32, 0), k = 1: ε = β = 0, so printed = √(h/1)·‖W‖_F = √2·√32 = 8
    # below ‖W‖_∞ = 32, while the sound √(h·d)/k·‖W‖_F = 8·√32 ≥ 32.
    w = jnp.zeros((2, 32), jnp.float32).at[0].set(1.0)
    assert float(MB.neuron_printed(w, 1, q=1)) == pytest.approx(8.0, rel=1e-6)
    forms = MB.theorem31_forms(("hidden_0",))
    pop = M.TrainedPopulation("p", None, [{"seed": 0}], {}, None,
                              {"params": {"hidden_0": {"kernel": w.T[None]}, "head": {"kernel": jnp.ones((1, 2, 2))}}})
    ctx = M.Context(blocks.EvalConfig(), blocks.MeasureConfig(kappa=0.5), None, None, None)
    out = {c.key: float(np.asarray(v)[0]) for c, v in forms(ctx, pop).items()}
    assert out["t31_neuron_lhs[layer=hidden_0]"] == pytest.approx(32.0)
    assert out["t31_neuron_printed_q1[layer=hidden_0]"] == pytest.approx(8.0, rel=1e-6)
    assert out["t31_neuron_sound[layer=hidden_0]"] == pytest.approx(8.0 * np.sqrt(32.0), rel=1e-5)
    assert out["t31_neuron_printed_q1_over_lhs[layer=hidden_0]"] == pytest.approx(0.25, rel=1e-6)
    # on a square layer the printed reading equals the sound split form (√(d/k) + ε·√(h·d)/k), never below lhs
    rng = np.random.default_rng(0)
    sq = jnp.asarray(rng.standard_t(2, size=(50, 16, 16)), jnp.float32)
    lhs = np.max(np.abs(np.asarray(sq)).sum(-1), -1)
    for k in (1, 4, 8):
        assert np.all(lhs <= np.asarray(MB.neuron_printed(sq, k, q=1)) * (1 + 1e-5))
