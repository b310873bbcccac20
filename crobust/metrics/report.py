"""``layer_report``: every per-layer metric of every member of a population, in jitted calls.

Usage::

    params = jax.vmap(MLP(10, 2000, 5).init)(keys, x[:1])          # a population: leading member axis M
    rep = layer_report(params, kappa=0.1)
    rep["layer_metrics"]["eps_sigma_q2"]                             # (M, L) array, L = hidden layers + head
    rows = report_rows(rep)                                          # one JSON-able dict per (member, layer)

Per layer (W in the paper's orientation, out × in, from :func:`crobust.models.matrices.layer_matrices`; the head
included), with k from the kept fraction κ by K = d − ⌊(1−κ)d⌋ (neurons: d = out; spectrum: d = min(out, in);
entries of a row: d = in):

=========================================  ====================================================================
``norm_inf``, ``norm_2``, ``norm_fro``      ‖W‖_∞ (max row ℓ1), σ_1, ‖W‖_F
``ratio_2_fro``, ``ratio_inf_fro``          ‖W‖₂/‖W‖_F, ‖W‖_∞/‖W‖_F
``stable_rank``, ``effective_rank``         ‖W‖_F²/‖W‖₂², exp(H(σ/Σσ))
``effective_rank_log_reference``            H(σ/Σσ), the reference code's ``par_er``
``k_nu``, ``eps_nu_q1``, ``eps_nu_q2``,     neuron compressibility on row ℓ1 norms (ε for q = 1 and 2, β)
``beta_nu``
``k_sigma``, ``eps_sigma_q1``,              spectral compressibility on singular values
``eps_sigma_q2``, ``beta_sigma``
``thm31_spectral_rhs``,                     Theorem 3.1 right-hand sides (q = 1 exact-ε; :mod:`.bounds`) and
``thm31_neuron_rhs_fro``,                   whether each bounds the measured norm (lhs ≤ rhs·(1 + 1e-5))
``thm31_neuron_rhs_rows``,
``thm31_spectral_holds``,
``thm31_neuron_holds``
``par_comp``                                the reference code's ``par_comp_κ`` (q = 2; entry compressibility of
                                            rows, 1 − mean row error)
``sv_used_svd``                             whether the singular values came from the SVD fallback (see
                                            :func:`crobust.metrics.spectral.singular_values`)
``align_A_inf``, ``align_R_inf``            A_∞(l), R_∞(l) for the pair (l, l+1) of encoder layers, neuron form;
                                            NaN on the last encoder layer and the head
``align_A_2``, ``align_R_2``                the same, spectral form, p = 2 (only with ``spectral_alignment``)
=========================================  ====================================================================

Per member (``network_metrics``): ``net_comp`` (the reference's ``net_comp_κ``, all layers with the head; only
with ``with_net_comp=True``),
``lipschitz_naive_inf``, ``lipschitz_naive_2``, ``lipschitz_aligned_inf`` and (with ``spectral_alignment`` or
``direct_pair_bounds``) ``lipschitz_aligned_2``, ``n_pairs_inf`` / ``n_pairs_2``: the encoder (hidden layers, head
excluded) Lipschitz bounds of Theorem 3.2 times ``input_scale``.

Units of the Lipschitz bounds: the models take pixels and normalise inside, z⁰ = (x − μ)/s per channel, so the
encoder's Lipschitz constant in pixel units is the bound on the weights times ‖diag(1/s)‖_p = 1/min_c s_c (for
p = 2 and p = ∞ alike). There is no default: pass ``model=`` (``input_scale`` = 1/min(model.std), the pixel
units every attack and ε uses) or ``input_scale=`` explicitly (1.0 for bounds in the normalised units);
``lipschitz=False`` needs neither.

Compiled programs: with a network metric (the Lipschitz bounds, ``net_comp``) the whole report is one program;
without one (``lipschitz=False``, the convolutional studies' case) each layer is its own program, compiled once
per layer shape and shared by every layer and model of that shape (a ResNet-18 repeats its shapes). There
``metrics=`` names the per-layer metrics wanted, and the program computes those alone (XLA drops the rest: the
row-entry threshold search of ``par_comp`` and Theorem 3.1's row refinement, the Theorem 3.1 bounds), which
compiles in about a third of the time of the whole set; the values are those of the whole report.

Population handling: every leaf has a leading member axis M (``population=True``); a single model's params
(``population=False``) is reported as M = 1. ``None`` infers it from the first layer's kernel rank. On CPU members
are processed by ``lax.map`` (each step already uses every core, and the singular-value fallback stays a real
branch); on accelerators by ``vmap``.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from crobust import precision
from crobust._errors import CrobustError, check_choice
from crobust.metrics import _common as C
from crobust.metrics._common import kept_count
from crobust.metrics.bounds import _chain_bound, encoder_lipschitz
from crobust.metrics.compressibility import _vec_stats, net_comp
from crobust.metrics.spectral import SV_METHODS, effective_rank, effective_rank_log_reference, stable_rank
from crobust.metrics.spectral import singular_values_with_info
from crobust.models.matrices import layer_matrices

__all__ = ["layer_report", "matrix_report", "report_rows", "LAYER_METRICS"]

LAYER_METRICS = (
    "norm_inf", "norm_2", "norm_fro", "ratio_2_fro", "ratio_inf_fro", "stable_rank", "effective_rank",
    "effective_rank_log_reference", "k_nu", "eps_nu_q1", "eps_nu_q2", "beta_nu", "k_sigma", "eps_sigma_q1",
    "eps_sigma_q2", "beta_sigma", "thm31_spectral_rhs", "thm31_neuron_rhs_fro", "thm31_neuron_rhs_rows",
    "thm31_spectral_holds", "thm31_neuron_holds", "par_comp", "sv_used_svd",
)
_RTOL = 1e-5


def _layer_metrics(kt, kappa, method):
    """All per-layer metrics of one matrix W (out, in), given as kt = Wᵀ (in, out) → dict of () arrays.

    Wᵀ is the flax kernel's own layout, so for an MLP's parameters nothing is transposed in memory: the rows of W
    (neurons) are the columns of kt and every per-row reduction runs down the columns (contiguous, vectorised);
    σ(Wᵀ) = σ(W), so the singular values are taken of kt directly. Measured on the 2000-wide benchmark layers, a
    reduction over the rows of a materialised (out, in) W cost ~2× more than this."""
    d_in, out = kt.shape
    h = min(out, d_in)
    sig, used = singular_values_with_info(kt, method=method)
    nu = jnp.sum(jnp.abs(kt), axis=0)
    fro = jnp.sqrt(jnp.sum(jnp.square(kt)))
    ninf = jnp.max(nu)
    K_nu, K_sig, K_row = kept_count(out, kappa=kappa), kept_count(h, kappa=kappa), kept_count(d_in, kappa=kappa)
    en, bn, omen, ombn = _vec_stats(nu, K_nu)
    es, bs, omes, ombs = _vec_stats(sig, K_sig)
    # rows: one threshold search serves par_comp (q = 2) and Theorem 3.1's row refinement (q = 1)
    er, _, row_ome, _ = _vec_stats(kt, K_row, axis=0)       # rows of W = columns of Wᵀ
    eps_r = 1.0 - jnp.min(row_ome)
    rhs_sig = _chain_bound(omes, ombs, K_sig, math.sqrt(h) * fro)
    rhs_fro = _chain_bound(omen, ombn, K_nu, math.sqrt(out * d_in) * fro)
    rhs_rows = _chain_bound(omen, ombn, K_nu, math.sqrt(out * K_row) * fro / jnp.maximum(1.0 - eps_r, 1e-30))
    tol = 1.0 + _RTOL
    return {
        "norm_inf": ninf, "norm_2": sig[0], "norm_fro": fro,
        "ratio_2_fro": C.safe_div(sig[0], fro), "ratio_inf_fro": C.safe_div(ninf, fro),
        "stable_rank": stable_rank(sig), "effective_rank": effective_rank(sig),
        "effective_rank_log_reference": effective_rank_log_reference(sig),
        "k_nu": jnp.float32(K_nu), "eps_nu_q1": en[1], "eps_nu_q2": en[2], "beta_nu": bn,
        "k_sigma": jnp.float32(K_sig), "eps_sigma_q1": es[1], "eps_sigma_q2": es[2], "beta_sigma": bs,
        "thm31_spectral_rhs": rhs_sig, "thm31_neuron_rhs_fro": rhs_fro, "thm31_neuron_rhs_rows": rhs_rows,
        "thm31_spectral_holds": (sig[0] <= rhs_sig * tol).astype(jnp.float32),
        "thm31_neuron_holds": ((ninf <= rhs_fro * tol) & (ninf <= rhs_rows * tol)).astype(jnp.float32),
        "par_comp": 1.0 - jnp.mean(er[2]), "sv_used_svd": used.astype(jnp.float32),
    }


def _member_report(kts, *, kappa, method, lipschitz, spectral_alignment, direct_pair_bounds, with_net_comp,
                   input_scale, n_hidden):
    """Everything for one member, from its layers' transposes kt = Wᵀ (in, out): ({metric: (L,)}, {metric: ()})."""
    per_layer = [_layer_metrics(kt, kappa, method) for kt in kts]
    mats = [kt.T for kt in kts]
    layer = {m: jnp.stack([pl[m] for pl in per_layer]) for m in per_layer[0]}
    net = {}
    if with_net_comp:
        net["net_comp"] = net_comp(list(kts), kappa=kappa, q=2)      # a statistic of the set of all entries
    hidden = list(mats[:n_hidden])
    nan_col = jnp.full((len(mats),), jnp.nan, jnp.float32)
    if lipschitz and hidden:
        norms_inf = layer["norm_inf"][:n_hidden]
        norms_2 = layer["norm_2"][:n_hidden]
        net["lipschitz_naive_inf"] = jnp.prod(norms_inf) * input_scale
        net["lipschitz_naive_2"] = jnp.prod(norms_2) * input_scale
        li = encoder_lipschitz(hidden, "inf", kappa=kappa, form="neuron", mode="auto",
                               direct=direct_pair_bounds, input_scale=input_scale)
        net["lipschitz_aligned_inf"] = li["aligned"]
        net["n_pairs_inf"] = jnp.sum(li["paired"]).astype(jnp.float32)
        layer["align_A_inf"] = nan_col.at[: n_hidden - 1].set(li["A"])
        layer["align_R_inf"] = nan_col.at[: n_hidden - 1].set(li["R"])
        if spectral_alignment or direct_pair_bounds:
            if spectral_alignment:
                l2 = encoder_lipschitz(hidden, 2, kappa=kappa, form="spectral", mode="auto",
                                       direct=direct_pair_bounds, input_scale=input_scale)
                layer["align_A_2"] = nan_col.at[: n_hidden - 1].set(l2["A"])
                layer["align_R_2"] = nan_col.at[: n_hidden - 1].set(l2["R"])
                net["lipschitz_aligned_2"] = l2["aligned"]
                net["n_pairs_2"] = jnp.sum(l2["paired"]).astype(jnp.float32)
            else:
                from crobust.metrics.alignment import max_pattern_norm
                from crobust.metrics.bounds import lipschitz_aligned

                factors = jnp.stack([max_pattern_norm(hidden[i], hidden[i + 1], 2, mode="bound")
                                     for i in range(n_hidden - 1)]) if n_hidden > 1 else jnp.zeros((0,))
                dp = lipschitz_aligned(norms_2, factors)
                net["lipschitz_aligned_2"] = dp["bound"] * input_scale
                net["n_pairs_2"] = jnp.sum(dp["paired"]).astype(jnp.float32)
    return layer, net


