"""crobust.metrics alignment: the max over ReLU patterns (exact = brute-force enumeration, bound ≥ exact ≥ observed),
the alignment term A_p and remainder R_p against their numpy definitions, and soundness of A_p·‖W'‖‖W‖."""

import itertools

import jax
import numpy as np
import pytest

import crobust.metrics as M
from crobust._errors import CrobustError
from _margins import assert_signs_far_from_zero


def op(m, p):
    return np.abs(m).sum(1).max() if p == "inf" else np.linalg.norm(m, 2)


def brute_max(w2, w1, p):
    """max over all D ∈ {0,1}^h of ‖W2 D W1‖_p by literal enumeration (float64)."""
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    return max(op(w2 @ (np.array(d)[:, None] * w1), p) for d in itertools.product((0, 1), repeat=w1.shape[0]))


def np_split(w, K, form):
    w = np.asarray(w, np.float64)
    if form == "neuron":
        keep = np.argsort(-np.abs(w).sum(1), kind="stable")[:K]
        wk = np.zeros_like(w)
        wk[keep] = w[keep]
    else:
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        wk = (u[:, :K] * s[:K]) @ vt[:K]
    return wk, w - wk


def _pairs(rng, n, h=6, d=5, h2=4):
    w1 = rng.standard_normal((n, h, d))
    w2 = rng.standard_normal((n, h2, h))
    w1[n // 3:] *= rng.uniform(0.05, 3.0, (n - n // 3, h, 1))          # uneven neurons
    w2[2 * n // 3:] = np.abs(w2[2 * n // 3:])                          # same-sign (aligned) weights
    w1[-1, 2] *= 30.0                                                  # a planted dominant neuron...
    w2[-1, :, 2] *= 30.0                                               # ...that the next layer reads
    return w1.astype(np.float32), w2.astype(np.float32)


@pytest.mark.parametrize("p", ["inf", 2])
def test_exact_mode_equals_bruteforce_enumeration(p):
    rng = np.random.default_rng(0)
    w1, w2 = _pairs(rng, 6)
    got = np.asarray(jax.vmap(lambda a, b: M.max_pattern_norm(a, b, p, mode="exact"))(w1, w2))
    want = np.array([brute_max(w2[i], w1[i], p) for i in range(len(w1))])
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("form,p", [("neuron", "inf"), ("spectral", 2)])
def test_alignment_term_matches_numpy_definition(form, p):
    rng = np.random.default_rng(1)
    w1, w2 = _pairs(rng, 4)
    K = 2
    got = jax.vmap(lambda a, b: M.alignment_term(a, b, K, form=form, p=p, mode="exact"))(w1, w2)
    for i in range(len(w1)):
        w1k, e1 = np_split(w1[i], K, form)
        w2k, e2 = np_split(w2[i], K, form)
        n1, n2 = op(w1[i].astype(np.float64), p), op(w2[i].astype(np.float64), p)
        max_term = brute_max(w2k, w1k, p)
        R = (op(e2, p) * n1 + op(w2k, p) * op(e1, p)) / (n2 * n1)
        assert float(got["max_term"][i]) == pytest.approx(max_term, rel=1e-4)
        assert float(got["R"][i]) == pytest.approx(R, rel=1e-4, abs=1e-6)
        assert float(got["A"][i]) == pytest.approx(max_term / (n2 * n1) + R, rel=1e-4)
        assert float(got["pair_bound"][i]) == pytest.approx(float(got["A"][i]) * n1 * n2, rel=1e-4)


@pytest.mark.parametrize("form,p", [("neuron", "inf"), ("spectral", 2), ("neuron", 2), ("spectral", "inf")])
def test_aligned_pair_bound_is_sound_for_every_pattern(form, p):
    """A_p·‖W^{l+1}‖‖W^l‖ ≥ max_D ‖W^{l+1} D W^l‖_p (full matrices), in exact and bound modes, k = 1 and 3."""
    rng = np.random.default_rng(2)
    w1, w2 = _pairs(rng, 12)
    truth = np.array([brute_max(w2[i], w1[i], p) for i in range(len(w1))])
    for mode, k in (("exact", 3), ("bound", 1)):
        got = jax.vmap(lambda a, b: M.alignment_term(a, b, k, form=form, p=p, mode=mode))(w1, w2)
        pb = np.asarray(got["pair_bound"], np.float64)
        assert np.all(pb >= truth * (1 - 1e-5)), (mode, k, pb, truth)


@pytest.mark.parametrize("p", ["inf", 2])
def test_bound_ge_exact_ge_observed(p):
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((10, 7)).astype(np.float32)
    w2 = rng.standard_normal((5, 10)).astype(np.float32)
    z = rng.standard_normal((64, 7)).astype(np.float32)
    pats = M.activation_patterns(w1, z)
    assert_signs_far_from_zero(z @ w1.T, z[:, None, :] * w1[None, :, :])
    np.testing.assert_array_equal(pats, z @ w1.T > 0)
    exact = float(M.max_pattern_norm(w1, w2, p, mode="exact"))
    bound = float(M.max_pattern_norm(w1, w2, p, mode="bound"))
    obs = float(M.max_pattern_norm(w1, w2, p, mode="observed", patterns=pats))
    assert obs <= exact * (1 + 1e-5) and exact <= bound * (1 + 1e-5)
    assert bound <= op(w2, p) * op(w1, p) * (1 + 1e-5)
    assert exact == pytest.approx(brute_max(w2, w1, p), rel=1e-5)
    # observed on each single pattern equals that pattern's norm (p = 2 by power iteration, a lower estimate)
    one = float(M.max_pattern_norm(w1, w2, p, mode="observed", patterns=pats[:1]))
    assert one == pytest.approx(op(w2.astype(np.float64) @ (pats[0][:, None] * w1), p), rel=1e-3)
    # auto picks exact on ≤ 12 units
    assert float(M.max_pattern_norm(w1, w2, p)) == pytest.approx(exact, rel=1e-6)


def test_remainder_vanishes_when_layers_are_exactly_k_compressible():
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    w2 = rng.standard_normal((5, 8)).astype(np.float32)
    w1[2:] = 0.0                                      # only 2 live neurons in each layer
    w2[2:] = 0.0
    a = M.alignment_term(w1, w2, 2, form="neuron", p="inf", mode="exact")
    assert float(a["R"]) == 0.0
    assert float(a["A"]) == pytest.approx(brute_max(w2, w1, "inf") / (op(w2, "inf") * op(w1, "inf")), rel=1e-5)
    l1 = (rng.standard_normal((8, 2)) @ rng.standard_normal((2, 6))).astype(np.float32)   # rank 2
    l2 = (rng.standard_normal((5, 2)) @ rng.standard_normal((2, 8))).astype(np.float32)
    a = M.alignment_term(l1, l2, 2, form="spectral", p=2, mode="exact")
    assert float(a["R"]) < 1e-5
    assert float(a["max_term"]) == pytest.approx(brute_max(l2, l1, 2), rel=1e-4)


def test_planted_alignment_is_detected():
    rng = np.random.default_rng(5)
    w1 = 0.01 * rng.standard_normal((8, 10)).astype(np.float32)
    w1[3] = 1.0                                       # dominant neuron 3 of layer l
    base = 0.01 * rng.standard_normal((6, 8)).astype(np.float32)
    aligned, misaligned = base.copy(), base.copy()
    aligned[0, 3] = 5.0                               # the next layer's dominant neuron reads unit 3
    misaligned[0, 5] = 5.0                            # ... or a unit that carries almost nothing
    A_al = float(M.alignment_term(w1, aligned, 1, form="neuron", mode="exact")["A"])
    A_mis = float(M.alignment_term(w1, misaligned, 1, form="neuron", mode="exact")["A"])
    assert A_al > 0.9 and A_mis < 0.3
    assert float(M.max_pattern_norm(w1, misaligned, "inf", mode="exact")) < 0.2 * op(misaligned, "inf") * op(w1, "inf")


def test_top_k_substructure():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    for form in ("neuron", "spectral"):
        wk, e = M.top_k_substructure(w, 2, form=form)
        want_wk, want_e = np_split(w, 2, form)
        np.testing.assert_allclose(wk, want_wk, atol=1e-5)
        np.testing.assert_allclose(np.asarray(wk) + np.asarray(e), w, atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda w1, w2: M.alignment_term(w1, w2.T, 1),                                  # does not chain
    lambda w1, w2: M.alignment_term(w1, w2, 1, form="rows"),
    lambda w1, w2: M.alignment_term(w1, w2, 1, mode="fast"),
    lambda w1, w2: M.alignment_term(w1, w2, 1, p=1),
    lambda w1, w2: M.alignment_term(w1, w2, 0),
    lambda w1, w2: M.max_pattern_norm(w1, w2, "inf", mode="exact", max_exact=3),
    lambda w1, w2: M.max_pattern_norm(w1, w2, "inf", mode="observed"),
    lambda w1, w2: M.max_pattern_norm(w1[None], w2[None], "inf"),
])
def test_bad_input(call):
    rng = np.random.default_rng(7)
    with pytest.raises(CrobustError):
        call(rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32))
