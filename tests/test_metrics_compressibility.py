"""crobust.metrics compressibility: best-k error, dispersion, neuron/spectral forms, reference par_comp/net_comp,
checked against literal numpy brute force and planted structure."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.metrics as M
from crobust._errors import CrobustError
from crobust.models.matrices import kernel_to_matrix


def brute_best_k(theta, K, q):
    """Literal definition: build θ_K by zeroing all but the K largest |θ| (argsort), then ‖θ−θ_K‖_q/‖θ‖_q."""
    theta = np.asarray(theta, np.float64)
    out = np.zeros(theta.shape[:-1])
    for idx in np.ndindex(*theta.shape[:-1]):
        v = theta[idx]
        keep = np.argsort(-np.abs(v), kind="stable")[:K]
        vk = np.zeros_like(v)
        vk[keep] = v[keep]
        den = np.linalg.norm(v, ord=q)
        out[idx] = np.linalg.norm(v - vk, ord=q) / den if den > 0 else 0.0
    return out


def brute_beta(theta, K):
    a = -np.sort(-np.abs(np.asarray(theta, np.float64)), axis=-1)
    return np.where(a[..., 0] > 0, 1 - a[..., K - 1] / np.where(a[..., 0] > 0, a[..., 0], 1), 0.0)


def ref_rel_err(w, K, q):
    """The reference code's per-vector error (docs/reference-code.md §6.1): top-K by |·| via sort, ‖w − w_top‖/‖w‖."""
    a = np.sort(np.abs(w.astype(np.float64)))[::-1]
    return (np.sum(a[K:] ** q) ** (1 / q)) / (np.sum(a ** q) ** (1 / q))


def _vectors(rng):
    return {
        "gauss": rng.standard_normal((4, 37)),
        "cauchy": rng.standard_cauchy((4, 37)),
        "sparse": rng.standard_normal((4, 37)) * (rng.uniform(size=(4, 37)) < 0.3),
        "ties": np.round(rng.standard_normal((4, 37)) * 2) / 2,
    }


@pytest.mark.parametrize("q", [1, 2])
def test_best_k_error_matches_bruteforce(q):
    rng = np.random.default_rng(0)
    th = np.concatenate(list(_vectors(rng).values())).astype(np.float32)      # (16, 37): four distributions
    for k in (1, 2, 7, 36, 37):
        got = np.asarray(M.best_k_error(th, k, q=q))
        np.testing.assert_allclose(got, brute_best_k(th, k, q), rtol=2e-5, atol=1e-6, err_msg=f"k={k}")
    for kappa in (0.1, 0.5):
        K = 37 - int((1 - kappa) * 37)
        np.testing.assert_allclose(M.best_k_error(th, kappa=kappa, q=q), brute_best_k(th, K, q), rtol=2e-5,
                                   atol=1e-6)


def test_ties_and_analytic_values():
    th = np.array([3.0, -3.0, 3.0, 1.0, -1.0], np.float32)
    assert float(M.best_k_error(th, 2, q=1)) == pytest.approx(5 / 11, rel=1e-6)       # one 3 and both 1s remain
    assert float(M.best_k_error(th, 4, q=1)) == pytest.approx(1 / 11, rel=1e-6)
    assert float(M.best_k_error(th, 2, q=2)) == pytest.approx(np.sqrt(11 / 29), rel=1e-6)
    assert float(M.dispersion(th, 3)) == pytest.approx(0.0, abs=1e-7)                 # top 3 equal
    assert float(M.dispersion(th, 4)) == pytest.approx(2 / 3, rel=1e-6)
    assert float(M.best_k_error(th, 5, q=2)) == 0.0                                   # k = d


def test_kept_count_reference_rule():
    assert M.kept_count(3072, kappa=0.1) == 308
    assert M.kept_count(2000, kappa=0.1) == 200
    assert M.kept_count(10, kappa=0.1) == 1
    assert M.kept_count(5, kappa=0.5) == 3
    assert M.kept_count(7, kappa=1.0) == 7
    assert M.kept_count(7, 4) == 4