@functools.partial(jax.jit, static_argnames=("kappa", "method", "lipschitz", "spectral_alignment",
                                             "direct_pair_bounds", "with_net_comp", "input_scale", "n_hidden",
                                             "loop"))
def _report_core(mats, *, kappa, method, lipschitz, spectral_alignment, direct_pair_bounds, with_net_comp,
                 input_scale, n_hidden, loop):
    fn = functools.partial(_member_report, kappa=kappa, method=method, lipschitz=lipschitz,
                           spectral_alignment=spectral_alignment, direct_pair_bounds=direct_pair_bounds,
                           with_net_comp=with_net_comp, input_scale=input_scale, n_hidden=n_hidden)
    # members see Wᵀ (M, in, out): for params that is the kernels themselves (transpose∘transpose folds away)
    kts = tuple(jnp.swapaxes(w, -1, -2) for w in mats)
    with precision.full():
        if loop == "map":
            return lax.map(fn, kts)
        return jax.vmap(fn)(kts)


def _validate(names, shapes, kappa, method, n_hidden, lipschitz):
    check_choice("singular-value method", method, SV_METHODS)
    kept_count(1, kappa=kappa)                                   # validates kappa
    for n, s in zip(names, shapes):
        if len(s) != 3:
            raise CrobustError(f"layer {n!r} must be (M, out, in) with a member axis, got shape {tuple(s)}")
    M = shapes[0][0]
    if any(s[0] != M for s in shapes):
        raise CrobustError(f"every layer needs the same member count, got {[s[0] for s in shapes]}")
    n_hidden = len(shapes) - 1 if n_hidden is None else int(n_hidden)
    if not 0 <= n_hidden <= len(shapes):
        raise CrobustError(f"n_hidden must be in [0, {len(shapes)}], got {n_hidden}")
    if lipschitz:
        for i in range(n_hidden - 1):
            if shapes[i + 1][2] != shapes[i][1]:
                raise CrobustError(f"encoder layers {names[i]!r} {shapes[i][1:]} and {names[i + 1]!r} "
                                   f"{shapes[i + 1][1:]} do not chain; pass lipschitz=False")
    return M, n_hidden


