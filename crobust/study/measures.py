"""Measures: reusable functions from a trained population to per-member columns of the member table.

A measure is called as ``measure(ctx, pop)`` with the study's :class:`Context` and one :class:`TrainedPopulation`
and returns ``{Column: (M,) values}``. A measure may read what another left in ``ctx.cache`` — the robust-accuracy
measure keeps each member's worst-case adversarial examples at the headline ε of each norm, so the
representation-shift and alignment measures attack nothing again — and says so with
:func:`crobust.study.dependencies.declare`; the runner runs the measures in their declared dependency order
(:func:`crobust.study.dependencies.order`), so the order a study lists them in never changes a result.
:data:`MEASURES` is the registry (name → factory); every factory's docstring states what it measures.

Randomness: an evaluation stream of a member derives from its identity — its seed and the stream's name
(:func:`member_eval_keys`) — never from its position in the population, so adding a member changes nobody else's
attack noise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import evaluation, metrics, parallel, precision, training
from crobust.attacks import presets
from crobust._format import format_eps
from crobust.data import to_float
from crobust._errors import CrobustError
from crobust.models import hidden_layers, layer_matrices
from crobust.study.blocks import EvalConfig, MeasureConfig
from crobust.study.dependencies import declare
from crobust.study.table import col, column

EVAL_STREAM = 4          # training uses streams 0–3 of a member's key (init, data order, validation split, AT)


@dataclasses.dataclass
class TrainedPopulation:
    """One trained population: its name, model, members (dicts of hyper-parameters and seed), constant coordinates
    (e.g. ``{'rank': 8}``), the trainer's :class:`~crobust.training.FitResult`, the parameters measured (each
    member's best-validation parameters, ``fit.best_params``: its last parameters when training held out no
    validation split, ``val_ratio`` 0, or never validated it) and the model state that goes with them (batch-norm running statistics,
    ``fit.best_model_state``; None for a model without any).

    Every measure that runs the model reads :attr:`apply_fn` and :attr:`variables` (eval mode: running
    statistics, never batch statistics, nothing updated — :func:`crobust.training.eval_apply`); the layer
    metrics read :attr:`params` only."""

    name: str
    model: Any
    members: list
    coords: dict
    fit: Any
    params: Any
    model_state: Any = None
    stage: str = ""           # how a staged population started (source, map, trainable part, data), for the report

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def apply_fn(self):
        """``apply_fn(variables_m, x, **kwargs)`` → logits of one member in eval mode; a stable callable (equal
        for equal models), so compiled evaluations keyed on it are reused."""
        return training.eval_apply(self.model, self.params, self.model_state)[0]

    @property
    def variables(self):
        """What :attr:`apply_fn` takes, stacked (M, ...): the parameters and the model state."""
        return training.eval_apply(self.model, self.params, self.model_state)[1]

    def member_apply(self, variables):
        """x ↦ logits of the member whose (unstacked) ``variables`` are given, in eval mode."""
        return functools.partial(self.apply_fn, variables)

    @property
    def seeds(self) -> np.ndarray:
        return np.array([int(m["seed"]) for m in self.members])


@dataclasses.dataclass
class Context:
    """What every measure may read: the resolved config's evaluation and measurement blocks, the data, the
    evaluation points (the first ``eval.n_points`` test images in [0, 1] and their labels), a cache shared by the
    measures of one population, and the evaluation log the report prints (attacks run, checks)."""

    eval: EvalConfig
    measure: MeasureConfig
    data: Any
    x: jax.Array
    y: jax.Array
    cache: dict = dataclasses.field(default_factory=dict)
    log: dict = dataclasses.field(default_factory=lambda: {"attacks": {}, "weaker": {}, "checks": [],
                                                                 "convergence": []})

    @classmethod
    def build(cls, eval_cfg: EvalConfig, measure_cfg: MeasureConfig, data) -> "Context":
        n = min(eval_cfg.n_points, int(data.test_images.shape[0]))
        return cls(eval_cfg, measure_cfg, data, to_float(data.test_images[:n]),
                   jnp.asarray(data.test_labels[:n], jnp.int32))


def member_eval_keys(seeds: Sequence[int], stream: str) -> jax.Array:
    """(M,) keys ``fold_in(fold_in(key(seed), EVAL_STREAM), crc32(stream))``: a member's named evaluation stream."""
    sid = zlib.crc32(stream.encode()) & 0x7FFFFFFF
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(jax.random.key(s), EVAL_STREAM), sid))(
        jnp.asarray(np.asarray(seeds), jnp.uint32))


