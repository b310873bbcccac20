"""crobust.metrics bounds: Theorem 3.1 on 1000 random and on trained matrices, the aligned Lipschitz DP against
brute force, the encoder bounds of a trained MLP against exact Jacobian norms and attacks, and Corollary 3.3."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import crobust.metrics as M
from crobust._errors import CrobustError
from crobust.models import MLP
from crobust.models.matrices import hidden_matrices, layer_matrices


# --------------------------------------------------------------------------------------------------------------
# Theorem 3.1


def _random_matrices(rng, n, m, d):
    """n matrices (m, d) from a mix of distributions, including planted structure and dead rows."""
    out = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            w = rng.standard_normal((m, d))
        elif kind == 1:
            w = rng.uniform(-1, 1, (m, d))
        elif kind == 2:
            w = rng.standard_cauchy((m, d))
        elif kind == 3:                                    # planted rank 2
            w = rng.standard_normal((m, 2)) @ rng.standard_normal((2, d))
        elif kind == 4:                                    # planted dominant rows
            w = rng.standard_normal((m, d)) * np.where(np.arange(m) < 2, 20.0, 1.0)[:, None]
        elif kind == 5:                                    # sparse with dead rows
            w = rng.standard_normal((m, d)) * (rng.uniform(size=(m, d)) < 0.2)
            w[::3] = 0.0
        elif kind == 6:                                    # equal magnitudes (β = 0, the tight case)
            w = rng.choice([-1.0, 1.0], (m, d))
        else:                                              # heavy spread of scales
            w = rng.standard_normal((m, d)) * np.exp(rng.uniform(-6, 6, (m, 1)))
        out.append(w)
    return np.stack(out).astype(np.float32)


def test_theorem31_holds_on_1000_random_matrices():
    rng = np.random.default_rng(0)
    for shape in ((12, 20), (20, 12)):
        w = _random_matrices(rng, 500, *shape)
        for kw in ({"k": 1}, {"kappa": 0.25}):
            s = M.theorem31_spectral(w, **kw)
            n = M.theorem31_neuron(w, **kw)
            assert np.all(np.asarray(s["lhs"]) <= np.asarray(s["rhs"]) * (1 + 1e-5)), (shape, kw)
            assert np.all(np.asarray(n["lhs"]) <= np.asarray(n["rhs_fro"]) * (1 + 1e-5)), (shape, kw)
            assert np.all(np.asarray(n["lhs"]) <= np.asarray(n["rhs_rows"]) * (1 + 1e-5)), (shape, kw)
            # right-hand sides equal the formulas computed in numpy (float64) on a few of them
            for i in range(0, 500, 61):
                w64 = w[i].astype(np.float64)
                sig = np.linalg.svd(w64, compute_uv=False)
                K = kw.get("k") or min(shape) - int(0.75 * min(shape))
                e1 = sig[K:].sum() / sig.sum()
                b = 1 - sig[K - 1] / sig[0]
                rhs = (1 - e1) / (1 - b) * np.sqrt(min(shape)) / K * np.linalg.norm(w64)
                if sig[K - 1] > 1e-3 * sig[0]:          # else σ_K is float32 noise and the RHS is ~∞ anyway
                    assert float(s["rhs"][i]) == pytest.approx(rhs, rel=2e-4)
                nu = -np.sort(-np.abs(w64).sum(1))
                Kn = kw.get("k") or shape[0] - int(0.75 * shape[0])
                if nu[Kn - 1] > 1e-3 * nu[0]:
                    rhs_n = nu[:Kn].sum() / (Kn * nu[Kn - 1]) * nu[0] / nu.sum() * np.sqrt(w64.size) * np.linalg.norm(w64)
                    assert float(n["rhs_fro"][i]) == pytest.approx(rhs_n, rel=2e-4)


def test_theorem31_tight_cases_and_row_refinement():
    """Equality cases and the row refinement, all on (12, 20) matrices (one compiled program per function)."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((20, 12)))
    orth = q.T.astype(np.float32)                                    # orthonormal rows: all σ = 1
    s = M.theorem31_spectral(orth, 1)                                # k = 1: equality
    assert float(s["rhs"]) == pytest.approx(float(s["lhs"]), rel=1e-5)
    assert bool(M.theorem31_check(orth, 1)["spectral_holds"])
    sign = rng.choice([-1.0, 1.0], (12, 20)).astype(np.float32)     # equal rows of equal entries, k = 1: equality
    n = M.theorem31_neuron(sign, 1)
    assert float(n["lhs"]) == 20.0 and float(n["rhs_fro"]) == pytest.approx(20.0, rel=1e-5)
    w = rng.standard_normal((12, 20)).astype(np.float32)
    full = M.theorem31_neuron(w, kappa=0.3, k_row=20)                # k_r = d_in: the Frobenius form
    assert float(full["rhs_rows"]) == pytest.approx(float(full["rhs_fro"]), rel=1e-5)
    sparse_rows = w * (np.arange(20) < 3)                             # 3 live entries per row
    n = M.theorem31_neuron(sparse_rows, kappa=0.3, k_row=3)
    assert float(n["eps_row_q1_max"]) < 1e-6
    assert float(n["rhs_rows"]) < 0.5 * float(n["rhs_fro"])
    z = M.theorem31_check(np.zeros((12, 20), np.float32), 2)
    assert bool(z["spectral_holds"]) and bool(z["neuron_holds"])
    rank1 = np.outer(rng.standard_normal(12), rng.standard_normal(20)).astype(np.float32)
    assert float(M.theorem31_spectral(rank1, 2)["rhs"]) > 1e3 * float(M.norm_2(rank1))   # σ_2 ≈ 0: β ≈ 1
    e00 = np.zeros((12, 20), np.float32)
    e00[0, 0] = 1.0                                                   # σ_2 = 0 exactly: the bound is +∞
    assert float(M.theorem31_spectral(e00, 2)["rhs"]) == np.inf


