"""crobust.metrics spectral: singular values by every method, norms, ratios, ranks, against numpy float64."""

import jax
import numpy as np
import pytest

import crobust.metrics as M
from crobust._errors import CrobustError
from crobust.metrics import spectral as S
from crobust.metrics._common import F32_EPS


def _sv64(w):
    return np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)


def _planted(rng, m, n, s):
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return ((u * np.asarray(s)) @ v.T).astype(np.float32)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (1, 40), (40, 1), (64, 64)])
def test_singular_values_all_methods_match_numpy(shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32)
    ref = _sv64(w)
    for method in ("svd", "auto"):
        got = np.asarray(M.singular_values(w, method=method), np.float64)
        assert got.shape == (min(shape),)
        assert np.all(np.diff(got) <= 0)
        np.testing.assert_allclose(got, ref, atol=2e-5 * ref[0], rtol=0)
    if shape in ((30, 50), (1, 40)):      # the Gram route compiles a large program; two shapes suffice
        got = np.asarray(M.singular_values(w, method="gram"), np.float64)
        # σ_i² has absolute error ~ε·σ_1², so σ_i ~ √ε·σ_1 is its floor (documented); sums stay accurate
        np.testing.assert_allclose(got, ref, atol=np.sqrt(8 * F32_EPS) * ref[0] * 1.5, rtol=0)
        assert abs(got.sum() - ref.sum()) / ref.sum() < 1e-4


def test_auto_falls_back_to_svd_on_low_rank_and_keeps_tail_accurate(monkeypatch):
    rng = np.random.default_rng(1)
    n = 96
    monkeypatch.setattr(S, "GRAM_MIN_SIZE", n)                # let 'auto' try the Gram route on small matrices
    w = np.stack([_planted(rng, n, n + 40, [5.0, 3.0, 1.0]),  # exactly rank 3: must fall back
                  rng.standard_normal((n, n + 40)).astype(np.float32)])   # full rank: stays on Gram
    sig, used = M.singular_values_with_info(w)
    np.testing.assert_array_equal(np.asarray(used), [True, False])
    sig = np.asarray(sig)
    np.testing.assert_allclose(sig[0, :3], [5.0, 3.0, 1.0], rtol=1e-5)
    assert np.max(sig[0, 3:]) < 1e-5 * 5.0
    ref = _sv64(w[1])
    assert abs(sig[1].sum() - ref.sum()) / ref.sum() < 1e-5
    gram = np.asarray(M.singular_values(w[0], method="gram"))
    assert np.max(gram[3:]) > 10 * np.max(sig[0, 3:])          # why the fallback exists
    # below GRAM_MIN_SIZE 'auto' goes straight to the SVD
    _, used = M.singular_values_with_info(rng.standard_normal((n - 1, n + 41)).astype(np.float32))
    assert bool(used)


def test_gram_eigenvalue_error_within_assumed_eta():
    rng = np.random.default_rng(2)
    for w in (rng.standard_normal((120, 200)), rng.standard_cauchy((120, 200)),
              _planted(rng, 120, 200, np.linspace(1, 0.01, 120))):
        w = w.astype(np.float32)
        sn, scale = jax.jit(S._sv_gram_normalised)(w)
        ref = _sv64(w) / float(scale)
        err = np.max(np.abs(np.asarray(sn, np.float64) ** 2 - ref ** 2)) / (F32_EPS * ref[0] ** 2)
        assert err <= S.GRAM_ETA


def test_batched_leading_axes():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 2, 20, 30)).astype(np.float32)
    got = np.asarray(M.singular_values(w))
    assert got.shape == (3, 2, 20)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(got[i, j], _sv64(w[i, j]), atol=2e-5 * _sv64(w[i, j])[0])
    assert np.asarray(M.norm_inf(w)).shape == (3, 2)


def test_norms_ratios_ranks_match_numpy():
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((25, 40)) * rng.uniform(0.1, 3, (25, 1))).astype(np.float32)
    w64 = w.astype(np.float64)
    s = _sv64(w)
    assert float(M.norm_inf(w)) == pytest.approx(np.linalg.norm(w64, np.inf), rel=1e-6)
    assert float(M.norm_2(w)) == pytest.approx(np.linalg.norm(w64, 2), rel=1e-5)
    assert float(M.norm_fro(w)) == pytest.approx(np.linalg.norm(w64, "fro"), rel=1e-6)
    r = M.norm_ratios(w)
    assert float(r["ratio_2_fro"]) == pytest.approx(s[0] / np.linalg.norm(w64), rel=1e-5)
    assert float(r["ratio_inf_fro"]) == pytest.approx(np.linalg.norm(w64, np.inf) / np.linalg.norm(w64), rel=1e-5)
    sig = M.singular_values(w)
    assert float(M.stable_rank(sig)) == pytest.approx((s ** 2).sum() / s[0] ** 2, rel=1e-5)
    p = s / s.sum()
    H = -(p * np.log(p)).sum()
    assert float(M.effective_rank_log_reference(sig)) == pytest.approx(H, rel=1e-5)
    assert float(M.effective_rank(sig)) == pytest.approx(np.exp(H), rel=1e-5)
    summ = M.spectral_summary(w)
    assert float(summ["stable_rank"]) == pytest.approx(float(M.stable_rank(sig)), rel=1e-6)
    assert 1.0 <= float(summ["effective_rank"]) <= 25.0


def test_effective_rank_of_equal_spectrum_and_zero_matrix():
    rng = np.random.default_rng(5)
    w = _planted(rng, 20, 30, [2.0] * 4)                 # rank 4, equal singular values
    sig = M.singular_values(w)
    assert float(M.effective_rank(sig)) == pytest.approx(4.0, rel=1e-4)
    assert float(M.effective_rank_log_reference(sig)) == pytest.approx(np.log(4.0), rel=1e-4)
    assert float(M.stable_rank(sig)) == pytest.approx(4.0, rel=1e-4)
    z = np.zeros((30, 50), np.float32)
    for method in ("auto", "gram", "svd"):
        assert np.all(np.asarray(M.singular_values(z, method=method)) == 0.0)
    summ = M.spectral_summary(z)
    assert all(float(v) == 0.0 for v in summ.values())


def test_bad_input():
    with pytest.raises(CrobustError):
        M.singular_values(np.ones(5))
    with pytest.raises(CrobustError):
        M.singular_values(np.ones((3, 4)), method="lanczos")
    with pytest.raises(CrobustError):
        M.norm_inf(np.ones(3))
    with pytest.raises(CrobustError):
        M.stable_rank(np.ones((0,)))