# --------------------------------------------------------------------------------------------------------------
# Accuracy, margins, head

def clean_accuracy():
    """``clean_acc``: accuracy on the whole test set; ``test_loss``: its mean cross-entropy."""
    def measure(ctx: Context, pop: TrainedPopulation):
        layout = parallel.MemberLayout(pop.size)
        loss, acc = training.evaluate(pop.apply_fn, layout.place_for_eval(pop.variables), ctx.data.test_images,
                                      ctx.data.test_labels)
        return {column("clean_acc"): np.asarray(acc)[:pop.size], column("test_loss"): np.asarray(loss)[:pop.size]}
    return measure


def margins_and_head():
    """Confounds of robust accuracy: ``median_margin`` — the median over the evaluation points of the logit margin
    z_y − max_{j≠y} z_j (negative when misclassified) — and the head's norms ``head_fro`` = ‖W_head‖_F and
    ``head_op`` = ‖W_head‖₂ (the last layer of :func:`crobust.models.layer_matrices`)."""
    def measure(ctx: Context, pop: TrainedPopulation):
        def one(v):
            z = pop.apply_fn(v, ctx.x)
            true = jnp.take_along_axis(z, ctx.y[:, None], axis=1)[:, 0]
            other = jnp.max(jnp.where(jax.nn.one_hot(ctx.y, z.shape[-1], dtype=bool), -jnp.inf, z), axis=-1)
            return jnp.median(true - other)
        margin = parallel.population_map(one, pop.variables)
        head = list(layer_matrices(pop.params).values())[-1]                       # (M, out, in)
        with precision.full():
            sigma = metrics.singular_values(head)
        return {column("median_margin"): np.asarray(margin), column("head_fro"): np.asarray(metrics.norm_fro(head)),
                column("head_op"): np.asarray(sigma[..., 0])}
    return measure


# --------------------------------------------------------------------------------------------------------------
# Robust accuracy

def attack_list(e: EvalConfig, num_classes: int) -> tuple:
    """The ensemble of ``e`` as ``crobust.evaluation`` attack specs (budget applied, APGD-T/FAB-T targets ≤ C − 1)."""
    out = []
    for name in e.attacks:
        if name in ("apgd-ce", "apgd-dlr", "pgd", "apgd-art", "fab"):
            out.append((name, dict(n_iter=e.n_iter, n_restarts=e.n_restarts)))
        elif name in ("apgd-t", "fab-t"):
            out.append((name, dict(n_iter=e.n_iter, n_restarts=e.n_restarts,
                                   n_target_classes=max(1, min(e.n_targets, num_classes - 1)))))
        elif name == "square":
            out.append((name, dict(n_queries=e.n_queries)))
        else:
            out.append(name)
    return tuple(out)


AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


def ensemble_note(attacks: Sequence[str]) -> str:
    """Words for how the ensemble ``attacks`` (names) stands to AutoAttack's standard ensemble (APGD-CE, APGD-T,
    FAB-T, Square): "AutoAttack's standard ensemble" when it holds all four, else "reduced ensemble: FAB-T left out"
    (naming every one of the four it lacks), plus any attack it adds."""
    names = [a if isinstance(a, str) else a[0] for a in attacks]
    missing = [_NAMES[a] for a in AUTOATTACK_STANDARD if a not in names]
    extra = [a for a in names if a not in AUTOATTACK_STANDARD]
    text = ("AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square)" if not missing else
            f"reduced ensemble: {', '.join(missing)} left out of AutoAttack's standard four")
    return text + (f", with {', '.join(extra)} added" if extra else "")


def _evaluate(ctx: Context, pop: TrainedPopulation, norm: str, attacks, stream: str, grid, keep=()):
    keys = member_eval_keys(pop.seeds, stream)
    return evaluation.population_robust_accuracy(pop.apply_fn, pop.variables, ctx.x, ctx.y, eps=list(grid),
                                                 norm=norm, attacks=attacks, on_fail="ignore", member_keys=keys,
                                                 return_adv_at=list(keep) or None)