# --------------------------------------------------------------------------------------------------------------
# the dynamic programme


def brute_partition(norms, pairs):
    lam = len(norms)
    best, best_set = np.prod(norms), ()
    for r in range(1, lam // 2 + 1):
        for starts in itertools.combinations(range(lam - 1), r):
            if any(b - a < 2 for a, b in zip(starts, starts[1:])):
                continue
            prod = np.prod([pairs[s] for s in starts])
            covered = {i for s in starts for i in (s, s + 1)}
            prod *= np.prod([norms[i] for i in range(lam) if i not in covered])
            if prod < best:
                best, best_set = prod, starts
    return best, best_set


def test_lipschitz_dp_matches_brute_force_partitions():
    rng = np.random.default_rng(2)
    for lam in range(1, 8):
        for _ in range(6):
            norms = rng.uniform(0.5, 3.0, lam).astype(np.float32)
            pairs = (norms[:-1] * norms[1:] * rng.uniform(0.2, 1.3, lam - 1)).astype(np.float32)
            out = M.lipschitz_aligned(norms, pairs)
            best, starts = brute_partition(norms.astype(np.float64), pairs.astype(np.float64))
            assert float(out["bound"]) == pytest.approx(best, rel=1e-5)
            assert float(out["bound"]) <= float(M.lipschitz_naive(norms))
            paired = np.asarray(out["paired"])
            chosen = np.prod([pairs[s] for s in np.flatnonzero(paired)]) * np.prod(
                [norms[i] for i in range(lam) if not any(paired[max(i - 1, 0): i + 1]) or
                 (i == 0 and not paired[:1].any())])
            assert chosen == pytest.approx(best, rel=1e-5)
    with pytest.raises(CrobustError):
        M.lipschitz_aligned(np.ones(3), np.ones(3))


# --------------------------------------------------------------------------------------------------------------
# a trained binary MLP


LIP_KW = {"inf": dict(kappa=0.25, mode="exact", direct=True, direct_mode="exact", max_exact=16),
          2: dict(kappa=0.25, mode="bound", direct=True, direct_mode="bound", max_exact=16)}


@pytest.fixture(scope="module")
def trained():
    digits = load_digits()
    x = jnp.asarray((digits.images / 16.0).astype(np.float32)[..., None])   # (N, 8, 8, 1) in [0, 1]
    y = jnp.asarray((digits.target >= 5).astype(np.int32))                   # binary task
    model = MLP(num_classes=2, width=16, depth=4)                       # 64 → 16 → 16 → 16 → 2
    params = model.init(jax.random.key(0), x[:1])
    opt = optax.adamw(3e-3, weight_decay=1e-2)
    state = opt.init(params)

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

    @jax.jit
    def train(params, state):
        def step(carry, i):
            p, s = carry
            idx = jax.random.choice(jax.random.fold_in(jax.random.key(1), i), x.shape[0], (128,))
            g = jax.grad(loss)(p, x[idx], y[idx])
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), None
        return jax.lax.scan(step, (params, state), jnp.arange(400))[0]

    params, _ = train(params, state)
    acc = float((model.apply(params, x).argmax(-1) == y).mean())
    assert acc > 0.9
    return model, params, x, y


def _encoder(model, params):
    return lambda xb: model.apply(params, xb, return_repr=True)[1]


def test_theorem31_holds_on_trained_weights(trained):
    _, params, _, _ = trained
    mats = layer_matrices(params)
    groups = {"hidden_0": mats["hidden_0"], "hidden_1,2": jnp.stack([mats["hidden_1"], mats["hidden_2"]]),
              "head": mats["head"]}
    for name, w in groups.items():
        c = M.theorem31_check(w, kappa=0.25)
        assert np.all(np.asarray(c["spectral_holds"])) and np.all(np.asarray(c["neuron_holds"])), name
        assert np.all(np.asarray(c["spectral_slack"]) >= 1.0) and np.all(np.asarray(c["neuron_slack"]) >= 1.0)