@pytest.mark.parametrize("call", [
    lambda: M.best_k_error(np.ones(5), 0),
    lambda: M.best_k_error(np.ones(5), 6),
    lambda: M.best_k_error(np.ones(5), kappa=0.0),
    lambda: M.best_k_error(np.ones(5), kappa=1.5),
    lambda: M.best_k_error(np.ones(5), 2, kappa=0.5),
    lambda: M.best_k_error(np.ones(5)),
    lambda: M.best_k_error(np.ones(5), 2.0),
    lambda: M.best_k_error(np.ones(5), 2, q=3),
    lambda: M.best_k_error(np.ones(5), 2, q=True),
    lambda: M.neuron_compressibility(np.ones(5), 1),
    lambda: M.smallest_k(np.ones(5), -0.1),
    lambda: M.par_comp(np.ones(4), 0.1),
    lambda: M.spectral_compressibility(np.ones((3, 4)), 1, method="qr"),
])
def test_bad_input_raises_crobust_error(call):
    with pytest.raises(CrobustError) as e:
        call()
    assert isinstance(e.value, ValueError)


def test_edge_cases_k1_kd_zero():
    rng = np.random.default_rng(1)
    th = rng.standard_normal((3, 9)).astype(np.float32)
    a = np.abs(th)
    np.testing.assert_allclose(M.best_k_error(th, 1, q=1), 1 - a.max(1) / a.sum(1), rtol=1e-5)
    assert np.all(np.asarray(M.dispersion(th, 1)) == 0.0)
    assert np.all(np.asarray(M.best_k_error(th, 9, q=1)) == 0.0)
    z = np.zeros((2, 6), np.float32)
    for q in (1, 2):
        assert np.all(np.asarray(M.best_k_error(z, 2, q=q)) == 0.0)
    assert np.all(np.asarray(M.dispersion(z, 3)) == 0.0)
    assert np.all(np.asarray(M.smallest_k(z, 0.0)) == 1)
    # a matrix with all-zero rows (dead neurons) and an all-zero matrix: defined, finite values
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[[1, 4]] = 0.0
    s = M.neuron_compressibility(w, 2, q=2)
    assert np.isfinite(float(s["eps_nu"])) and np.isfinite(float(s["beta_nu"]))
    s0 = M.neuron_compressibility(np.zeros((6, 5)), kappa=0.5)
    assert float(s0["eps_nu"]) == 0.0 and float(s0["beta_nu"]) == 0.0
    assert float(M.par_comp(w, 0.4)) == pytest.approx(1 - np.mean(
        [ref_rel_err(r, 2, 2) if np.any(r) else 0.0 for r in w]), rel=1e-5)


def test_scale_invariance():
    rng = np.random.default_rng(2)
    th = rng.standard_cauchy((5, 50)).astype(np.float32)
    base_e = {q: np.asarray(M.best_k_error(th, 6, q=q)) for q in (1, 2)}
    base_b = np.asarray(M.dispersion(th, 6))
    for c in (1e-3, 7.5, 1e4, -2.0):
        for q in (1, 2):
            np.testing.assert_allclose(M.best_k_error(c * th, 6, q=q), base_e[q], rtol=1e-5)
        np.testing.assert_allclose(M.dispersion(c * th, 6), base_b, rtol=1e-5, atol=1e-7)
    w = rng.standard_normal((12, 9)).astype(np.float32)
    for c in (1e-3, 50.0):
        a, b = M.spectral_compressibility(w, 3, q=1), M.spectral_compressibility(c * w, 3, q=1)
        np.testing.assert_allclose(a["eps_sigma"], b["eps_sigma"], rtol=1e-5)
        np.testing.assert_allclose(a["beta_sigma"], b["beta_sigma"], rtol=1e-5)