def _package(names, shapes, M, layer, net, static, units):
    return {"layers": list(names), "shapes": [tuple(int(x) for x in s[1:]) for s in shapes], "members": int(M),
            "layer_metrics": layer, "network_metrics": net,
            "settings": {"kappa": static["kappa"], "sv_method": static["method"], "input_scale": static["input_scale"],
                         "input_units": units,
                         "n_hidden": static["n_hidden"], "spectral_alignment": static["spectral_alignment"],
                         "direct_pair_bounds": static["direct_pair_bounds"],
                         "with_net_comp": static["with_net_comp"], "precision": "float32 (HIGHEST)",
                         "member_loop": static["loop"]}}


def input_scale_of(model) -> float:
    """1/min(std) of a model that normalises its pixel input inside ((x − μ)/s, e.g. :class:`crobust.models.MLP`):
    the factor from normalised-unit to pixel-unit Lipschitz bounds (‖diag(1/s)‖_p for p = 2, ∞)."""
    std = getattr(model, "std", None)
    if std is None:
        raise CrobustError(f"cannot derive input_scale from {type(model).__name__}: it has no 'std' attribute; "
                           "pass input_scale explicitly")
    values = np.atleast_1d(np.asarray(std, np.float64))
    if values.size == 0 or not np.all(values > 0):
        raise CrobustError(f"model std must be positive, got {values.tolist()}")
    return float(1.0 / values.min())