def robust_accuracy(norms: Sequence[str] = ("linf", "l2")):
    """Robust accuracy over each norm's ε grid against the configured ensemble, per point the worst case over every
    attack, restart and iterate (:func:`crobust.evaluation.population_robust_accuracy`): ``robust_acc[norm, eps]``
    for every ε of the grid, ``clean_acc_points`` (accuracy on the attacked points), ``ra_over_sa[norm]`` =
    RA(headline ε)/clean accuracy on those points and ``check_failures[norm]``. Keeps each member's worst-case
    x_adv at the headline ε, its per-point robust flags over the grid (M, E, N) and each attack's (for the budget
    ladder's first rung, :func:`_headline_rung`) in ``ctx.cache`` (nothing is attacked twice) and the checks in
    ``ctx.log``."""
    def measure(ctx: Context, pop: TrainedPopulation):
        e = ctx.eval
        attacks = attack_list(e, ctx.data.num_classes)
        out = {}
        for norm in norms:
            grid, headline = e.grid(norm), e.headline(norm)
            hi = e.grid_index(norm, headline)
            reports = _evaluate(ctx, pop, norm, attacks, f"attack/{norm}", grid, keep=(grid[hi],))
            ctx.cache[(pop.name, "x_adv", norm)] = np.stack([r.adversarial(grid[hi]) for r in reports])
            ctx.log["attacks"][norm] = presets.describe(attacks, ctx.data.num_classes)
            for m, r in enumerate(reports):
                ctx.log["checks"].append({"population": pop.name, "member": m, "norm": norm, **r.checks})
            ra = np.array([r.robust_acc for r in reports])                          # (M, E)
            sa = np.array([r.clean_acc for r in reports])
            for i, eps in enumerate(grid):
                out[column("robust_acc", norm=norm, eps=format_eps(eps))] = ra[:, i]
            out[column("ra_over_sa", norm=norm)] = ra[:, hi] / np.maximum(sa, 1e-12)
            ctx.cache[(pop.name, "ra_headline", norm)] = ra[:, hi]
            ctx.cache[(pop.name, "robust_flags", norm)] = np.stack([r.robust_flags for r in reports])  # (M, E, N)
            ctx.cache[(pop.name, "attack_flags", norm)] = (attacks, {a: np.stack([r.attack_flags[a] for r in reports])
                                                                     for a in reports[0].attack_flags})
            out[column("check_failures", norm=norm)] = np.array([len(r.checks["failures"]) for r in reports])
            out[column("clean_acc_points")] = sa
        return out
    return declare(measure, provides=[f"{item}/{norm}" for norm in norms
                                      for item in ("x_adv", "ra_headline", "robust_flags")])


def weaker_evaluation(norms: Sequence[str] = ("linf", "l2")):
    """What the paper's code probably ran: ART's AutoProjectedGradientDescent (``'apgd-art'``: ``eval.art_n_iter``
    iterations × ``eval.art_n_restarts`` restarts on the points still robust — ART's defaults 100 × 5 —, a user
    step, the last iterate; docs/findings.md §2) at each
    headline ε: ``robust_acc_art[norm]`` and ``art_overstatement[norm]`` = RA(ART) − RA(ensemble) (positive: the
    weaker evaluation overstates robustness). Requires the robust-accuracy measure of the same norms."""
    def measure(ctx: Context, pop: TrainedPopulation):
        out = {}
        for norm in norms:
            headline = ctx.eval.headline(norm)
            art = (("apgd-art", dict(n_iter=ctx.eval.art_n_iter, n_restarts=ctx.eval.art_n_restarts)),)
            reports = _evaluate(ctx, pop, norm, art, f"art/{norm}", (headline,))
            ra = np.array([r.robust_acc[0] for r in reports])
            ctx.log["weaker"][norm] = presets.describe(art, ctx.data.num_classes)
            out[column("robust_acc_art", norm=norm)] = ra
            out[column("art_overstatement", norm=norm)] = ra - ctx.cache[(pop.name, "ra_headline", norm)]
        return out
    return declare(measure, requires=[f"ra_headline/{norm}" for norm in norms])


