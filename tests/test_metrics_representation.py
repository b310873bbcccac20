"""crobust.metrics representation: shift ratio, singular-direction alignment, empirical Lipschitz ratios."""

import numpy as np
import pytest

import crobust.metrics as M
from crobust._errors import CrobustError


def test_representation_shift_matches_numpy_and_dead_z():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 9)).astype(np.float32)
    za = z + 0.3 * rng.standard_normal((6, 9)).astype(np.float32)
    want = np.linalg.norm(za - z, axis=1) / np.linalg.norm(z, axis=1)
    np.testing.assert_allclose(M.representation_shift(z, za), want, rtol=1e-5)
    z[0] = 0.0
    za[1] = z[1]
    z[2] = 0.0
    za[2] = 0.0
    got = np.asarray(M.representation_shift(z, za))
    assert got[0] == np.inf and got[1] == 0.0 and got[2] == 0.0
    with pytest.raises(CrobustError):
        M.representation_shift(z, za[:, :3])


def test_singular_direction_alignment():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 20)).astype(np.float32)
    _, _, vt = np.linalg.svd(w.astype(np.float64))
    K = 3
    a = np.stack([vt[0], vt[5], vt[15], rng.standard_normal(20)]).astype(np.float32)
    a[0] *= 4.0                                        # scale must not matter
    r = M.singular_direction_alignment(w, a, K)
    top = np.asarray(r["top_energy"])
    np.testing.assert_allclose(top[:3], [1.0, 0.0, 0.0], atol=1e-5)    # v_1 in the top 3; v_6 and v_16 are not
    proj = vt[:K] @ a[3].astype(np.float64)
    na = np.linalg.norm(a[3])
    assert top[3] == pytest.approx((proj ** 2).sum() / na ** 2, rel=1e-4)
    assert float(r["top_mean_abs"][3]) == pytest.approx(np.abs(proj).mean() / na, rel=1e-4)
    rest = np.sqrt(max(na ** 2 - (proj ** 2).sum(), 0) / (20 - K)) / na
    assert float(r["rest_rms"][3]) == pytest.approx(rest, rel=1e-4)
    assert float(r["top_rms"][3]) == pytest.approx(np.sqrt((proj ** 2).mean()) / na, rel=1e-4)
    assert float(r["ratio"][3]) == pytest.approx(np.sqrt((proj ** 2).mean()) / na / rest, rel=1e-4)
    assert float(r["ratio"][0]) > 1e3 and float(r["ratio"][1]) < 1e-5
    assert float(r["baseline_energy"]) == pytest.approx(K / 20)
    # random directions carry about k/in of their energy in the top k
    many = rng.standard_normal((2000, 20)).astype(np.float32)
    assert float(np.mean(M.singular_direction_alignment(w, many, K)["top_energy"])) == pytest.approx(K / 20, abs=0.02)
    # an isotropic perturbation uses every direction alike: the ratio (one statistic, RMS, on both sides) is 1 up
    # to sampling — per sample sqrt(χ²_k/k)/sqrt(χ²_{in−k}/(in−k)), mean 1 − O(1/k) ≈ 0.99 for k = 20 (sd of the
    # mean of 4000 ≈ 0.003); a mean |·| against an RMS would give ≈ √(2/π) ≈ 0.80
    w_big = rng.standard_normal((60, 200)).astype(np.float32)
    iso = rng.standard_normal((4000, 200)).astype(np.float32)
    ratio = np.asarray(M.singular_direction_alignment(w_big, iso, 20)["ratio"])
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.03)
    # images are flattened; a zero perturbation gives zeros
    img = np.zeros((2, 4, 5, 1), np.float32)
    z = M.singular_direction_alignment(w, img, kappa=0.25)
    assert np.all(np.asarray(z["top_energy"]) == 0.0) and np.all(np.asarray(z["ratio"]) == 0.0)
    with pytest.raises(CrobustError):
        M.singular_direction_alignment(w, a[:, :5], K)


@pytest.mark.parametrize("p", [2, "inf"])
def test_empirical_lipschitz_ratio(p):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    xa = x + 0.1 * rng.standard_normal((5, 3, 4)).astype(np.float32)
    xa[4] = x[4]
    z = rng.standard_normal((5, 7)).astype(np.float32)
    za = z + rng.standard_normal((5, 7)).astype(np.float32)
    nrm = (lambda v: np.abs(v).max(1)) if p == "inf" else (lambda v: np.linalg.norm(v, axis=1))
    want = nrm(za - z) / np.maximum(nrm((xa - x).reshape(5, -1)), 1e-30)
    want[4] = 0.0
    np.testing.assert_allclose(M.empirical_lipschitz_ratio(x, xa, z, za, p), want, rtol=1e-5)
    with pytest.raises(CrobustError):
        M.empirical_lipschitz_ratio(x, xa, z, za, 1)
