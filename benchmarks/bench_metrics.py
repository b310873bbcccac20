"""Benchmark: every per-layer metric of every member of a population in one jitted call (``layer_report``) versus
numpy/scipy computing the same singular values sequentially.

Setting (full): 8 members of the reference code's CIFAR-10 FCN, ``MLP(10, 2000, 5)`` = 3072→2000×4→10 (18.2M
weights per member, 145M in all), random init (``jax.vmap(MLP.init)``), κ = 0.1. The baseline is the same singular
values by ``scipy.linalg.svdvals`` (LAPACK gesdd, float32, each matrix given in its faster C-contiguous (out, in)
layout, conversion excluded from the timing), one matrix after another; we also time that loop plus the remaining
metrics in numpy (``numpy_full_s``). Precision: float32 throughout, ``jax.default_matmul_precision('float32')`` and
``precision=HIGHEST`` in every product. Agreement: every metric in ``layer_report`` that numpy recomputes from its
singular values / weights, relative error max over members × layers; and the singular values themselves
(max_i |Δσ_i| / σ_1, and the nuclear norm).

Timings are the minimum over ``repeats`` interleaved runs (JAX, baseline, JAX, baseline …) because the machine may
be shared; the load average is reported. ``quick=True``: 2 members of 3072→256×2→10, for CI.

Run: ``python -m benchmarks.bench_metrics`` (prints JSON) or through ``python -m benchmarks``.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.linalg

from benchmarks import _machine as _machine_info
from crobust.metrics import layer_report, singular_values
from crobust.models import MLP
from crobust.models.matrices import layer_matrices

TARGET_SPEEDUP = 2.0
TARGET_REL_ERR = 1e-4


def _kept(d, kappa):
    return d - int((1.0 - kappa) * d)


def _np_vec(v, K):
    """ε_1, ε_2, β of a non-negative float64 vector (…, n) at kept count K (numpy reference)."""
    s = -np.sort(-v, axis=-1)
    tot1, tot2 = s.sum(-1), (s * s).sum(-1)
    tail1, tail2 = s[..., K:].sum(-1), (s[..., K:] ** 2).sum(-1)
    e1 = np.where(tot1 > 0, tail1 / np.where(tot1 > 0, tot1, 1), 0)
    e2 = np.sqrt(np.where(tot2 > 0, tail2 / np.where(tot2 > 0, tot2, 1), 0))
    beta = np.where(s[..., 0] > 0, 1 - s[..., K - 1] / np.where(s[..., 0] > 0, s[..., 0], 1), 0)
    return e1, e2, beta


def _np_layer(W, sig, kappa):
    """The numpy side of every metric we compare, from W (out, in) float32 and its float32 singular values."""
    W64 = W.astype(np.float64)
    s = sig.astype(np.float64)
    out, d_in = W.shape
    h = min(out, d_in)
    nu = np.abs(W64).sum(1)
    fro = np.sqrt((W64 * W64).sum())
    Kn, Ks, Kr = _kept(out, kappa), _kept(h, kappa), _kept(d_in, kappa)
    e1n, e2n, bn = _np_vec(nu, Kn)
    e1s, e2s, bs = _np_vec(s, Ks)
    p = s / s.sum()
    H = -(p[p > 0] * np.log(p[p > 0])).sum()
    a = np.abs(W64)
    part = -np.partition(-a, Kr - 1, axis=1)[:, :Kr]          # top-Kr magnitudes of each row (unordered)
    rows_tail2 = (a * a).sum(1) - (part * part).sum(1)
    row_e2 = np.sqrt(np.maximum(rows_tail2, 0) / (a * a).sum(1))
    return {
        "norm_inf": nu.max(), "norm_2": s[0], "norm_fro": fro, "ratio_2_fro": s[0] / fro, "ratio_inf_fro": nu.max() / fro,
        "stable_rank": (s * s).sum() / s[0] ** 2, "effective_rank": np.exp(H), "effective_rank_log_reference": H,
        "eps_nu_q1": e1n, "eps_nu_q2": e2n, "beta_nu": bn, "eps_sigma_q1": e1s, "eps_sigma_q2": e2s, "beta_sigma": bs,
        "thm31_spectral_rhs": (1 - e1s) / (1 - bs) * np.sqrt(h) / Ks * fro,
        "thm31_neuron_rhs_fro": (1 - e1n) / (1 - bn) * np.sqrt(out * d_in) / Kn * fro,
        "par_comp": 1 - row_e2.mean(),
    }


def _baseline(mats_np, kappa):
    """Sequential scipy/numpy pass: (svd seconds, full seconds, singular values, metrics)."""
    t_svd = 0.0
    t0 = time.perf_counter()
    sigs, mets = [], []
    for per_member in mats_np:
        sm, mm = [], []
        for W in per_member:
            t = time.perf_counter()
            sig = scipy.linalg.svdvals(W, check_finite=False)
            t_svd += time.perf_counter() - t
            sm.append(sig)
            mm.append(_np_layer(W, sig, kappa))
        sigs.append(sm)
        mets.append(mm)
    return t_svd, time.perf_counter() - t0, sigs, mets


def _machine():
    return _machine_info.describe(scipy=scipy.__version__)


def run(quick: bool = False) -> dict:
    members, width, depth, repeats = (2, 256, 3, 2) if quick else (8, 2000, 5, 3)
    kappa = 0.1
    model = MLP(num_classes=10, width=width, depth=depth)
    keys = jax.random.split(jax.random.key(0), members)
    params = jax.jit(jax.vmap(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)))))(keys)
    jax.block_until_ready(params)
    with jax.default_matmul_precision("float32"):
        mats = layer_matrices(params)
    names = list(mats)
    mats_np = [[np.ascontiguousarray(np.asarray(mats[n][m])) for n in names] for m in range(members)]
    n_weights = int(sum(w.size for w in mats_np[0]))
    machine_before = _machine()

    def jax_call(net=False):
        with jax.default_matmul_precision("float32"):
            rep = layer_report(params, kappa=kappa, with_net_comp=net, input_scale=1.0)
            jax.block_until_ready((rep["layer_metrics"], rep["network_metrics"]))
        return rep

    t = time.perf_counter()
    rep = jax_call()
    first_call = time.perf_counter() - t
    rep_net = jax_call(net=True)                         # compile the variant with net_comp
    jax_times, net_times, svd_times, full_times = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        rep = jax_call()
        jax_times.append(time.perf_counter() - t)
        t_svd, t_full, sigs, mets = _baseline(mats_np, kappa)
        svd_times.append(t_svd)
        full_times.append(t_full)
        t = time.perf_counter()
        rep_net = jax_call(net=True)
        net_times.append(time.perf_counter() - t)

    # agreement with numpy
    lm = {k: np.asarray(v, np.float64) for k, v in rep["layer_metrics"].items()}
    agreement = {}
    for metric in mets[0][0]:
        ref = np.array([[mets[m][l][metric] for l in range(len(names))] for m in range(members)], np.float64)
        got = lm[metric]
        rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)
        agreement[metric] = float(rel.max())
    # net_comp against a numpy concatenation
    nc_ref = []
    for m in range(members):
        v = np.concatenate([np.abs(W.astype(np.float64)).ravel() for W in mats_np[m]])
        K = _kept(v.size, kappa)
        part = -np.partition(-v, K - 1)[:K]
        nc_ref.append(1 - np.sqrt(max((v * v).sum() - (part * part).sum(), 0) / (v * v).sum()))
    nc = np.asarray(rep_net["network_metrics"]["net_comp"], np.float64)
    agreement["net_comp"] = float(np.max(np.abs(nc - nc_ref) / np.abs(nc_ref)))
    # the singular values themselves
    sv_abs, sv_nuc = 0.0, 0.0
    with jax.default_matmul_precision("float32"):
        for li, n in enumerate(names):
            sj = np.asarray(singular_values(mats[n]), np.float64)
            for m in range(members):
                sn = sigs[m][li].astype(np.float64)
                sv_abs = max(sv_abs, float(np.max(np.abs(sj[m] - sn)) / sn[0]))
                sv_nuc = max(sv_nuc, float(abs(sj[m].sum() - sn.sum()) / sn.sum()))
    max_rel = max(agreement.values())
    jax_s, svd_s, full_s = min(jax_times), min(svd_times), min(full_times)
    speedup = svd_s / jax_s
    used = np.asarray(rep["layer_metrics"]["sv_used_svd"])                       # (members, layers)
    used_svd = float(used.mean())
    # 'auto' takes the SVD directly below GRAM_MIN_SIZE (here the 10×2000 head: cheap, by design, not a fallback);
    # the real fallback rate is over the layers that went the Gram route first
    from crobust.metrics.spectral import GRAM_MIN_SIZE
    gram_cols = [i for i, w in enumerate(mats_np[0]) if min(w.shape) >= GRAM_MIN_SIZE]
    gram_fallback = float(used[:, gram_cols].mean()) if gram_cols else 0.0
    return {
        "name": "metrics",
        "setting": {"model": f"MLP(num_classes=10, width={width}, depth={depth}) on 32x32x3 inputs",
                    "layers": {n: list(mats_np[0][i].shape) for i, n in enumerate(names)},
                    "members": members, "weights_per_member": n_weights, "kappa": kappa, "repeats": repeats,
                    "precision": "float32; jax.default_matmul_precision('float32') + precision=HIGHEST",
                    "jax_call": "crobust.metrics.layer_report(params, kappa=0.1, input_scale=1.0) (defaults: sv method 'auto', every "
                                "per-layer metric incl. par_comp and Theorem 3.1, neuron alignment A_inf, naive and "
                                "aligned Lipschitz bounds); also timed with with_net_comp=True",
                    "baseline": "scipy.linalg.svdvals (gesdd, float32) per matrix, sequential, C-contiguous (out, in)",
                    "quick": quick},
        "machine": machine_before,
        "loadavg_after": _machine()["loadavg_1_5_15"],
        "results": {
            "jax_layer_report_s": jax_s, "jax_times_s": jax_times, "jax_first_call_incl_compile_s": first_call,
            "jax_layer_report_with_net_comp_s": min(net_times), "jax_with_net_comp_times_s": net_times,
            "scipy_svdvals_sequential_s": svd_s, "scipy_times_s": svd_times,
            "numpy_full_metrics_sequential_s": full_s,
            "speedup_vs_svdvals": speedup, "speedup_vs_numpy_full": full_s / jax_s,
            "speedup_with_net_comp_vs_svdvals": svd_s / min(net_times),
            "fraction_of_matrices_on_svd_fallback": used_svd,
            "fraction_of_matrices_by_svd_directly_below_gram_min_size": float(
                1 - len(gram_cols) / len(names)),
            "fraction_of_gram_route_matrices_on_svd_fallback": gram_fallback,
            "agreement_max_rel_err_by_metric": agreement, "agreement_max_rel_err": max_rel,
            "singular_values_max_abs_err_over_sigma1": sv_abs, "nuclear_norm_max_rel_err": sv_nuc,
        },
        "targets": {
            "speedup_vs_numpy_scipy_svd": {"value": speedup, "target": TARGET_SPEEDUP, "met": bool(speedup >= TARGET_SPEEDUP)},
            "agreement_rel_err": {"value": max_rel, "target": TARGET_REL_ERR, "met": bool(max_rel <= TARGET_REL_ERR)},
        },
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