def budget_convergence(norms: Sequence[str] = ("linf", "l2"), x: str = "alpha", populations: Sequence[str] = ()):
    """Attack-budget convergence (:func:`crobust.evaluation.budget_convergence`) of the least and the most
    compressed members (every member at the smallest and at the largest ``x``, all seeds) at each headline ε, as
    ``eval.convergence_iters`` × ``eval.convergence_restarts`` double: ``budget_converged[norm]`` (1 when the last
    doubling on each axis breaks < 0.5 % of the points that no rung before it broke — at most one point where 0.5 %
    is under two points, the estimate's resolution —, 0 when not, NaN for members not checked),
    ``budget_last_doubling_pp[norm]`` (those new breaks, the largest axis) and ``headline_converged[norm]``: 1 when
    the headline's own budget (``eval.n_iter`` × ``eval.n_restarts``) is on the ladder, the ladder converged and the
    stronger rungs break fewer than that tolerance of the points the headline budget calls robust
    (:func:`headline_converged`); 0 otherwise (the headline budget cannot be vouched for). The budgets and
    robust accuracies are logged for the report. ``populations`` (names) restricts the check to those populations
    (default: every one). With ``eval.convergence_queries`` the ladder runs the whole ensemble and doubles Square's
    queries too (its first entry is the headline's ``n_queries``); without, it runs the gradient attacks only.
    When the robust-accuracy measure ran first and the headline budget is the ladder's first rung, that rung is
    read from the headline evaluation rather than attacked again (:func:`_headline_rung`)."""
    def measure(ctx: Context, pop: TrainedPopulation):
        e = ctx.eval
        if not e.convergence_iters or (populations and pop.name not in populations):
            return {}
        xs = np.array([float(m.get(x, pop.coords.get(x, 0.0))) for m in pop.members])
        chosen = sorted(int(i) for i in np.flatnonzero((xs == xs.min()) | (xs == xs.max())))
        variables = jax.tree.map(lambda leaf: leaf[np.asarray(chosen)], pop.variables)
        attacks = tuple(a for a in attack_list(e, ctx.data.num_classes) if e.convergence_queries or
                        (a if isinstance(a, str) else a[0]) != "square")
        out = {}
        for norm in norms:
            keys = member_eval_keys(pop.seeds[chosen], f"attack/{norm}")
            known = _headline_rung(ctx, pop, norm, attacks, chosen)
            res = evaluation.budget_convergence(pop.apply_fn, variables, ctx.x, ctx.y, keys, eps=e.headline(norm),
                                                norm=norm, iterations=e.convergence_iters,
                                                restarts=e.convergence_restarts, attacks=attacks,
                                                queries=e.convergence_queries, known=known)
            conv, moved, head = (np.full(pop.size, np.nan) for _ in range(3))
            for m, r in zip(chosen, res):
                conv[m] = float(r["converged"])
                moved[m] = max([v for v in r["last_doubling_pp"].values() if v is not None], default=np.nan)
                head[m] = float(headline_converged(r, e.n_iter, e.n_restarts, e.n_queries))
                ctx.log["convergence"].append({**r, "population": pop.name, "member": m, x: float(xs[m]),
                                               "norm": norm, "eps": format_eps(e.headline(norm)),
                                               "headline_converged": bool(head[m]),
                                               "first_rung_from_headline": bool(known)})
            out[column("budget_converged", norm=norm)] = conv
            out[column("budget_last_doubling_pp", norm=norm)] = moved
            out[column("headline_converged", norm=norm)] = head
        return out
    return measure


def _headline_rung(ctx: Context, pop: TrainedPopulation, norm: str, attacks, chosen) -> dict:
    """The ladder's first rung read from the headline evaluation, when that evaluation ran it: ``{budget: (M', 1,
    N) robust flags}`` for the ``chosen`` members, else ``{}``. It did when the headline budget is the first rung
    (``eval.n_iter`` × ``eval.n_restarts``, and Square's ``n_queries`` where the ladder doubles queries), the
    robust-accuracy measure attacked this population at this norm with the same member keys (stream
    ``attack/<norm>``), and the ladder's attacks are the first ones of its ensemble with the same settings, so
    each draws the same random numbers (attack a uses ``fold_in(key, a)``, at every ε). The flags are then the
    conjunction of those attacks' per-point flags at the headline ε; running the rung again would repeat that
    computation in another memory layout."""
    e = ctx.eval
    cached = ctx.cache.get((pop.name, "attack_flags", norm))
    if cached is None:
        return {}
    ensemble, flags = cached
    first = (e.convergence_iters[0], e.convergence_restarts[0])
    queries = e.convergence_queries[0] if e.convergence_queries else None
    one_rung = max(len(e.convergence_iters), len(e.convergence_restarts), len(e.convergence_queries)) < 2
    if one_rung or (e.n_iter, e.n_restarts) != first or (queries is not None and queries != e.n_queries) or \
            tuple(ensemble[:len(attacks)]) != tuple(attacks):
        return {}
    names = [a if isinstance(a, str) else a[0] for a in attacks]
    hi = e.grid_index(norm, e.headline(norm))
    robust = np.logical_and.reduce([flags[a][np.asarray(chosen), hi] for a in names])       # (M', N)
    return {first + (queries,): robust[:, None, :]}


