"""Per-point robustness radii: a certified lower bound and an attack's upper bound on each point's true radius.

For an evaluation point (x, y) that the model f classifies correctly, its true (minimal adversarial) radius in the
norm ‖·‖_p (pixel units, the box [0, 1] respected) is r*(x) = min{‖x' − x‖_p : x' ∈ [0, 1]^d, argmax f(x') ≠ y}.
Two numbers bracket it from either side (docs/design.md §6, "Per-point radii"):

- **attack radius** r_atk: the norm of the smallest misclassified point the Fast Minimum-Norm attack finds
  (:func:`crobust.attacks.fmn`, ``eval.radii_iters`` iterations): a point at that distance is misclassified, so
  r* ≤ r_atk (+∞ where FMN finds none; 0 for a point misclassified at x);
- **certified radius** r_cert = min_{j≠y} (z_y − z_j)/L_yj (:func:`crobust.metrics.certified_radius`), with L_yj a
  Lipschitz constant of z_y − z_j: every x' closer than r_cert keeps the label, so r_cert ≤ r*. For a ReLU MLP
  (:class:`crobust.models.MLP`, biased or not, and :class:`crobust.models.LowRankMLP`)
  L_yj = ‖h_y − h_j‖_q · L_Φ (:func:`crobust.metrics.mlp_pair_constants`, q the dual exponent), L_Φ the smaller
  of the naive product of the encoder's ‖W^l‖_{p→p} and the aligned bound of Theorem 3.2
  (:func:`crobust.metrics.encoder_lipschitz` at κ = ``measure.kappa``), both times the input scale 1/min(std).
  Either is an upper bound of the encoder's Lipschitz constant, so their minimum is one. Convolutional models get
  no certified radius (no bound on the convolution operator's norm is implemented yet): those columns are NaN.

So r_cert ≤ r* ≤ r_atk on every point; the measure counts the points where r_cert > r_atk beyond float32
round-off (``radius_violations``, 0 when the arithmetic is right).

A point is robust at ε by its radius iff r_atk > ε, so one FMN run gives robust accuracy at every ε of the grid,
RA_radii(ε) = mean_n [r_atk,n > ε] (:func:`crobust.attacks.robust_accuracy_curve`); since r_atk ≥ r*, it is an
upper estimate like the ensemble's. The ensemble (``eval.attacks``, the robust-accuracy measure) breaks a point at
ε when some attack finds a misclassified point within ε; where FMN calls the point robust there (r_atk > ε), FMN
was the weaker attack on it. Columns, per norm of the study (medians over the points the member classifies
correctly clean; NaN where there are none):

- ``radius_attack[norm]``: median r_atk;
- ``radius_certified[norm]``: median r_cert (NaN: no certificate for this model kind);
- ``radius_ratio[norm]``: median of r_cert/r_atk over the points with a finite r_atk (in [0, 1]; 1 means the
  bracket is tight);
- ``radius_violations[norm]``: #{n : r_cert,n > r_atk,n·(1 + 1e-4) + 1e-6} (relative and absolute float32 slack of
  a margin over a norm);
- ``fmn_weaker[norm]``: the fraction of all evaluation points that FMN's radius calls robust at some ε of the grid
  where the ensemble breaks them;
- ``robust_acc_radii[norm, eps]``: RA_radii at every ε of the grid, beside the ensemble's ``robust_acc[norm, eps]``.

Each member's per-point radii are kept in a :class:`RadiiStore` for the figure
(:class:`crobust.study.figures_radii.RadiiFigure`), and the report's section on them is :func:`report_lines`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import metrics, parallel
from crobust._format import format_eps
from crobust.attacks import _stepping, fmn, robust_accuracy_curve
from crobust.metrics.report import input_scale_of
from crobust.models import LowRankMLP, MLP, layer_matrices
from crobust.study.dependencies import declare
from crobust.study.table import column

REL_SLACK, ABS_SLACK = 1e-4, 1e-6
NO_CERTIFICATE = "no bound on the convolution operator's norm is implemented yet"


class RadiiStore(dict):
    """Per population name, per norm: ``attack`` and ``certified`` (M, N) radii (``certified`` None without a
    certificate), ``correct`` (M, N) clean correctness, ``eps`` (the norm's grid); written by :func:`radii`, read
    by :class:`crobust.study.figures_radii.RadiiFigure`."""


def certifiable(model) -> bool:
    """Whether ``model`` is a ReLU MLP that :func:`crobust.metrics.mlp_pair_constants` certifies."""
    return isinstance(model, (MLP, LowRankMLP))


def _pair_constants(params, p, scale: float, kappa: float):
    """L_yj (C, C) of one member's MLP: ‖h_y − h_j‖_q times min(naive, aligned) encoder bound (module docstring)."""
    mats = list(layer_matrices(params).values())
    naive = metrics.mlp_pair_constants(mats, p, input_scale=scale)
    if len(mats) < 2:
        return naive
    enc = metrics.encoder_lipschitz(mats[:-1], p, kappa=kappa, input_scale=scale)
    aligned = metrics.mlp_pair_constants(mats, p, encoder_bound=enc["aligned"])
    return jnp.minimum(naive, aligned)


def member_radii(ctx, pop, norm: str, n_iter: int, certify: bool):
    """(attack (M, N), certified (M, N) or None, correct (M, N)) of every member on the evaluation points.

    FMN runs as one program over the members (``vmap``), or member by member with its iterations stepped from
    the host where the population's members are host-looped (convolutional members on one CPU device,
    :func:`crobust.parallel.host_loops_members`)."""
    p = "inf" if norm == "linf" else 2
    scale = float(input_scale_of(pop.model)) if certify else 1.0

    def one(params, variables):
        with jax.default_matmul_precision("float32"):
            f = pop.member_apply(variables)
            _, r = fmn(f, ctx.x, ctx.y, None, norm=norm, n_iter=n_iter)
            logits = f(ctx.x)
            correct = jnp.argmax(logits, axis=-1) == ctx.y
            cert = (metrics.certified_radius(logits, ctx.y, _pair_constants(params, p, scale, ctx.measure.kappa))
                    if certify else jnp.zeros_like(r))
            return r, cert, correct

    if parallel.host_loops_members(pop.variables):
        def by_index(m):
            variables = jax.tree.map(lambda a: a[m], pop.variables)
            with _stepping.host_stepped():
                with jax.default_matmul_precision("float32"):
                    f = jax.tree_util.Partial(pop.apply_fn, variables)
                    _, r = fmn(f, ctx.x, ctx.y, None, norm=norm, n_iter=n_iter)
                    correct = jnp.argmax(f(ctx.x), axis=-1) == ctx.y
            return np.asarray(r), np.asarray(correct)
        outs = parallel.host_map(by_index, pop.size)
        attack = np.stack([o[0] for o in outs]).astype(np.float64)
        return attack, None, np.stack([o[1] for o in outs])
    r, cert, correct = parallel.population_map(one, pop.params, pop.variables)
    return (np.asarray(r, np.float64), np.asarray(cert, np.float64) if certify else None,
            np.asarray(correct, bool))


def _median_over(values, mask) -> np.ndarray:
    """Per row, the median of ``values`` where ``mask`` (NaN for a row with no such point)."""
    return np.array([np.median(v[m]) if m.any() else np.nan for v, m in zip(values, mask)])


def summarise(attack, certified, correct, flags, grid) -> dict:
    """The columns of :func:`radii` for one norm (module docstring) from per-point arrays: ``attack``,
    ``certified`` (M, N) (None: NaN columns), ``correct`` (M, N), the ensemble's robust ``flags`` (M, E, N) at
    ``grid`` (E,). Keys are the measurement names, ``robust_acc_radii`` an (M, E) array."""
    attack = np.asarray(attack, np.float64)
    grid = np.asarray(grid, np.float64)
    m = attack.shape[0]
    robust_by_radius = attack[:, None, :] > grid[None, :, None]                       # (M, E, N)
    out = {"radius_attack": _median_over(attack, correct),
           "robust_acc_radii": np.stack([np.asarray(robust_accuracy_curve(a, grid)) for a in attack]),
           "fmn_weaker": np.mean(np.any(robust_by_radius & ~np.asarray(flags, bool), axis=1), axis=-1)}
    if certified is None:
        out.update(radius_certified=np.full(m, np.nan), radius_ratio=np.full(m, np.nan),
                   radius_violations=np.full(m, np.nan))
        return out
    certified = np.asarray(certified, np.float64)
    finite = correct & np.isfinite(attack) & (attack > 0)
    ratio = np.where(finite, certified / np.where(finite, attack, 1.0), np.nan)
    out.update(radius_certified=_median_over(certified, correct), radius_ratio=_median_over(ratio, finite),
               radius_violations=np.sum(certified > attack * (1 + REL_SLACK) + ABS_SLACK, axis=-1).astype(float))
    return out


def radii(store: Optional[RadiiStore] = None, norms: Sequence[str] = ("linf", "l2")):
    """The per-point radii measure (module docstring): FMN at ``eval.radii_iters`` iterations on every member and
    norm, the certified radius where the model is a ReLU MLP, the columns ``radius_attack``, ``radius_certified``,
    ``radius_ratio``, ``radius_violations``, ``fmn_weaker`` (per norm) and ``robust_acc_radii[norm, eps]``; the
    per-point radii into ``store`` (when given) and a line per population and norm into ``ctx.log['radii']``.
    Requires the robust-accuracy measure's per-point flags of the same norms."""
    def measure(ctx, pop):
        certify = certifiable(pop.model)
        out = {}
        for norm in norms:
            grid = ctx.eval.grid(norm)
            attack, certified, correct = member_radii(ctx, pop, norm, ctx.eval.radii_iters, certify)
            flags = ctx.cache[(pop.name, "robust_flags", norm)]
            s = summarise(attack, certified, correct, flags, grid)
            for name in ("radius_attack", "radius_certified", "radius_ratio", "radius_violations", "fmn_weaker"):
                out[column(name, norm=norm)] = s[name]
            for i, eps in enumerate(grid):
                out[column("robust_acc_radii", norm=norm, eps=format_eps(eps))] = s["robust_acc_radii"][:, i]
            if store is not None:
                store.setdefault(pop.name, {})[norm] = {"attack": attack, "certified": certified, "correct": correct,
                                                        "eps": tuple(grid)}
            ctx.log.setdefault("radii", []).append({
                "population": pop.name, "norm": norm, "n_iter": int(ctx.eval.radii_iters), "certified": certify,
                "why_not": "" if certify else NO_CERTIFICATE,
                "violations": int(np.nansum(s["radius_violations"])) if certify else None,
                "median_attack": float(np.nanmedian(s["radius_attack"])) if np.isfinite(s["radius_attack"]).any()
                else None,
                "fmn_weaker": float(np.mean(s["fmn_weaker"]))})
        return out
    return declare(measure, requires=[f"robust_flags/{norm}" for norm in norms])


def report_lines(entries: Sequence[dict]) -> list[str]:
    """The report's section on per-point radii from the ``ctx.log['radii']`` entries of :func:`radii`."""
    if not entries:
        return []
    iters = sorted({e["n_iter"] for e in entries})
    lines = ["### Per-point robustness radii", "",
             "Each correctly classified point's true minimal adversarial radius r* (pixel units of the norm, inside "
             "[0, 1]) is bracketed from both sides: **certified radius ≤ true radius ≤ attack radius**. The attack "
             f"radius is the norm of the smallest misclassified point the Fast Minimum-Norm attack finds "
             f"(`crobust.attacks.fmn`, {', '.join(map(str, iters))} iterations); the certified radius "
             "min_{j≠y}(z_y − z_j)/L_yj (`crobust.metrics.certified_radius`), with L_yj the head's ‖h_y − h_j‖ in "
             "the dual norm times the smaller of the naive and the aligned (Theorem 3.2) Lipschitz bound of the "
             "encoder, exists for ReLU MLPs only. Columns: `radius_attack` and `radius_certified` (medians over the "
             "clean-correct points), `radius_ratio` (median certified/attack: 1 is a tight bracket), "
             "`radius_violations` (points where certified > attack beyond float32 round-off: 0 unless something is "
             "wrong), `fmn_weaker` (share of points FMN's radius calls robust at an ε of the grid where the ensemble "
             "breaks them) and `robust_acc_radii` (robust accuracy from the radii, RA(ε) = share of points with "
             "attack radius > ε, beside the ensemble's `robust_acc`).", "",
             "| population | norm | certified | median attack radius (over members) | violations | FMN weaker (mean) |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        med = "—" if e["median_attack"] is None else f"{e['median_attack']:.4g}"
        lines.append(f"| {e['population']} | {e['norm']} | {'yes' if e['certified'] else 'no: ' + e['why_not']} | "
                     f"{med} | {'—' if e['violations'] is None else e['violations']} | {e['fmn_weaker']:.3f} |")
    return lines + [""]


MEASURES = {"radii": radii}

__all__ = ["RadiiStore", "radii", "member_radii", "summarise", "certifiable", "report_lines", "NO_CERTIFICATE",
           "MEASURES"]