def _resolve_scale(lipschitz, model, input_scale):
    """(input_scale, units) for the Lipschitz bounds; no silent default (see the module docstring)."""
    if model is not None and input_scale is not None:
        raise CrobustError("pass either model (input_scale = 1/min(model.std)) or input_scale, not both")
    if model is not None:
        return input_scale_of(model), "pixel (1/min(model.std))"
    if input_scale is not None:
        value = float(input_scale)
        if not value > 0:
            raise CrobustError(f"input_scale must be > 0, got {input_scale!r}")
        return value, "explicit input_scale"
    if lipschitz:
        raise CrobustError("the Lipschitz bounds need the input units: pass model=... (pixel units, input_scale = "
                           "1/min(std)) or input_scale=... (1.0 for normalised units), or lipschitz=False")
    return 1.0, "none (lipschitz=False)"


def _static(kappa, method, lipschitz, spectral_alignment, direct_pair_bounds, with_net_comp, input_scale,
            n_hidden):
    return dict(kappa=float(kappa), method=method, lipschitz=bool(lipschitz),
                spectral_alignment=bool(spectral_alignment), direct_pair_bounds=bool(direct_pair_bounds),
                with_net_comp=bool(with_net_comp), input_scale=float(input_scale), n_hidden=n_hidden,
                loop="map" if C.is_cpu() else "vmap")


def matrix_report(mats: Mapping, *, kappa=0.1, method="auto", n_hidden=None, lipschitz=True,
                  spectral_alignment=False, direct_pair_bounds=False, with_net_comp=False, input_scale=None,
                  model=None, metrics=None):
    """:func:`layer_report` on matrices already in the paper's orientation.

    ``mats``: {layer name: W (M, out, in)} in forward order, every W with the member axis M. ``n_hidden``: how many
    of the first layers form the encoder Φ for the Lipschitz bounds (default: all but the last, the head); they must
    chain (out of one = in of the next). Conv layers can be included (matricised with
    :func:`crobust.models.matrices.kernel_to_matrix`) with ``lipschitz=False``. With ``lipschitz`` the input units
    are required: ``model=`` or ``input_scale=`` (as :func:`layer_report`); ``metrics`` as :func:`layer_report`.
    """
    if not isinstance(mats, Mapping) or not mats:
        raise CrobustError("mats must be a non-empty mapping {layer name: W (M, out, in)}")
    names = list(mats)
    arrs = [jnp.asarray(mats[n], jnp.float32) for n in names]
    shapes = [tuple(a.shape) for a in arrs]
    M, n_hidden = _validate(names, shapes, kappa, method, n_hidden, lipschitz)
    input_scale, units = _resolve_scale(lipschitz, model, input_scale)
    st = _static(kappa, method, lipschitz, spectral_alignment, direct_pair_bounds, with_net_comp, input_scale,
                 n_hidden)
    chosen = _selection(metrics, st)
    layer, net = _report_layer_by_layer(arrs, st, chosen) if _per_layer_only(st) else _report_core(tuple(arrs), **st)
    return _package(names, shapes, M, layer, net, st, units)