def relative_to_baseline(values, x, seeds) -> np.ndarray:
    """Each member's value over its seed's baseline: r_i = v_i / v_b(i), b(i) the member with the same seed at the
    smallest x of the population (the mean when several share it). (M,) in, (M,) out; NaN where the seed has no
    member at the smallest x or the baseline is 0 or not finite (the ratio is undefined)."""
    values, x = np.asarray(values, np.float64), np.asarray(x, np.float64)
    seeds = np.asarray(seeds)
    out = np.full(values.shape, np.nan)
    at_base = x == x.min()
    for s in np.unique(seeds):
        base = values[(seeds == s) & at_base]
        b = float(base.mean()) if base.size else math.nan
        if math.isfinite(b) and b != 0.0:
            out[seeds == s] = values[seeds == s] / b
    return out


def relative_robust_accuracy(norms: Sequence[str] = ("linf", "l2"), x: str = "alpha"):
    """``ra_relative[norm]`` = RA(member)/RA(baseline) at each headline ε (:func:`relative_to_baseline`): the
    baseline is the member of the same population and seed at the smallest ``x`` (α = 0: the uncompressed model
    with the same initialisation and data order), so the baseline members read 1 and a member that keeps 90 % of its
    baseline's robust accuracy reads 0.9. The paper's "relative harm of compression" as a per-member column; it
    reads the headline robust accuracy the robust-accuracy measure left in the cache."""
    def measure(ctx: Context, pop: TrainedPopulation):
        xs = np.array([float(m.get(x, pop.coords.get(x, 0.0))) for m in pop.members])
        return {column("ra_relative", norm=norm): relative_to_baseline(ctx.cache[(pop.name, "ra_headline", norm)],
                                                                       xs, pop.seeds) for norm in norms}
    return declare(measure, requires=[f"ra_headline/{norm}" for norm in norms])


def headline_converged(result: dict, n_iter: int, n_restarts: int, n_queries: int | None = None) -> bool:
    """Whether one member's convergence ``result`` (:func:`crobust.evaluation.budget_convergence`) vouches for the
    headline budget ``n_iter`` × ``n_restarts`` (× Square's ``n_queries`` where the ladder ran Square): that budget
    is on the ladder, the ladder converged, and the stronger rungs break fewer than the tolerance of the points the
    headline budget calls robust (``overstated_pp``), at every ε."""
    with_queries = any(b.get("n_queries") is not None for b in result["budgets"])
    rungs = {(b["n_iter"], b["n_restarts"], b.get("n_queries") if with_queries else None): b
             for b in result["budgets"]}
    wanted = (n_iter, n_restarts, n_queries if with_queries else None)
    if wanted not in rungs or not result["converged"]:
        return False
    return rungs[wanted]["overstated_pp"] < result["tolerance_pp"]


def headline_ra(e: EvalConfig, norm: str) -> str:
    """The table key of robust accuracy at ``norm``'s headline ε."""
    return col("robust_acc", norm=norm, eps=format_eps(e.headline(norm)))


# --------------------------------------------------------------------------------------------------------------
# Layers and spectra

def layer_metrics(select: Sequence[str] = ("eps_nu_q2", "eps_sigma_q2", "beta_nu", "beta_sigma", "ratio_2_fro",
                                           "ratio_inf_fro")):
    """The :func:`crobust.metrics.layer_report` metrics named in ``select``, per layer: ``<metric>[layer=…]``
    (the same names as ``layer_report``'s records), at the configured κ."""
    def measure(ctx: Context, pop: TrainedPopulation):
        rep = metrics.layer_report(pop.params, kappa=ctx.measure.kappa, lipschitz=False, metrics=tuple(select))
        out = {}
        for name in select:
            values = np.asarray(rep["layer_metrics"][name])                     # (M, L)
            for li, layer in enumerate(rep["layers"]):
                out[column(name, layer=layer)] = values[:, li]
        return out
    return measure