def test_dispersion_matches_numpy_and_planted_dominance():
    rng = np.random.default_rng(3)
    th = rng.standard_normal((6, 40)).astype(np.float32)
    for k in (1, 3, 20, 40):
        np.testing.assert_allclose(M.dispersion(th, k), brute_beta(th, k), rtol=1e-5, atol=1e-6)
    th[:, 7] = 1000.0
    assert np.all(np.asarray(M.dispersion(th, 4)) > 0.99)
    assert np.all(np.asarray(M.best_k_error(th, 1, q=1)) < 0.05)


@pytest.mark.parametrize("q", [1, 2])
def test_curve_and_smallest_k(q):
    rng = np.random.default_rng(4)
    th = (rng.standard_normal((3, 25)) * (rng.uniform(size=(3, 25)) < 0.6)).astype(np.float32)
    curve = np.asarray(M.best_k_error_curve(th, q))
    brute = np.stack([brute_best_k(th, k, q) for k in range(1, 26)], axis=-1)
    np.testing.assert_allclose(curve, brute, rtol=1e-4, atol=1e-6)
    for eps in (0.0, 0.01, 0.1, 0.3, 0.9):
        want = np.array([min(k for k in range(1, 26) if brute[i, k - 1] <= eps + 1e-6) for i in range(3)])
        np.testing.assert_array_equal(M.smallest_k(th, eps, q), want)
    nnz = np.maximum((th != 0).sum(1), 1)
    np.testing.assert_array_equal(M.smallest_k(th, 0.0, q), nnz)
    # eps traced under jit and vmapped over targets (ε-pruning sweeps)
    f = jax.jit(jax.vmap(lambda e: M.smallest_k(th, e, q)))
    np.testing.assert_array_equal(f(jnp.array([0.0, 0.3])), np.stack([M.smallest_k(th, 0.0, q),
                                                                        M.smallest_k(th, 0.3, q)]))


def test_planted_dominant_neuron_dense_kernel_orientation():
    rng = np.random.default_rng(5)
    kernel = rng.uniform(-0.1, 0.1, (20, 12)).astype(np.float32)    # flax Dense kernel (in, out)
    kernel[:, 5] *= 50.0                                              # output neuron 5 dominates
    w = kernel_to_matrix(kernel, conv=False)
    nu = np.asarray(M.row_l1_norms(w))
    assert nu.shape == (12,) and int(np.argmax(nu)) == 5
    np.testing.assert_allclose(nu, np.abs(kernel).sum(0), rtol=1e-6)
    s = M.neuron_compressibility(w, 1, q=1)
    assert float(s["eps_nu"]) < 0.25 and int(s["k_nu"]) == 1
    assert int(M.neuron_smallest_k(w, 0.25, q=1)) == 1
    # the transposed (wrong) orientation would see no dominant row
    assert float(M.neuron_compressibility(kernel, 1, q=1)["eps_nu"]) > 0.8


def test_conv_matricisation_filters_and_par_comp():
    rng = np.random.default_rng(6)
    kernel = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)   # flax Conv (kh, kw, in, out)
    kernel[..., 2] *= 20.0                                          # filter 2 dominates
    w = np.asarray(kernel_to_matrix(kernel))
    assert w.shape == (6, 36)
    nu = np.asarray(M.row_l1_norms(w))
    np.testing.assert_allclose(nu, np.abs(kernel).sum((0, 1, 2)), rtol=1e-5)
    assert int(np.argmax(nu)) == 2
    # par_comp equals the reference formula on PyTorch's (out, in, kh, kw).reshape(out, -1)
    torch_w = np.transpose(kernel, (3, 2, 0, 1)).reshape(6, -1)
    for q in (1, 2):
        want = 1 - np.mean([ref_rel_err(r, 36 - int(0.9 * 36), q) for r in torch_w])
        assert float(M.par_comp(w, 0.1, q)) == pytest.approx(want, rel=1e-5)
    flat = torch_w.ravel()
    assert float(M.par_comp(w, 0.1, 2, flat=True)) == pytest.approx(
        1 - ref_rel_err(flat, flat.size - int(0.9 * flat.size), 2), rel=1e-5)