@functools.partial(jax.jit, static_argnames=("population", "kappa", "method", "lipschitz", "spectral_alignment",
                                             "direct_pair_bounds", "with_net_comp", "input_scale", "n_hidden",
                                             "loop"))
def _report_from_params(params, *, population, **static):
    with precision.full():
        m = layer_matrices(params)
    mats = tuple(m.values()) if population else tuple(w[None] for w in m.values())
    return _report_core(mats, **static)


@functools.partial(jax.jit, static_argnames=("kappa", "method", "loop", "names"))
def _single_layer_core(mat, *, kappa, method, loop, names=None):
    """:func:`_layer_metrics` of one layer for every member: mat (M, out, in) → {metric: (M,)}, every metric or
    the sorted tuple ``names`` only. One compiled program per layer shape (and selection), shared by every layer
    and model of that shape."""
    def fn(kt):
        out = _layer_metrics(kt, kappa=kappa, method=method)
        return out if names is None else {k: out[k] for k in names}

    kt = jnp.swapaxes(mat, -1, -2)
    with precision.full():
        return lax.map(fn, kt) if loop == "map" else jax.vmap(fn)(kt)


def _selection(metrics, static):
    """The sorted tuple of per-layer metric names to compute, or None for all (validated)."""
    if metrics is None:
        return None
    if isinstance(metrics, str) or not metrics:
        raise CrobustError(f"metrics must be a non-empty list of per-layer metric names, got {metrics!r}")
    if not _per_layer_only(static):
        raise CrobustError("metrics= selects per-layer metrics of a report without network metrics: pass "
                           "lipschitz=False and with_net_comp=False with it")
    unknown = sorted(set(metrics) - set(LAYER_METRICS))
    if unknown:
        raise CrobustError(f"unknown per-layer metric(s) {unknown}; valid: {', '.join(LAYER_METRICS)}")
    return tuple(sorted(set(metrics)))


def _per_layer_only(static) -> bool:
    """Whether the report has no network metric (no Lipschitz bounds, no ``net_comp``): then every layer can be
    computed on its own."""
    return not static["lipschitz"] and not static["with_net_comp"]


def _report_layer_by_layer(mats, static, names=None):
    """({metric: (M, L)}, {}) from the layer matrices (M, out, in), one :func:`_single_layer_core` call each."""
    per = [_single_layer_core(m, kappa=static["kappa"], method=static["method"], loop=static["loop"], names=names)
           for m in mats]
    return {k: jnp.stack([p[k] for p in per], axis=1) for k in per[0]}, {}