def prunable_fraction(sigma, energy: float):
    """Smallest k/h with Σ_{i≤k} σᵢ² ≥ energy·Σσᵢ² (σ (..., h) descending): the fraction of singular values a rank-k
    approximation keeps to hold ``energy`` of the squared Frobenius norm — equivalently the smallest k with ε_σ(k) ≤
    √(1 − energy) for q = 2 (:func:`crobust.metrics.smallest_k`). A zero matrix needs 0."""
    sigma = jnp.asarray(sigma)
    h = sigma.shape[-1]
    # relative slack 1e-6: a spectrum that meets the energy exactly (in exact arithmetic) is not pushed to k + 1
    k = metrics.smallest_k(sigma, math.sqrt(1.0 - energy) * (1 + 1e-6), 2)
    zero = jnp.sum(sigma * sigma, axis=-1) <= 0
    return jnp.where(zero, 0.0, k / h)


def layer_or_first_hidden(layer: Optional[str], params) -> str:
    """``layer``, or the model's first hidden layer (:func:`crobust.models.hidden_layers`) when it is None."""
    return layer if layer is not None else hidden_layers(params)[0]


def spectrum(layer: Optional[str] = None):
    """Spectral structure of one layer W (default: the model's first hidden layer, ``hidden_0`` for an MLP,
    :func:`crobust.models.hidden_layers`): ``prunability[layer]`` (:func:`prunable_fraction` at the configured
    energy; lower = more prunable), ``op_over_fro`` = σ₁/‖W‖_F, ``effective_rank``, ``eps_sigma`` at κ (q = 2),
    ``fro_norm`` and, when the trainer held the layer's scale, ``fro_norm_init`` (the projection's target) and
    ``fro_drift`` = |‖W‖_F/‖W₀‖_F − 1|."""
    layer_arg = layer

    def measure(ctx: Context, pop: TrainedPopulation):
        layer = layer_or_first_hidden(layer_arg, pop.params)
        w = layer_matrices(pop.params)[layer]
        with precision.full():
            sigma = metrics.singular_values(w)
        fro = jnp.sqrt(jnp.sum(sigma * sigma, axis=-1))
        out = {column("prunability", layer=layer): prunable_fraction(sigma, ctx.measure.energy),
               column("op_over_fro", layer=layer): sigma[..., 0] / jnp.maximum(fro, 1e-30),
               column("effective_rank", layer=layer): metrics.effective_rank(sigma),
               column("eps_sigma", layer=layer): metrics.best_k_error(sigma, kappa=ctx.measure.kappa, q=2),
               column("fro_norm", layer=layer): fro}
        ref = getattr(pop.fit.state, "ref_norms", None) or {}
        if layer in ref:
            out[column("fro_norm_init", layer=layer)] = ref[layer]
            out[column("fro_drift", layer=layer)] = jnp.abs(fro / ref[layer] - 1)
        return {k: np.asarray(v) for k, v in out.items()}
    return measure


# --------------------------------------------------------------------------------------------------------------
# Mechanism: representation shift and singular-direction alignment at the headline ε

def _cached_adv(ctx: Context, pop: TrainedPopulation, norm: str):
    key = (pop.name, "x_adv", norm)
    if key not in ctx.cache:
        raise KeyError(f"the {norm} adversarial examples of population {pop.name!r} are not measured yet: the "
                       f"measure must declare requires=('x_adv/{norm}',) (crobust.study.dependencies)")
    return ctx.cache[key]


def representation_shift(norms: Sequence[str] = ("linf", "l2")):
    """``shift[norm]``: the mean of ‖z_adv − z‖₂/‖z‖₂ on the penultimate representation at the headline ε (the
    robust-accuracy measure's examples) over the points the member classifies correctly clean and where it is
    finite. A misclassified point keeps x_adv = x (the attack has nothing to do), so averaging over every point would
    count a shift of 0 for each and make a less accurate model look less shifted. ``shift_left_out[norm]``: how many
    correct points were left out (a dead representation z = 0 that moved gives +∞); ``shift_misclassified[norm]``:
    how many points were left out as misclassified clean. NaN when no point is left."""
    def measure(ctx: Context, pop: TrainedPopulation):
        out = {}
        for norm in norms:
            x_adv = _cached_adv(ctx, pop, norm)

            def one(v, xa):
                logits, z = pop.apply_fn(v, ctx.x, return_repr=True)
                _, z_adv = pop.apply_fn(v, xa, return_repr=True)
                s = metrics.representation_shift(z, z_adv)
                correct = jnp.argmax(logits, axis=-1) == ctx.y
                used = correct & jnp.isfinite(s)
                return (jnp.sum(jnp.where(used, s, 0.0)) / jnp.maximum(jnp.sum(used), 1), jnp.sum(used),
                        jnp.sum(correct & ~jnp.isfinite(s)), jnp.sum(~correct))
            mean, used, left_out, wrong = parallel.population_map(one, pop.variables, x_adv)
            out[column("shift", norm=norm)] = np.where(np.asarray(used) > 0, mean, np.nan)
            out[column("shift_left_out", norm=norm)] = np.asarray(left_out)
            out[column("shift_misclassified", norm=norm)] = np.asarray(wrong)
        return out
    return declare(measure, requires=[f"x_adv/{norm}" for norm in norms])