def test_net_comp_matches_concatenation_and_population_axis():
    rng = np.random.default_rng(7)
    mats = [rng.standard_normal((3, 8, 5)).astype(np.float32), rng.standard_cauchy((3, 4, 8)).astype(np.float32)]
    got = np.asarray(M.net_comp(mats, 0.1))
    for m in range(3):
        v = np.concatenate([x[m].ravel() for x in mats])
        assert got[m] == pytest.approx(1 - ref_rel_err(v, v.size - int(0.9 * v.size), 2), rel=1e-5)
    with pytest.raises(CrobustError):
        M.net_comp([mats[0], mats[1][:2]], 0.1)


def test_spectral_compressibility_planted_spectrum():
    rng = np.random.default_rng(8)
    u, _ = np.linalg.qr(rng.standard_normal((30, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((25, 20)))
    s = np.array([10.0, 6.0, 5.0] + [0.1] * 17)
    w = ((u * s) @ v.T).astype(np.float32)
    for q in (1, 2):
        r = M.spectral_compressibility(w, 3, q=q)
        assert float(r["eps_sigma"]) == pytest.approx(brute_best_k(s, 3, q), rel=1e-4)
        assert float(r["beta_sigma"]) == pytest.approx(0.5, rel=1e-4)
    lowrank = ((u[:, :3] * s[:3]) @ v[:, :3].T).astype(np.float32)          # exactly rank 3
    assert float(M.spectral_compressibility(lowrank, 3, q=1)["eps_sigma"]) < 1e-5
    assert int(M.spectral_smallest_k(lowrank, 1e-4, q=1)) == 3


def test_vmap_and_jit_over_members():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((4, 10, 7)).astype(np.float32)
    f = jax.jit(jax.vmap(lambda x: M.compressibility_stats(M.row_l1_norms(x), kappa=0.3, q=2)))
    got = f(w)
    for m in range(4):
        one = M.compressibility_stats(np.abs(w[m]).sum(1), kappa=0.3, q=2)
        np.testing.assert_allclose(got["eps"][m], one["eps"], rtol=1e-6)
        np.testing.assert_allclose(got["beta"][m], one["beta"], rtol=1e-6)
    assert json.dumps({k: np.asarray(v).tolist() for k, v in got.items()})


@pytest.mark.parametrize("shape,axis", [((700, 30), 0), ((20, 900), -1), ((7,), -1), ((33000, 2), 0)])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "inf"])
def test_kth_largest_counts_matches_sort(shape, axis, kind):
    """The threshold search (3-way packed passes for d < 2^15, 2-way above) gives the exact K-th largest and the
    #{≥ t}, #{> t} counts, ties, zeros and +inf included."""
    from crobust.metrics import _common as C

    rng = np.random.default_rng(0)
    a = np.abs(rng.standard_normal(shape)).astype(np.float32)
    if kind == "ties":
        a = np.round(a * 3) / 3
    if kind == "zeros":
        a[a < 1.0] = 0
    if kind == "inf":
        a.flat[::5] = np.inf
    d = a.shape[axis]
    for K in sorted({1, 2, max(d // 10, 1), max(d - 1, 1), d}):
        t, n_ge, n_gt = C.kth_largest_counts(jnp.asarray(a), K, axis)
        tr = np.take(-np.sort(-a, axis=axis), K - 1, axis=axis)
        np.testing.assert_array_equal(np.asarray(t), tr)
        np.testing.assert_array_equal(np.asarray(n_ge), (a >= np.expand_dims(tr, axis)).sum(axis))
        np.testing.assert_array_equal(np.asarray(n_gt), (a > np.expand_dims(tr, axis)).sum(axis))