def layer_report(params, *, kappa=0.1, population=None, method="auto", lipschitz=True, spectral_alignment=False,
                 direct_pair_bounds=False, with_net_comp=False, input_scale=None, model=None, metrics=None):
    """Every metric of every layer of every member of a population of any crobust model, in jitted calls (one
    program, or one per layer shape without network metrics: module docstring).

    Args:
      params: the flax variables (or their ``'params'``) of an :class:`~crobust.models.MLP` or
        :class:`~crobust.models.LowRankMLP`, every leaf with a leading member axis (or none: ``population=False``).
      kappa: kept fraction for k_ν, k_σ, the per-row k of ``par_comp`` and Theorem 3.1's row refinement, and the
        top-k sub-structures of the alignment terms (static; default 0.1 like the reference's ``par_comp_0.1``).
      population: whether leaves carry the member axis; None infers it (layer matrices of rank 3 = population).
      method: singular-value method ('auto', 'gram', 'svd'; :func:`crobust.metrics.spectral.singular_values`).
      lipschitz: compute the encoder Lipschitz bounds (naive, aligned ∞).
      spectral_alignment: also A_2 with rank-k truncations (needs singular vectors: a full SVD of every encoder
        layer, seconds per 2000-wide layer on CPU) and the aligned p = 2 bound.
      direct_pair_bounds: also bound max_D ‖W^{l+1} D W^l‖_p on the full matrices (a few width³ matrix products per
        pair) and use it when smaller; gives an aligned p = 2 bound without singular vectors.
      with_net_comp: include the reference's ``net_comp_κ`` (a network-level statistic, not a per-layer one; a
        31-pass exact selection over all weights, ~as costly as ``par_comp`` of every layer, hence opt-in).
      input_scale: factor for the Lipschitz bounds (1.0: normalised units); required with ``lipschitz`` unless
        ``model`` is given.
      model: the flax module (e.g. :class:`~crobust.models.MLP`); ``input_scale`` = 1/min(model.std), so the bounds
        are in pixel units, the units of every ε and attack.
      metrics: None (every per-layer metric) or the names of the per-layer metrics to compute
        (:data:`LAYER_METRICS`); only without network metrics (``lipschitz=False``, no ``net_comp``). The
        report then holds those alone, with the values the whole report gives them.

    Returns a dict: ``layers`` (names, forward order), ``shapes`` [(out, in)], ``members`` M, ``layer_metrics``
    {metric: (M, L) array}, ``network_metrics`` {metric: (M,) array}, ``settings``. See the module docstring for the
    metric names; :func:`report_rows` flattens it to records.
    """
    names = []

    def shapes_of(p):                    # a list keeps forward order (a dict output would come back sorted)
        m = layer_matrices(p)
        names.extend(m)
        return list(m.values())

    with precision.full():
        shape_list = jax.eval_shape(shapes_of, params)
    shp = dict(zip(names, shape_list))
    nd = {s.ndim for s in shp.values()}
    if population is None:
        if len(nd) != 1 or nd.pop() not in (2, 3):
            raise CrobustError(f"cannot tell whether params is a population from layer shapes "
                               f"{ {n: s.shape for n, s in shp.items()} }; pass population=True/False")
        population = next(iter(shp.values())).ndim == 3
    want = 3 if population else 2
    if any(s.ndim != want for s in shp.values()):
        raise CrobustError(f"population={population} needs every layer matrix to have {want} dims, got "
                           f"{ {n: s.shape for n, s in shp.items()} }")
    shapes = [tuple(s.shape) if population else (1, *s.shape) for s in shp.values()]
    n_hidden = sum(1 for n in names if n != "head")
    M, n_hidden = _validate(names, shapes, kappa, method, n_hidden, lipschitz)
    input_scale, units = _resolve_scale(lipschitz, model, input_scale)
    st = _static(kappa, method, lipschitz, spectral_alignment, direct_pair_bounds, with_net_comp, input_scale,
                 n_hidden)
    chosen = _selection(metrics, st)
    if _per_layer_only(st):
        with precision.full():
            mats = layer_matrices(params)
        mats = [jnp.asarray(w if population else w[None], jnp.float32) for w in mats.values()]
        layer, net = _report_layer_by_layer(mats, st, chosen)
    else:
        layer, net = _report_from_params(params, population=bool(population), **st)
    return _package(names, shapes, M, layer, net, st, units)


def report_rows(report) -> list:
    """Flatten a report into JSON-able dicts: one per (member, layer) with ``member``, ``layer``, ``out``, ``in``
    and every layer metric, then one per member with ``layer='network'`` and the network metrics. Values are Python
    floats; non-finite values (an infinite Theorem 3.1 RHS when β = 1, NaN alignment on unpaired layers) become
    None so the rows are strict JSON."""
    def f(x):
        x = float(x)
        return x if math.isfinite(x) else None

    lm = {k: np.asarray(v) for k, v in report["layer_metrics"].items()}
    nm = {k: np.asarray(v) for k, v in report["network_metrics"].items()}
    rows = []
    for m in range(report["members"]):
        for li, (name, shp) in enumerate(zip(report["layers"], report["shapes"])):
            row = {"member": m, "layer": name, "out": shp[0], "in": shp[1]}
            row.update({k: f(v[m, li]) for k, v in lm.items()})
            rows.append(row)
        if nm:
            row = {"member": m, "layer": "network"}
            row.update({k: f(v[m]) for k, v in nm.items()})
            rows.append(row)
    return rows