def singular_alignment(norms: Sequence[str] = ("l2",), layer: Optional[str] = None):
    """Alignment of the headline perturbation a (as the layer sees it: (x_adv − x)/std, flattened) with the top-k
    right singular vectors of the layer (k = ``measure.top_k``), averaged over the points that moved. The layer
    must read the flattened input, i.e. be an MLP's input layer (default: the model's first hidden layer, which
    for an MLP is that layer; a conv or ViT layer is refused with one line):
    ``top_energy[norm]`` = ‖V_kᵀa‖²/‖a‖² (a random direction: k/d), ``top_rms[norm]`` and ``rest_rms[norm]`` (the
    RMS size of a's component per top / per remaining direction) and their ``alignment_ratio[norm]`` (1 for an
    isotropic perturbation; :func:`crobust.metrics.singular_direction_alignment`)."""
    layer_arg = layer

    def measure(ctx: Context, pop: TrainedPopulation):
        layer = layer_or_first_hidden(layer_arg, pop.params)
        std = jnp.asarray(ctx.data.std, jnp.float32)
        n = ctx.x.shape[0]
        d_in = int(np.prod(ctx.x.shape[1:]))
        fan_in = layer_matrices(pop.params)[layer].shape[-1]
        if fan_in != d_in:
            raise CrobustError(f"singular_alignment: layer {layer} reads {fan_in} inputs, not the {d_in} pixels of "
                               f"an image; the measure applies to an MLP's input layer only")
        out = {}
        for norm in norms:
            x_adv = _cached_adv(ctx, pop, norm)

            def one(p, xa):
                w = layer_matrices(p)[layer]
                a = ((xa - ctx.x) / std).reshape(n, -1)
                al = metrics.singular_direction_alignment(w, a, k=ctx.measure.top_k)
                moved = jnp.sum(a * a, axis=-1) > 0
                count = jnp.maximum(jnp.sum(moved), 1)
                return {name: jnp.sum(jnp.where(moved, al[name], 0.0)) / count
                        for name in ("top_energy", "top_rms", "rest_rms", "ratio")}
            res = parallel.population_map(one, pop.params, x_adv)
            for name, v in res.items():
                out[column("alignment_ratio" if name == "ratio" else name, norm=norm)] = np.asarray(v)
        return out
    return declare(measure, requires=[f"x_adv/{norm}" for norm in norms])


def training_record():
    """``best_step``, ``stopped_step`` and ``diverged`` of each member, from the trainer."""
    def measure(ctx: Context, pop: TrainedPopulation):
        s = pop.fit.state
        return {column("best_step"): np.asarray(s.best_step), column("stopped_step"): np.asarray(s.step),
                column("diverged"): np.asarray(s.diverged, np.float64)}
    return measure


MEASURES: dict[str, Callable] = {
    "clean_accuracy": clean_accuracy,
    "margins_and_head": margins_and_head,
    "robust_accuracy": robust_accuracy,
    "weaker_evaluation": weaker_evaluation,
    "budget_convergence": budget_convergence,
    "relative_robust_accuracy": relative_robust_accuracy,
    "layer_metrics": layer_metrics,
    "spectrum": spectrum,
    "representation_shift": representation_shift,
    "singular_alignment": singular_alignment,
    "training_record": training_record,
}

__all__ = ["Context", "TrainedPopulation", "MEASURES", "member_eval_keys", "attack_list", "ensemble_note",
           "headline_ra", "prunable_fraction", "layer_or_first_hidden", "relative_to_baseline"] + list(MEASURES)