@pytest.mark.parametrize("p", ["inf", 2])
def test_aligned_lipschitz_between_jacobians_and_naive_product(trained, p):
    model, params, x, y = trained
    mats = list(hidden_matrices(params).values())
    lip = M.encoder_lipschitz(mats, p, **LIP_KW[p])
    naive, aligned = float(lip["naive"]), float(lip["aligned"])
    assert aligned <= naive
    assert float(lip["naive"]) == pytest.approx(np.prod([np.asarray(M.op_norm(w, p)) for w in mats]), rel=1e-5)
    # exact local Lipschitz constants: operator norms of the encoder's Jacobian at data points
    enc = _encoder(model, params)
    f = lambda v: enc(v.reshape(1, 8, 8, 1))[0]
    jac = np.asarray(jax.vmap(jax.jacfwd(f))(jnp.asarray(x[:300].reshape(300, -1))), np.float64)
    jnorms = [np.abs(j).sum(1).max() if p == "inf" else np.linalg.norm(j, 2) for j in jac]
    assert max(jnorms) <= aligned * (1 + 1e-5)
    # empirical ratios from perturbations that try to move z: random and gradient-ascent directions
    xs = jnp.asarray(x[:200])
    z = enc(xs)
    delta = 0.05
    a = delta * jnp.sign(jax.random.normal(jax.random.key(2), xs.shape)) if p == "inf" else \
        delta * jax.random.normal(jax.random.key(2), xs.shape) / 8.0
    grad = jax.jit(jax.grad(lambda aa: jnp.sum(jnp.square(enc(xs + aa) - z))))
    for _ in range(10):
        g = grad(a)
        if p == "inf":
            a = jnp.clip(a + 0.25 * delta * jnp.sign(g), -delta, delta)
        else:
            a = a + 0.25 * delta * g / (jnp.linalg.norm(g.reshape(200, -1), axis=1)[:, None, None, None] + 1e-12)
            a = a * jnp.minimum(1.0, delta / jnp.linalg.norm(a.reshape(200, -1), axis=1))[:, None, None, None]
    ratios = np.asarray(M.empirical_lipschitz_ratio(xs, xs + a, z, enc(xs + a), p))
    assert 0 < ratios.max() <= max(jnorms) * (1 + 1e-4) <= aligned * (1 + 1e-4)


@pytest.mark.parametrize("p", ["inf", 2])
def test_corollary33_bounds_an_attacked_binary_mlp(trained, p):
    model, params, x, y = trained
    xs, ys = jnp.asarray(x[:400]), jnp.asarray(y[:400])
    logits, z = model.apply(params, xs, return_repr=True)
    c = M.binary_head_vector(layer_matrices(params)["head"])
    # two-class softmax CE is the logistic loss of the margin Cᵀz
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], z @ c, rtol=1e-4, atol=1e-5)
    F = float(M.mean_logistic_loss(logits, ys))
    assert F == pytest.approx(float(M.mean_logistic_loss(z @ c, ys)), rel=1e-5)
    lip = float(M.encoder_lipschitz(list(hidden_matrices(params).values()), p, **LIP_KW[p])["aligned"])
    delta = 0.03 if p == "inf" else 0.3
    loss_at = lambda a: M.mean_logistic_loss(model.apply(params, xs + a), ys)
    a = jnp.zeros_like(xs)
    grad = jax.jit(jax.grad(loss_at))
    for _ in range(10):
        g = grad(a)
        if p == "inf":
            a = jnp.clip(a + 0.25 * delta * jnp.sign(g), -delta, delta)
        else:
            a = a + 0.25 * delta * g / (jnp.linalg.norm(g.reshape(400, -1), axis=1)[:, None, None, None] + 1e-12)
            a = a * jnp.minimum(1.0, delta / jnp.linalg.norm(a.reshape(400, -1), axis=1) + 1e-12)[:, None, None, None]
    logits_adv = model.apply(params, xs + a)
    gap = float(M.empirical_gap(logits, logits_adv, ys))
    assert gap > 0
    assert gap <= float(M.robustness_gap_bound(delta, lip, c, p))
    assert float(M.mean_logistic_loss(logits_adv, ys)) <= float(M.adversarial_risk_bound(F, delta, lip, c, p))
    dual = np.abs(np.asarray(c)).sum() if p == "inf" else np.linalg.norm(np.asarray(c))
    assert float(M.robustness_gap_bound(delta, lip, c, p)) == pytest.approx(delta * lip * dual, rel=1e-6)


def test_corollary_helpers_bad_input():
    with pytest.raises(CrobustError):
        M.binary_head_vector(np.ones((3, 4)))
    with pytest.raises(CrobustError):
        M.robustness_gap_bound(0.1, 2.0, np.ones(4), 1)
    with pytest.raises(CrobustError):
        M.robustness_gap_bound(-0.1, 2.0, np.ones(4), 2)
    with pytest.raises(CrobustError):
        M.mean_logistic_loss(np.ones((2, 2, 2)), np.ones(2))
    with pytest.raises(CrobustError):
        M.encoder_lipschitz([np.ones((3, 4)), np.ones((3, 4))], "inf")
