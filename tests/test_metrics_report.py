"""crobust.metrics.layer_report: one jitted call over a population, every metric checked against numpy per
(member, layer), planted structure found in the right member and layer, JSON-able rows."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.metrics as M
from crobust._errors import CrobustError
from crobust.models import MLP, LowRankMLP
from crobust.models.matrices import layer_matrices


def np_vec(v, K):
    s = -np.sort(-np.abs(v))
    e1 = s[K:].sum() / s.sum() if s.sum() > 0 else 0.0
    e2 = np.sqrt((s[K:] ** 2).sum() / (s ** 2).sum()) if s.sum() > 0 else 0.0
    b = 1 - s[K - 1] / s[0] if s[0] > 0 and K > 1 else 0.0
    return e1, e2, b


@pytest.fixture(scope="module")
def population():
    model = MLP(num_classes=2, width=16, depth=4)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 8, 8, 1))))(keys)
    k1 = params["params"]["hidden_1"]["kernel"]
    params["params"]["hidden_1"]["kernel"] = k1.at[1, :, 4].multiply(30.0)   # member 1: neuron 4 dominates
    return params, M.layer_report(params, kappa=0.25, with_net_comp=True, input_scale=1.0)


def test_report_layout_and_rows(population):
    params, rep = population
    assert rep["layers"] == ["hidden_0", "hidden_1", "hidden_2", "head"]
    assert rep["shapes"] == [(16, 64), (16, 16), (16, 16), (2, 16)]
    assert rep["members"] == 3
    for name in M.LAYER_METRICS:
        assert rep["layer_metrics"][name].shape == (3, 4), name
    rows = M.report_rows(rep)
    assert len(rows) == 3 * 5
    json.dumps(rows, allow_nan=False)
    assert rows[0]["member"] == 0 and rows[0]["layer"] == "hidden_0" and rows[0]["in"] == 64
    assert rows[4]["layer"] == "network" and rows[4]["lipschitz_naive_inf"] > 0


def test_every_metric_matches_numpy_per_member_and_layer(population):
    params, rep = population
    lm = {k: np.asarray(v, np.float64) for k, v in rep["layer_metrics"].items()}
    mats = layer_matrices(params)
    kappa = 0.25
    for li, name in enumerate(rep["layers"]):
        for m in range(3):
            w = np.asarray(mats[name][m], np.float64)
            out, d_in = w.shape
            h = min(out, d_in)
            s = np.linalg.svd(w, compute_uv=False)
            nu = np.abs(w).sum(1)
            fro = np.linalg.norm(w)
            Kn, Ks, Kr = out - int((1 - kappa) * out), h - int((1 - kappa) * h), d_in - int((1 - kappa) * d_in)
            e1n, e2n, bn = np_vec(nu, Kn)
            e1s, e2s, bs = np_vec(s, Ks)
            p = s / s.sum()
            H = -(p * np.log(p)).sum()
            rows = [np_vec(r, Kr) for r in w]
            want = {
                "norm_inf": nu.max(), "norm_2": s[0], "norm_fro": fro, "ratio_2_fro": s[0] / fro,
                "ratio_inf_fro": nu.max() / fro, "stable_rank": (s ** 2).sum() / s[0] ** 2,
                "effective_rank": np.exp(H), "effective_rank_log_reference": H, "k_nu": Kn, "k_sigma": Ks,
                "eps_nu_q1": e1n, "eps_nu_q2": e2n, "beta_nu": bn, "eps_sigma_q1": e1s, "eps_sigma_q2": e2s,
                "beta_sigma": bs, "par_comp": 1 - np.mean([r[1] for r in rows]),
                "thm31_spectral_rhs": (1 - e1s) / (1 - bs) * np.sqrt(h) / Ks * fro,
                "thm31_neuron_rhs_fro": (1 - e1n) / (1 - bn) * np.sqrt(out * d_in) / Kn * fro,
                "thm31_neuron_rhs_rows": (1 - e1n) / (1 - bn) * np.sqrt(out * Kr) / Kn * fro
                / (1 - max(r[0] for r in rows)),
                "thm31_spectral_holds": 1.0, "thm31_neuron_holds": 1.0,
            }
            for metric, v in want.items():
                assert lm[metric][m, li] == pytest.approx(v, rel=2e-4, abs=1e-6), (metric, name, m)


def test_planted_neuron_found_in_its_member_and_layer(population):
    _, rep = population
    lm = {k: np.asarray(v) for k, v in rep["layer_metrics"].items()}
    li = rep["layers"].index("hidden_1")
    assert int(np.argmin(lm["eps_nu_q1"][:, li])) == 1
    assert int(np.argmax(lm["ratio_inf_fro"][:, li])) == 1
    assert lm["beta_nu"][1, li] > 0.9                       # one neuron dominates its top-k
    assert lm["eps_nu_q1"][1, li] < 0.5 * lm["eps_nu_q1"][0, li]


def test_network_metrics(population):
    params, rep = population
    lm = {k: np.asarray(v, np.float64) for k, v in rep["layer_metrics"].items()}
    nm = {k: np.asarray(v, np.float64) for k, v in rep["network_metrics"].items()}
    np.testing.assert_allclose(nm["lipschitz_naive_inf"], np.prod(lm["norm_inf"][:, :3], axis=1), rtol=1e-5)
    np.testing.assert_allclose(nm["lipschitz_naive_2"], np.prod(lm["norm_2"][:, :3], axis=1), rtol=1e-5)
    assert np.all(nm["lipschitz_aligned_inf"] <= nm["lipschitz_naive_inf"])
    # A_inf of the pairs (hidden_0, hidden_1), (hidden_1, hidden_2); NaN where a layer has no next encoder layer
    assert np.all(np.isfinite(lm["align_A_inf"][:, :2])) and np.all(np.isnan(lm["align_A_inf"][:, 2:]))
    mats = layer_matrices(params)
    for m in range(3):
        a = M.alignment_term(mats["hidden_0"][m], mats["hidden_1"][m], kappa=0.25, form="neuron", mode="auto")
        assert lm["align_A_inf"][m, 0] == pytest.approx(float(a["A"]), rel=1e-5)
        v = np.concatenate([np.abs(np.asarray(mats[n][m], np.float64)).ravel() for n in rep["layers"]])
        K = v.size - int(0.75 * v.size)
        s = -np.sort(-v)
        assert nm["net_comp"][m] == pytest.approx(1 - np.sqrt((s[K:] ** 2).sum() / (s ** 2).sum()), rel=1e-5)


def test_single_model_low_rank_and_population_flag():
    x = jnp.zeros((1, 4, 4, 1))
    model = MLP(num_classes=3, width=8, depth=2)
    p1 = model.init(jax.random.key(1), x)
    rep = M.layer_report(p1, kappa=0.5, input_scale=1.0)
    assert rep["members"] == 1 and rep["layer_metrics"]["norm_2"].shape == (1, 2)
    w = np.asarray(layer_matrices(p1)["hidden_0"], np.float64)
    assert float(rep["layer_metrics"]["norm_2"][0, 0]) == pytest.approx(np.linalg.norm(w, 2), rel=1e-5)
    with pytest.raises(CrobustError):
        M.layer_report(p1, population=True)
    with pytest.raises(CrobustError):
        M.layer_report(p1, kappa=0.0)
    lr = LowRankMLP(num_classes=3, width=8, rank=2, depth=2)
    pl = jax.vmap(lambda k: lr.init(k, x))(jax.random.split(jax.random.key(2), 2))
    rl = M.layer_report(pl, kappa=0.5, input_scale=1.0)
    er = np.asarray(rl["layer_metrics"]["effective_rank"])
    assert np.all(er[:, 0] <= 2.0 + 1e-4) and np.all(er[:, 0] >= 1.0)       # the rank-2 hidden layer
    assert np.all(np.asarray(rl["layer_metrics"]["eps_sigma_q2"])[:, 0] < 1e-4)   # k_σ = 2 keeps everything


def test_matrix_report_options_and_conv_layers():
    rng = np.random.default_rng(3)
    mats = {"l0": rng.standard_normal((2, 6, 5)).astype(np.float32),
            "l1": rng.standard_normal((2, 4, 6)).astype(np.float32),
            "head": rng.standard_normal((2, 2, 4)).astype(np.float32)}
    rep = M.matrix_report(mats, kappa=0.5, spectral_alignment=True, direct_pair_bounds=True, input_scale=1.0)
    nm = {k: np.asarray(v) for k, v in rep["network_metrics"].items()}
    assert np.all(nm["lipschitz_aligned_2"] <= nm["lipschitz_naive_2"] * (1 + 1e-6))
    assert np.all(nm["lipschitz_aligned_inf"] <= nm["lipschitz_naive_inf"] * (1 + 1e-6))
    lm = rep["layer_metrics"]
    assert np.all(np.isfinite(np.asarray(lm["align_A_2"])[:, 0]))
    # a true Lipschitz lower bound: the Jacobian norm on a random linear region of each member's encoder
    for m in range(2):
        x = rng.standard_normal(5)
        d = (mats["l0"][m] @ x > 0).astype(np.float64)
        jac = (np.diag((mats["l1"][m] @ (d * (mats["l0"][m] @ x)) > 0).astype(float)) @ mats["l1"][m]
               @ np.diag(d) @ mats["l0"][m])
        assert np.linalg.norm(jac, 2) <= nm["lipschitz_aligned_2"][m] * (1 + 1e-5)
        assert np.abs(jac).sum(1).max() <= nm["lipschitz_aligned_inf"][m] * (1 + 1e-5)
    conv = {"conv": rng.standard_normal((2, 3, 3, 4, 6)).astype(np.float32)}
    from crobust.models.matrices import kernel_to_matrix
    crep = M.matrix_report({"conv": kernel_to_matrix(conv["conv"])}, kappa=0.5, lipschitz=False)
    assert crep["shapes"] == [(6, 36)]
    with pytest.raises(CrobustError):
        M.matrix_report({"a": np.ones((2, 3, 4)), "b": np.ones((2, 3, 4)), "h": np.ones((2, 1, 3))})
    with pytest.raises(CrobustError):
        M.matrix_report({"a": np.ones((3, 4))})


def test_lipschitz_bounds_are_in_pixel_units_from_the_model_or_an_explicit_scale():
    """Models normalise inside ((x − μ)/s): the encoder's pixel-unit Lipschitz constant is the weight bound / min s.
    With std 0.25 the measured pixel-space Jacobian of Φ exceeds the normalised-unit bound, and stays below the
    model-derived one; with neither model nor input_scale the bounds refuse to guess."""
    model = MLP(num_classes=3, width=8, depth=2, mean=(0.5,), std=(0.25,))
    x = jnp.full((1, 4, 4, 1), 0.5)
    params = model.init(jax.random.key(4), x)
    with pytest.raises(CrobustError, match="input units"):
        M.layer_report(params, kappa=0.5)
    with pytest.raises(CrobustError, match="not both"):
        M.layer_report(params, kappa=0.5, model=model, input_scale=1.0)
    assert M.layer_report(params, kappa=0.5, lipschitz=False)["settings"]["input_scale"] == 1.0
    pixel = M.layer_report(params, kappa=0.5, model=model)
    normalised = M.layer_report(params, kappa=0.5, input_scale=1.0)
    assert pixel["settings"]["input_scale"] == pytest.approx(4.0) and "pixel" in pixel["settings"]["input_units"]
    l_pix = float(pixel["network_metrics"]["lipschitz_naive_2"][0])
    assert l_pix == pytest.approx(4 * float(normalised["network_metrics"]["lipschitz_naive_2"][0]), rel=1e-6)
    # Φ(x) = relu(W (x − μ)/s): its pixel Jacobian on the linear region of a point is D W / s
    phi = lambda q: model.apply(params, q, return_repr=True)[1][0]
    jac = jax.jacobian(phi)(jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 4, 4, 1)), jnp.float32))
    jac_norm = float(np.linalg.norm(np.asarray(jac).reshape(8, 16), 2))
    assert jac_norm > float(normalised["network_metrics"]["lipschitz_naive_2"][0])       # normalised units: wrong
    assert jac_norm <= l_pix * (1 + 1e-5)


def test_layer_by_layer_report_equals_the_one_program_report_and_compiles_once_per_layer_shape():
    """Without network metrics each layer is its own program (crobust.metrics.report): the same per-layer
    operations as the whole-network program, fused separately — float32 round-off (relative ~1e-6 on O(1) values;
    1e-4 leaves room for the eigen-solver's iteration), integer counts and 0/1 flags equal. Two ResNets whose
    layers repeat one shape (width 4, one block per stage) compile no more programs than they have shapes."""
    from crobust.metrics import report as R
    from crobust.models import ResNet18
    model = ResNet18(4, stem="cifar", width=4, stage_sizes=(1, 1, 1, 1))
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3))))(jax.random.split(jax.random.key(3), 2))
    before = R._single_layer_core._cache_size()
    rep = M.layer_report(params, kappa=0.25, lipschitz=False)
    shapes = {tuple(s) for s in rep["shapes"]}
    assert R._single_layer_core._cache_size() - before <= len(shapes) < len(rep["shapes"])
    st = R._static(0.25, "auto", False, False, False, False, 1.0, rep["settings"]["n_hidden"])
    whole, net = R._report_from_params(params, population=True, **st)
    assert net == {} and set(whole) == set(rep["layer_metrics"])
    for name, value in whole.items():
        exact = name.startswith(("k_", "thm31_", "sv_used"))
        np.testing.assert_allclose(rep["layer_metrics"][name], value, rtol=0 if exact else 1e-4,
                                   atol=0 if exact else 1e-6, err_msg=name)
    again = M.layer_report(jax.tree.map(lambda a: 2.0 * a, params), kappa=0.25, lipschitz=False)
    assert R._single_layer_core._cache_size() - before <= len(shapes)          # a second model: no new program
    np.testing.assert_allclose(again["layer_metrics"]["norm_fro"], 2.0 * rep["layer_metrics"]["norm_fro"],
                               rtol=1e-6)
    # metrics=: those alone, from a program that computes nothing else; the same per-layer operations, so the same
    # values to float32 round-off (the tolerances above), counts exact
    chosen = ("eps_sigma_q2", "beta_nu", "k_nu", "ratio_inf_fro")
    few = M.layer_report(params, kappa=0.25, lipschitz=False, metrics=chosen)
    assert set(few["layer_metrics"]) == set(chosen)
    for name in chosen:
        exact = name.startswith("k_")
        np.testing.assert_allclose(few["layer_metrics"][name], rep["layer_metrics"][name], rtol=0 if exact else 1e-4,
                                   atol=0 if exact else 1e-6, err_msg=name)
    with pytest.raises(CrobustError, match="unknown per-layer metric"):
        M.layer_report(params, kappa=0.25, lipschitz=False, metrics=("eps_sigma_q2", "eps_sgima_q1"))
    with pytest.raises(CrobustError, match="lipschitz=False"):
        M.layer_report(params, kappa=0.25, input_scale=1.0, metrics=("eps_sigma_q2",))
    with pytest.raises(CrobustError, match="non-empty"):
        M.layer_report(params, kappa=0.25, lipschitz=False, metrics="eps_sigma_q2")
