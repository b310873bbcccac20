"""Robust accuracy, RobustBench-style: clean and robust accuracy on the same points, per-point worst case over an
ensemble of attacks, a whole ε grid in one compiled call, checks that say what ran, and attack-budget convergence.

Usage::

    import jax, jax.numpy as jnp
    from jax.tree_util import Partial
    import crobust.evaluation as E
    W = jax.random.normal(jax.random.key(0), (64, 10))
    apply_fn = lambda w, x: x.reshape(x.shape[0], -1) @ w
    x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 1)); y = jnp.arange(64) % 10
    report = E.robust_accuracy(apply_fn, x, y, jax.random.key(2), params=W, eps=[0, 4/255, 8/255], norm="linf")
    report.clean_acc, report.robust_acc          # fractions; robust_acc has one entry per ε
    report.description                           # 'APGD-CE (100 iterations × 1 restart), APGD-T (...), Square (...)'
    report.checks["ran"], report.checks["not_run"]
    report.model_info(-1)                        # {'threat_model': 'Linf', 'eps': '8/255', 'clean_acc': '..', ...}

    # a population: params with a leading member axis, one compile for all members and all ε
    # reports = E.population_robust_accuracy(model.apply, params, x, y, eps=[...], member_keys=keys,
    #                                        return_adv_at=[8/255])
    # E.budget_convergence(model.apply, selected_params, x, y, keys, eps=8/255)   # converged?

Semantics (AutoAttack's ``run_standard_evaluation``): a point counts as robust at ε when it is classified
correctly at x and at the output of every attack in the list (re-predicted on the returned x_adv). Every attack
returns its per-point worst case over all its iterates and restarts (APGD's ``x_best_adv``; PGD with
``keep='best'``), so a point broken at any iterate of any restart counts as broken. AutoAttack runs each later
attack only on the points still robust; here every attack runs on every point (a compiled, vmapped program
cannot shrink its batch) and the cascade is applied with masks, which gives the same flags.
``robust_acc_after[a]`` is AutoAttack's log line "robust accuracy after A" (cumulative); ``attack_acc[a]`` is
attack a alone. Attack a at every ε uses ``fold_in(key, a)`` — the same random numbers at every ε (common random
numbers, which makes the ε curve smoother); member m of a population uses its own key (``member_keys``) or
``fold_in(key, m)``. A radius of 0 on the grid is never attacked: its threat set is {x}, so every attack's
output there is x, and the record at ε = 0 (robust = correct clean, x_adv = x, every check's value) is written
from the clean pass; :func:`robust_accuracy` and :func:`population_robust_accuracy` hand the compiled program the
radii > 0 only (:func:`robust_flags`, the array core, attacks whatever grid it is given).

The adversarial example reported for a point (``return_adv_at`` / ``return_adversarial``): the output of the first
attack (in list order) that broke it; for a point no attack breaks, the first attack's output (APGD-CE's
highest-loss point in the default ensemble); for a point misclassified clean, x itself.

Memory layout (``eps_loop``, ``point_chunk``; :mod:`crobust.evaluation_layout`): by default the grid is vmapped
and all points attacked at once; a model whose members × E × N working set exceeds the memory budget runs the grid
one radius at a time and, if still too large, the points in chunks — chosen automatically, or set explicitly. The
random numbers of point n do not depend on the layout (APGD, APGD-T, PGD and Square draw them for all points and
then chunk; FGM draws none), and attacks act per point, so every layout gives the same per-point results up to
the float rounding of differently batched matmuls. ART's APGD is never chunked over points (its stop rule couples
a batch). Universal perturbations are not an attack of this ensemble: a universal δ is fitted over the whole
source set (its update averages over a mini-batch) and is never chunked.

Parameters travel as data: the compiled programs take the model as ``apply_fn`` (static) plus ``params``
(traced), or as a ``jax.tree_util.Partial``, so a second call with new weights reuses the compilation and uses
the new weights. A plain closure over arrays is lifted into such a Partial (its captured arrays traced; what is
seen: "Captures" in :mod:`crobust.attacks`), so it too reuses the compilation and always uses the arrays it holds
at the call; a callable that captures anything else is compiled for that call only, with a one-time hint.

Attacks (names → defaults; override with ``(name, {kwarg: value})`` pairs in ``attacks``, or name an ensemble of
:data:`crobust.attacks.presets.ENSEMBLES`: ``'standard'``, ``'cheap'``, ``'art'``):
``'fgsm'`` (ℓ∞ only) / ``'fgm'``; ``'pgd'`` (:data:`crobust.attacks.presets.PGD_EVAL`, 30 steps × 10 restarts,
every iterate); ``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'`` (AutoAttack standard: 100 iterations, 1 restart,
min(9, C − 1) targets; the targeted CE loss where C < 4, since targeted DLR needs 4 classes, so a binary model
is evaluated too); ``'fab'`` / ``'fab-t'`` (:func:`crobust.attacks.fab`, AutoAttack's FAB: 100 iterations, 1
restart; FAB-T min(9, C − 1) targets); ``'square'`` (5000 queries, p_init 0.8); ``'apgd-art'`` (ART's AutoProjectedGradientDescent
with ART's defaults, the weaker evaluation the reference code could have run). The default ensemble is
AutoAttack's standard one without FAB-T, ``('apgd-ce', 'apgd-t', 'square')``; the ``'standard'`` ensemble adds
FAB-T (AutoAttack's ``version='standard'`` exactly).

Checks. ``report.checks['ran']`` maps every check that ran to ``'passed'`` or its failure text;
``report.checks['not_run']`` maps every check that could not run to the reason; ``passed`` covers only what ran.
Each failure is also listed in ``checks['failures']`` and raised as a :class:`RobustnessCheckWarning` (or a
:class:`CrobustError` with ``on_fail='raise'``):

- ``perturbation_within_eps``: ‖x_adv − x‖ ≤ ε + 1e-6 for every attack's output;
- ``inputs_in_unit_range``: x_adv ∈ [0, 1];  ``no_nan``: no NaN in x_adv;
- ``zero_gradients``: correctly classified points where ∇ₓ CE or ∇ₓ DLR is exactly zero at x (AutoAttack's
  ``check_zero_gradients``; DLR is constant on misclassified points whose label ranks third, which is why only
  correct points count);
- ``gradient_masking``: more than 0.2 % of the points survive every white-box attack but not the black-box one
  (AutoAttack's ``check_square_sr`` threshold) — runs only when the ensemble has Square and a white-box attack;
- ``monotone_in_eps``: robust accuracy does not increase as ε grows — needs two distinct ε;
- ``large_eps``: robust accuracy ≤ 5 % at an ε that reaches the grey image 0.5·1 from every point (ℓ∞ ε ≥ 0.5,
  ℓ2 ε ≥ max_n ‖x_n − 0.5‖₂) — runs only when the grid has such an ε;
- ``grey_image_points``: no point is called robust although the grey image lies within ε of it and is
  misclassified (an attack failure that needs no search to prove) — runs only when some correct point has the
  grey image within some ε of the grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from crobust import evaluation_layout as _layout
from crobust import parallel
from crobust._errors import CrobustError, check_choice
from crobust._format import format_eps
from crobust.attacks import _stepping
from crobust.attacks import losses as _losses
from crobust.attacks import presets
from crobust.attacks import projections as P
from crobust.attacks.apgd import apgd as _apgd
from crobust.attacks.apgd import apgd_t as _apgd_t
from crobust.attacks.apgd import chunk_size_for, map_in_chunks
from crobust.attacks.apgd_art import apgd_art as _apgd_art
from crobust.attacks.fab import fab as _fab
from crobust.attacks.fab import fab_t as _fab_t
from crobust.attacks.fgsm import fgm as _fgm
from crobust.attacks.fgsm import fgsm as _fgsm
from crobust.attacks.pgd import pgd as _pgd
from crobust.attacks.square import square as _square
from crobust.attacks._closure import as_data
from crobust.attacks._common import predicts, value_and_input_grad
from crobust.attacks._validate import check_images, check_labels, check_norm, logits_shape

DEFAULT_ATTACKS = ("apgd-ce", "apgd-t", "square")
EXECUTIONS = ("auto", "program", "host_loop", "host_steps")
_auto_execution = "auto"


@contextlib.contextmanager
def execution_default(execution: str = "auto"):
    """Within the block, ``execution='auto'`` of :func:`population_robust_accuracy` (and of everything built on
    it: :func:`budget_convergence`, the studies' measures) means ``execution``; ``'auto'`` restores the rule.
    A study's ``eval.execution`` setting is applied this way around its measures."""
    global _auto_execution
    check_choice("execution", execution, EXECUTIONS)
    previous, _auto_execution = _auto_execution, execution
    try:
        yield
    finally:
        _auto_execution = previous


def resolve_execution(execution: str, params) -> str:
    """The execution ``'auto'`` stands for: the one set by :func:`execution_default`, else ``'host_steps'`` where
    :func:`crobust.parallel.host_loops_members` (convolutional members on one CPU device), else ``'program'``."""
    check_choice("execution", execution, EXECUTIONS)
    if execution == "auto":
        execution = _auto_execution
    if execution == "auto":
        execution = "host_steps" if parallel.host_loops_members(params) else "program"
    return execution
PERTURBATION_TOL = 1e-6
SQUARE_TOL = 0.002
LARGE_EPS_MAX_ACC = 0.05
ON_FAIL = ("warn", "raise", "ignore")

_ATTACKS = {
    "fgsm": (_fgsm, {}),
    "fgm": (_fgm, {}),
    "pgd": (_pgd, dict(presets.PGD_EVAL)),
    "apgd-ce": (_apgd, dict(presets.APGD_CE)),
    "apgd-dlr": (_apgd, dict(presets.APGD_DLR)),
    "apgd-t": (_apgd_t, dict(presets.APGD_T)),
    "square": (_square, dict(presets.SQUARE)),
    "fab": (_fab, dict(presets.FAB)),
    "fab-t": (_fab_t, dict(presets.FAB_T)),
    "apgd-art": (_apgd_art, dict(presets.APGD_ART)),
}
WHITE_BOX = ("fgsm", "fgm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "apgd-art")
BLACK_BOX = ("square",)


class RobustnessCheckWarning(UserWarning):
    """An evaluation check failed: an invariant is violated or gradient masking is suspected."""


def _attack_specs(attacks, num_classes: int | None = None):
    """Validate ``attacks`` (an ensemble name, attack names, or (name, {kwarg: value}) pairs) into
    ((name, fn, kwargs), ...); with ``num_classes`` the settings are made effective for C classes (APGD-T and
    FAB-T: min(T, C − 1) targets; APGD-T: the targeted CE loss where C < 4 leaves DLR undefined)."""
    if isinstance(attacks, str):
        attacks = presets.ensemble(attacks) if attacks in presets.ENSEMBLES else (attacks,)
    specs = []
    for item in attacks:
        if isinstance(item, str):
            name, overrides = item, {}
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Mapping):
            name, overrides = item
        else:
            raise CrobustError(f"attacks must hold attack names or (name, {{kwarg: value}}) pairs, got {item!r}")
        check_choice("attack", name, tuple(_ATTACKS))
        fn, defaults = _ATTACKS[name]
        kwargs = {**defaults, **dict(overrides)}
        for banned in ("eps", "norm", "labels"):
            if banned in kwargs:
                raise CrobustError(f"attacks: {banned!r} of attack {name!r} is set by robust_accuracy itself")
        if name == "fab-t" and num_classes is not None:
            kwargs["n_target_classes"] = min(int(kwargs.get("n_target_classes", 9)), max(num_classes - 1, 1))
        if name == "apgd-t" and num_classes is not None:
            kwargs["n_target_classes"] = min(int(kwargs.get("n_target_classes", 9)), max(num_classes - 1, 1))
            if num_classes < 4 and kwargs.get("loss", "dlr-targeted") == "dlr-targeted":
                kwargs["loss"] = "ce-targeted"
        specs.append((name, fn, kwargs))
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise CrobustError(f"attacks must not repeat a name, got {names}")
    if not specs:
        raise CrobustError("attacks must name at least one attack")
    return tuple(specs)


def _freeze(specs):
    """A hashable form of the validated attack list (static argument of the jitted runners). The attack function
    is part of it: a compiled program runs the function the registry held when it was traced."""
    return tuple((name, fn, tuple(sorted(kwargs.items()))) for name, fn, kwargs in specs)


def _thaw(frozen):
    return tuple((name, dict(items)) for name, _, items in frozen)


def _core(logits_fn, x, y, key, eps, norm, frozen, adv_index, eps_loop, point_chunk):
    arrays = robust_flags(logits_fn, x, y, key, eps, norm=norm, attacks=_thaw(frozen), eps_loop=eps_loop,
                          point_chunk=point_chunk, adv_index=adv_index)
    if not adv_index:
        arrays.pop("x_adv")
    return arrays


_STATIC = ("norm", "frozen", "adv_index", "eps_loop", "point_chunk")
# logits_fn is a jax.tree_util.Partial: its function is part of the cache key, its parameters are traced data
_run_one = jax.jit(_core, static_argnames=_STATIC)


def _run_one_stepped(logits_fn, x, y, key, eps, **static):
    """:func:`_run_one`'s arrays, each attack iteration its own compiled call (:mod:`crobust.attacks._stepping`):
    XLA:CPU runs a convolution carried through a loop several times slower than the same convolution alone."""
    with _stepping.host_stepped():
        return _core(logits_fn, x, y, key, eps, **static)


@functools.partial(jax.jit, static_argnames=("apply_fn",) + _STATIC)
def _run_population(params, keys, x, y, eps, *, apply_fn, norm, frozen, adv_index, eps_loop, point_chunk):
    def one_member(member_params, member_key):
        return _core(Partial(apply_fn, member_params), x, y, member_key, eps, norm, frozen, adv_index, eps_loop,
                     point_chunk)

    return parallel.map_members(one_member, params, keys)      # a loop on one CPU device, else vmapped


def _eps_grid(eps):
    values = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise CrobustError(f"eps must be a number or a non-empty 1-D list of numbers, got {eps!r}")
    if not np.all(values >= 0):
        raise CrobustError(f"eps must be >= 0, got {values.tolist()}")
    return values


def _adv_index(eps_values, return_adv_at) -> tuple:
    """Static indices into the ε grid of the radii whose adversarial examples are returned."""
    if return_adv_at is None:
        return ()
    wanted = np.atleast_1d(np.asarray(return_adv_at, dtype=np.float64))
    index = []
    for e in wanted:
        hits = np.flatnonzero(np.isclose(eps_values, e, rtol=0, atol=1e-9))
        if not hits.size:
            raise CrobustError(f"return_adv_at: eps {format_eps(e)} is not on the eps grid "
                               f"{[format_eps(v) for v in eps_values]}")
        index.append(int(hits[0]))
    return tuple(index)


def _attacked(eps_values) -> np.ndarray:
    """Indices of the radii of the grid that are attacked: every ε > 0, or the whole grid when it holds no ε > 0
    (the compiled program is then still needed for the clean pass and the gradient checks)."""
    positive = np.flatnonzero(eps_values > 0)
    return positive if positive.size else np.arange(len(eps_values))


def _sub_adv_index(adv_index, attacked) -> tuple:
    """``adv_index`` (radii of the full grid) as indices into the attacked sub-grid, zero radii left out."""
    position = {int(i): k for k, i in enumerate(attacked)}
    return tuple(sorted({position[i] for i in adv_index if i in position}))


def _with_zero_radii(arrays, eps_values, attacked, adv_index, x, members=None):
    """The arrays of :func:`robust_flags` on the full grid from those on the attacked sub-grid (host, numpy).

    At ε = 0 the threat set of a point is {x} itself, so every attack's output is x and nothing needs running:
    ``attack_correct`` and ``robust`` are ``clean_correct``, ``max_excess`` = ‖x − x‖ − 0 = 0, ``min_value`` /
    ``max_value`` the extremes of x, ``nan_count`` 0, the grey image is within reach exactly when x is the grey
    image (``grey_reachable``), and then it is misclassified exactly when x is (``grey_breaks``), and the
    adversarial example is x. These are the values the attacks return there, without their iterations.
    ``members``: the arrays carry a leading member axis of that size (None: one model)."""
    a = {k: np.asarray(v) for k, v in arrays.items()}
    if len(attacked) == len(eps_values):
        return a
    lead = () if members is None else (members,)
    axis = len(lead)                                           # the ε axis
    x = np.asarray(x)
    clean = a["clean_correct"].astype(bool)                    # lead + (N,)
    grey = np.all(x == np.float32(0.5), axis=tuple(range(1, x.ndim)))   # (N,)
    n_attacks = a["attack_correct"].shape[axis + 1]
    zero = dict(attack_correct=np.broadcast_to(clean[..., None, :], lead + (n_attacks, clean.shape[-1])),
                robust=clean, max_excess=np.zeros(lead + (n_attacks,), a["max_excess"].dtype),
                min_value=np.full(lead + (n_attacks,), np.min(x), a["min_value"].dtype),
                max_value=np.full(lead + (n_attacks,), np.max(x), a["max_value"].dtype),
                nan_count=np.zeros(lead + (n_attacks,), a["nan_count"].dtype),
                grey_reachable=np.broadcast_to(grey, clean.shape),
                grey_breaks=np.broadcast_to(grey, clean.shape) & ~clean)
    position = {int(i): k for k, i in enumerate(attacked)}
    out = dict(a)
    for name, fill in zero.items():
        sub = a[name]
        pieces = [np.take(sub, position[e], axis=axis) if e in position else fill.astype(sub.dtype)
                  for e in range(len(eps_values))]
        out[name] = np.stack(pieces, axis=axis)
    if adv_index:
        sub_index = _sub_adv_index(adv_index, attacked)
        xs = np.broadcast_to(x, lead + x.shape)
        out["x_adv"] = np.stack([np.take(a["x_adv"], sub_index.index(position[i]), axis=axis) if i in position
                                 else xs for i in adv_index], axis=axis)
    return out


# attacks that take ``chunk_size`` and draw their randomness for the whole batch before chunking (APGD's and PGD's
# starts; Square's start and per-query draws), so point n's random numbers do not depend on the chunking
_CHUNKED_INSIDE = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "pgd", "square")
_DETERMINISTIC = ("fgsm", "fgm")


def _attack(name, fn, kwargs, logits_fn, x, y, key, eps_value, norm, chunk):
    """Attack ``name`` on all points, in chunks of ``chunk`` points where it is per-point independent."""
    if chunk is None or chunk >= x.shape[0] or name in _layout.BATCH_COUPLED:
        return fn(logits_fn, x, y, key, eps=eps_value, norm=norm, **kwargs)
    if name in _DETERMINISTIC:
        return map_in_chunks(lambda xc, yc: fn(logits_fn, xc, yc, key, eps=eps_value, norm=norm, **kwargs), chunk,
                             x, y)
    if name not in _CHUNKED_INSIDE:
        raise CrobustError(f"attack {name!r} has no chunked layout")
    kwargs = dict(kwargs)
    cache_chunk = chunk_size_for(x.shape[0], "auto")           # CPU: the attacks' own cache-sized chunks
    if "chunk_size" not in kwargs and not (cache_chunk is not None and cache_chunk <= chunk):
        # PGD counts examples × restarts per chunk; the others count examples (their runs vmapped inside)
        kwargs["chunk_size"] = chunk * int(kwargs.get("n_restarts", 1)) if name == "pgd" else chunk
    return fn(logits_fn, x, y, key, eps=eps_value, norm=norm, **kwargs)


def robust_flags(logits_fn, x, y, key, eps, *, norm: str = "linf", attacks=DEFAULT_ATTACKS, eps_loop: bool = False,
                 point_chunk: int | None = None, adv_index=None):
    """The array core of :func:`robust_accuracy` (jit/vmap-compatible; no checks on values, no host work).

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C).
      x: (N, ...) images;  y: (N,) labels;  key: PRNG key (attack a uses ``fold_in(key, a)``).
      eps: (E,) grid of radii (may be traced).
      norm, attacks: as :func:`robust_accuracy`.
      eps_loop: run the grid one radius at a time (``lax.map``) instead of vmapped over it.
      point_chunk: C — attack C points at a time (``lax.map`` over chunks of the point axis, the last one padded
        and the padding dropped), and the clean pass, the gradient checks and the re-predictions likewise; None:
        all N at once. Attacks act on each point independently and draw their random numbers for all N points
        before chunking, so chunking changes memory and speed, not which numbers a point sees. ART's APGD is the
        exception: its stop rule (every loss of the batch exactly 0) couples the points of a batch, so it always
        runs on all N at once (:data:`crobust.evaluation_layout.BATCH_COUPLED`).
      adv_index: radii (indices into the grid) whose adversarial examples are returned; None: every radius.

    Returns:
      dict of arrays: ``clean_correct`` (N,), ``attack_correct`` (E, A, N) — correct at attack a's output,
      ``robust`` (E, N), ``x_adv`` (E, N, ...) or (len(adv_index), N, ...) (see :func:`robust_accuracy` for which
      point), ``max_excess`` (E, A) = max_n ‖x_adv − x‖ − ε, ``min_value``/``max_value`` (E, A), ``nan_count``
      (E, A), ``zero_grad_ce``/``zero_grad_dlr`` (N,) bool, ``grey_reachable`` (E, N) — the grey image 0.5·1 is
      within ε, ``grey_breaks`` (E, N) — it is within ε and misclassified.
    """
    norm = check_norm(norm)
    y = jnp.asarray(y, jnp.int32)
    chunk = None if point_chunk is None or point_chunk >= x.shape[0] else int(point_chunk)
    # a loop-free piece is one compiled program when the attacks' loops are stepped from the host (else as it is)
    chunked = lambda fn, *arrays: map_in_chunks(lambda *a: _stepping.call(fn, *a), chunk, *arrays)
    clean_logits = chunked(logits_fn, x)
    num_classes = clean_logits.shape[-1]
    specs = _attack_specs(attacks, num_classes)
    eps = jnp.asarray(eps, jnp.float32)
    clean_correct = predicts(clean_logits, y)
    expand = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
    predicts_at = lambda xa: chunked(lambda xc, yc: predicts(logits_fn(xc), yc), xa, y)

    def grad_mass(loss):
        """Σ|∇ₓ loss| per point."""
        def on(xc, yc):
            _, _, g = value_and_input_grad(logits_fn, lambda z: loss(z, yc))(xc)
            return jnp.sum(jnp.abs(g), axis=tuple(range(1, xc.ndim)))
        return chunked(on, x, y)

    zero_ce = clean_correct & (grad_mass(_losses.cross_entropy) == 0)
    zero_dlr = clean_correct & (grad_mass(_losses.dlr) == 0) if num_classes >= 3 else jnp.zeros_like(zero_ce)

    grey = jnp.full_like(x, 0.5)
    grey_wrong = ~predicts_at(grey)
    grey_distance = P.lp_norm(grey - x, norm)

    def at_eps(eps_value):
        robust = clean_correct
        x_broken = x
        first_output = None
        correct_by, excess, lo, hi, nans = [], [], [], [], []
        for index, (name, fn, kwargs) in enumerate(specs):
            xa = _attack(name, fn, kwargs, logits_fn, x, y, jax.random.fold_in(key, index), eps_value, norm, chunk)
            first_output = xa if first_output is None else first_output
            correct = predicts_at(xa)
            newly_broken = robust & ~correct
            x_broken = jnp.where(expand(newly_broken), xa, x_broken)
            robust = robust & correct
            correct_by.append(correct & clean_correct)
            finite = jnp.where(jnp.isnan(xa), x, xa)
            excess.append(jnp.max(P.lp_norm(finite - x, norm)) - eps_value)
            lo.append(jnp.min(finite))
            hi.append(jnp.max(finite))
            nans.append(jnp.sum(jnp.isnan(xa)))
        # broken: the first attack's point that broke it; unbroken: the first attack's output; wrong clean: x
        x_adv = jnp.where(expand(robust), first_output, x_broken)
        x_adv = jnp.where(expand(clean_correct), x_adv, x)
        reachable = grey_distance <= eps_value
        return dict(attack_correct=jnp.stack(correct_by), robust=robust, x_adv=x_adv, max_excess=jnp.stack(excess),
                    min_value=jnp.stack(lo), max_value=jnp.stack(hi), nan_count=jnp.stack(nans),
                    grey_reachable=reachable, grey_breaks=grey_wrong & reachable)

    keep = None if adv_index is None else tuple(int(i) for i in adv_index)
    if _stepping.active(x, eps) or not eps_loop:
        out = _stepping.vmap(at_eps)(eps)     # attacks stepped from the host: a Python loop over the radii
        if keep is not None:
            out["x_adv"] = out["x_adv"][jnp.asarray(keep, jnp.int32)] if keep else out["x_adv"][:0]
    elif keep is None:
        out = jax.lax.map(at_eps, eps)
    else:
        # one radius at a time; only the kept radii's examples are carried (K, N, ...), not all E of them
        wanted = jnp.asarray(keep, jnp.int32)

        def step(kept, eps_and_index):
            eps_value, i = eps_and_index
            o = at_eps(eps_value)
            xa = o.pop("x_adv")
            kept = jnp.where((wanted == i).reshape((-1,) + (1,) * x.ndim), xa[None], kept)
            return kept, o

        kept, out = jax.lax.scan(step, jnp.zeros((len(keep),) + x.shape, x.dtype),
                                 (eps, jnp.arange(eps.shape[0], dtype=jnp.int32)))
        out["x_adv"] = kept
    out.update(clean_correct=clean_correct, zero_grad_ce=zero_ce, zero_grad_dlr=zero_dlr)
    return out


@dataclasses.dataclass(frozen=True)
class RobustAccuracyReport:
    """One model's evaluation over an ε grid. Accuracies are fractions in [0, 1].

    Fields mirror RobustBench's model-info entries (``threat_model``, ``eps`` as ``'8/255'``, ``clean_acc``,
    robust accuracy, attack settings); per-point flags are numpy arrays: ``clean_correct`` (N,), ``robust_flags``
    (E, N), ``attack_flags[name]`` (E, N) (correct at x and at that attack's output). ``description`` is the
    ensemble in words (attacks, iterations, restarts, targets, queries). ``x_adv`` (len(x_adv_eps), N, ...) holds
    the adversarial examples at the radii ``x_adv_eps`` when they were asked for (:meth:`adversarial`).
    ``checks``: ``ran`` {check: 'passed' | failure text}, ``not_run`` {check: reason}, ``passed`` (every check that
    ran passed), ``failures`` [texts], plus the raw numbers behind them.
    """

    threat_model: str
    norm: str
    eps: tuple
    eps_str: tuple
    n_examples: int
    clean_acc: float
    robust_acc: tuple
    robust_acc_after: dict
    attack_acc: dict
    attacks: tuple
    checks: dict
    clean_correct: np.ndarray = dataclasses.field(repr=False)
    robust_flags: np.ndarray = dataclasses.field(repr=False)
    attack_flags: dict = dataclasses.field(repr=False)
    x_adv: Any = dataclasses.field(default=None, repr=False)
    x_adv_eps: tuple = ()
    description: str = ""
    layout: dict = dataclasses.field(default_factory=dict)

    def adversarial(self, eps: float) -> np.ndarray:
        """The adversarial examples (N, ...) at radius ``eps`` (one of ``x_adv_eps``)."""
        for i, e in enumerate(self.x_adv_eps):
            if abs(e - float(eps)) <= 1e-9:
                return self.x_adv[i]
        raise CrobustError(f"no adversarial examples kept at eps {format_eps(eps)}; kept: "
                           f"{[format_eps(e) for e in self.x_adv_eps]} (pass return_adv_at)")

    def model_info(self, index: int = -1, **extra) -> dict:
        """A RobustBench-style entry for ε = ``eps[index]`` (accuracies as percent strings with 2 decimals)."""
        info = dict(threat_model=self.threat_model, eps=self.eps_str[index],
                    clean_acc=f"{100 * self.clean_acc:.2f}", robust_acc=f"{100 * self.robust_acc[index]:.2f}",
                    n_examples=self.n_examples, attacks=[dict(a) for a in self.attacks],
                    attacks_description=self.description, unreliable=not self.checks["passed"])
        info.update(extra)
        return info

    def to_dict(self, per_point: bool = False) -> dict:
        """JSON-able dict (per-point flags as lists of bools when ``per_point``)."""
        out = dict(threat_model=self.threat_model, norm=self.norm, eps=list(self.eps), eps_str=list(self.eps_str),
                   n_examples=self.n_examples, clean_acc=self.clean_acc, robust_acc=list(self.robust_acc),
                   robust_acc_after={k: list(v) for k, v in self.robust_acc_after.items()},
                   attack_acc={k: list(v) for k, v in self.attack_acc.items()},
                   attacks=[dict(a) for a in self.attacks], attacks_description=self.description,
                   checks=self.checks)
        if per_point:
            out.update(clean_correct=self.clean_correct.tolist(), robust_flags=self.robust_flags.tolist(),
                       attack_flags={k: v.tolist() for k, v in self.attack_flags.items()})
        return out


def _json_settings(kwargs):
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in kwargs.items()}


def _build_report(arrays, eps_values, norm, specs, large_eps, x_adv, adv_index, on_fail, key_data, num_classes,
                  context="", layout=None):
    """Host side: accuracies, checks and the record from the arrays of :func:`robust_flags` (one model)."""
    a = jax.tree.map(np.asarray, arrays)
    names = [s[0] for s in specs]
    n = int(a["clean_correct"].shape[0])
    clean_correct = a["clean_correct"].astype(bool)
    correct = a["attack_correct"].astype(bool)                       # (E, A, N)
    robust = a["robust"].astype(bool)                                # (E, N)
    mean = (lambda v: float(np.mean(v))) if n else (lambda v: float("nan"))
    cumulative = np.logical_and.accumulate(correct, axis=1) & clean_correct   # (E, A, N)
    n_eps = len(eps_values)
    robust_acc = tuple(mean(robust[e]) for e in range(n_eps))
    robust_acc_after = {name: tuple(mean(cumulative[e, i]) for e in range(n_eps)) for i, name in enumerate(names)}
    attack_acc = {name: tuple(mean(correct[e, i]) for e in range(n_eps)) for i, name in enumerate(names)}

    ran, not_run = {}, {}

    def verdict(name, failure):
        ran[name] = "passed" if failure is None else failure

    max_excess = float(np.max(a["max_excess"])) if n else 0.0
    failure = None
    if max_excess > PERTURBATION_TOL:
        e, i = np.unravel_index(np.argmax(a["max_excess"]), a["max_excess"].shape)
        failure = (f"perturbation exceeds eps: {names[i]} at eps={format_eps(eps_values[e])} is "
                   f"{max_excess:.3g} beyond the ball (tolerance {PERTURBATION_TOL})")
    verdict("perturbation_within_eps", failure)
    lo, hi = (float(np.min(a["min_value"])), float(np.max(a["max_value"]))) if n else (0.0, 1.0)
    verdict("inputs_in_unit_range", f"adversarial inputs leave [0, 1]: values in [{lo:.4g}, {hi:.4g}]"
            if (lo < 0.0 or hi > 1.0) else None)
    nan_count = int(np.sum(a["nan_count"]))
    verdict("no_nan", f"NaN in adversarial inputs: {nan_count} entries" if nan_count else None)
    zero_ce, zero_dlr = int(np.sum(a["zero_grad_ce"])), int(np.sum(a["zero_grad_dlr"]))
    verdict("zero_gradients", f"zero gradients at x: {zero_ce} points (CE), {zero_dlr} points (DLR); gradient "
            "attacks may be unreliable there (AutoAttack check_zero_gradients)" if (zero_ce or zero_dlr) else None)

    square_only = []
    white = [i for i, nm in enumerate(names) if nm in WHITE_BOX]
    black = [i for i, nm in enumerate(names) if nm in BLACK_BOX]
    if white and black:
        survive_white = np.all(correct[:, white, :], axis=1) & clean_correct
        broken_black = ~np.all(correct[:, black, :], axis=1)
        square_only = [mean(survive_white[e] & broken_black[e]) for e in range(n_eps)]
        worst = int(np.argmax(square_only))
        verdict("gradient_masking", f"Square beats the white-box attacks: {100 * square_only[worst]:.2f}% of the "
                f"points are broken only by Square at eps={format_eps(eps_values[worst])} (possible gradient "
                "masking; AutoAttack check_square_sr)" if square_only[worst] > SQUARE_TOL else None)
    else:
        not_run["gradient_masking"] = ("needs a black-box attack (square) beside a white-box one in the ensemble; "
                                       f"it has {', '.join(names)}")

    distinct = np.unique(eps_values)
    if distinct.size >= 2:
        order = np.argsort(eps_values, kind="stable")
        increases = [(eps_values[order[j]], eps_values[order[j + 1]]) for j in range(len(order) - 1)
                     if robust_acc[order[j + 1]] > robust_acc[order[j]]]
        verdict("monotone_in_eps", "robust accuracy increases with eps: " + ", ".join(
            f"{format_eps(s)} -> {format_eps(t)}" for s, t in increases) if increases else None)
    else:
        not_run["monotone_in_eps"] = "needs at least two distinct eps on the grid"

    large_eps_acc = [robust_acc[e] for e in range(n_eps) if eps_values[e] >= large_eps]
    if large_eps_acc:
        verdict("large_eps", f"robust accuracy {100 * max(large_eps_acc):.1f}% > {100 * LARGE_EPS_MAX_ACC:.0f}% at "
                f"an eps where every point reaches the grey image (eps >= {large_eps:.4g}); expected ~0"
                if max(large_eps_acc) > LARGE_EPS_MAX_ACC else None)
    else:
        not_run["large_eps"] = (f"needs an eps >= {large_eps:.4g} (every point reaches the grey image 0.5·1 there); "
                                f"the grid's largest is {format_eps(float(np.max(eps_values)))}")

    reachable = a["grey_reachable"].astype(bool) & clean_correct                  # (E, N)
    missed = (a["grey_breaks"].astype(bool) & robust).sum(axis=1)                 # (E,)
    if reachable.any():
        verdict("grey_image_points", f"attacks missed trivially broken points (grey image within eps and "
                f"misclassified): {missed.tolist()} per eps" if np.any(missed) else None)
    else:
        not_run["grey_image_points"] = ("no correctly classified point has the grey image 0.5·1 within any eps of "
                                        "the grid")

    failures = [v for v in ran.values() if v != "passed"]
    checks = dict(ran=ran, not_run=not_run, passed=not failures, failures=failures,
                  max_perturbation_excess=max_excess, min_value=lo, max_value=hi, nan_count=nan_count,
                  zero_gradient_points_ce=zero_ce, zero_gradient_points_dlr=zero_dlr,
                  square_only_fraction=[float(v) for v in square_only], missed_trivial_points=[int(v) for v in missed])
    if failures and on_fail != "ignore":
        message = f"robust-accuracy checks failed{context}: " + "; ".join(failures)
        if on_fail == "raise":
            raise CrobustError(message)
        warnings.warn(message, RobustnessCheckWarning, stacklevel=3)

    return RobustAccuracyReport(
        threat_model="Linf" if norm == "linf" else "L2", norm=norm, eps=tuple(float(v) for v in eps_values),
        eps_str=tuple(format_eps(v) for v in eps_values), n_examples=n, clean_acc=mean(clean_correct),
        robust_acc=robust_acc, robust_acc_after=robust_acc_after, attack_acc=attack_acc,
        attacks=tuple(dict(name=nm, settings=_json_settings(kw), key=key_data) for nm, _, kw in specs),
        checks=checks, clean_correct=clean_correct, robust_flags=robust,
        attack_flags={nm: correct[:, i, :] & clean_correct for i, nm in enumerate(names)}, x_adv=x_adv,
        x_adv_eps=tuple(float(eps_values[i]) for i in adv_index),
        description=presets.describe(tuple((nm, kw) for nm, _, kw in specs), num_classes), layout=layout or {})


def _prepare_eval(x, y, eps, norm, attacks, on_fail):
    norm = check_norm(norm)
    check_choice("on_fail", on_fail, ON_FAIL)
    x = check_images(x)
    eps_values = _eps_grid(eps)
    _attack_specs(attacks)                                   # names and settings checked before any compile
    return x, eps_values, norm


def _grey_radius(x, norm):
    return 0.5 if norm == "linf" else float(np.max(np.asarray(P.lp_norm(0.5 - x, "l2"))))


def robust_accuracy(logits_fn, x, y, key, *, eps, norm: str = "linf", attacks=DEFAULT_ATTACKS, params=None,
                    on_fail: str = "warn", return_adversarial: bool = False,
                    return_adv_at=None, eps_loop="auto", point_chunk="auto") -> RobustAccuracyReport:
    """Clean and robust accuracy of one model over an ε grid, worst case per point over ``attacks``.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); normalisation lives inside it. Call forms:
        ``robust_accuracy(model.apply, x, y, key, params=params, ...)`` or
        ``robust_accuracy(jax.tree_util.Partial(model.apply, params), ...)``: the parameters are traced data of one
        cached compiled program (keyed on ``model.apply``, shapes and settings), so a second call with new weights
        reuses the compilation and always uses the new weights. A plain closure over arrays is lifted into such a
        Partial (same reuse, the arrays it holds at the call are used); any other callable is compiled for that
        call only, so whatever it reads now is used (a one-time :class:`crobust.attacks.RecompileWarning` says so).
      x: test images (N, ...) in [0, 1];  y: integer labels (N,);  key: PRNG key.
      eps: one radius or a list (pixel units); all run in one compiled call (vmapped over ε); ε = 0 is read from
        the clean pass, not attacked.
      norm: ``'linf'`` or ``'l2'``.
      attacks: an ensemble name (``'standard'``, ``'cheap'``, ``'art'``; :mod:`crobust.attacks.presets`), or attack
        names / ``(name, {kwarg: value})`` pairs; see the module docstring. Default: the standard ensemble.
      params: when given, ``logits_fn`` is ``apply_fn`` and the model is ``Partial(apply_fn, params)``.
      on_fail: what a failed check does: ``'warn'`` (:class:`RobustnessCheckWarning`), ``'raise'``, ``'ignore'``.
      return_adversarial: keep the adversarial examples at every ε (``report.x_adv`` (E, N, ...)).
      return_adv_at: radii (on the grid) whose adversarial examples are kept (``report.adversarial(eps)``).
      eps_loop, point_chunk: the memory layout (:func:`robust_flags`; :mod:`crobust.evaluation_layout`): the grid
        looped instead of vmapped, the points attacked C at a time. ``'auto'`` (default) chooses from the model's
        bytes per point and the device's free memory (a stated budget on CPU); the per-point results are the same
        in every layout up to the float rounding of differently batched matmuls. ``report.layout`` says which ran.

    Returns:
      :class:`RobustAccuracyReport`.
    """
    x, eps_values, norm = _prepare_eval(x, y, eps, norm, attacks, on_fail)
    if params is not None:
        logits_fn = Partial(logits_fn, params)
    n, num_classes = logits_shape(logits_fn, x)
    y = check_labels(y, n, num_classes)
    specs = _attack_specs(attacks, num_classes)
    adv_index = tuple(range(len(eps_values))) if return_adversarial else _adv_index(eps_values, return_adv_at)
    attacked = _attacked(eps_values)
    eps_loop, point_chunk = _layout.resolve_layout(eps_loop, point_chunk, logits_fn, x, specs, len(attacked))
    static = dict(norm=norm, frozen=_freeze(specs), adv_index=_sub_adv_index(adv_index, attacked),
                  eps_loop=eps_loop, point_chunk=point_chunk)
    eps_array = jnp.asarray(eps_values[attacked], jnp.float32)
    model = logits_fn if isinstance(logits_fn, Partial) else as_data(logits_fn, "crobust.evaluation.robust_accuracy")
    if model is not None:
        arrays = dict(_run_one(model, x, y, key, eps_array, **static))
    else:      # not passable as data: compiled for this call only, so its current state is what is evaluated
        arrays = dict(jax.jit(functools.partial(_core, logits_fn), static_argnames=_STATIC)(x, y, key, eps_array,
                                                                                            **static))
    arrays = _with_zero_radii(arrays, eps_values, attacked, adv_index, x)
    x_adv = arrays.pop("x_adv", None)
    return _build_report(arrays, eps_values, norm, specs, _grey_radius(x, norm),
                         None if x_adv is None else np.asarray(x_adv), adv_index, on_fail, _key_data(key),
                         num_classes, layout=dict(eps_loop=eps_loop, point_chunk=point_chunk))


def _member_keys(key, member_keys, members: int):
    if member_keys is None:
        if key is None:
            raise CrobustError("population_robust_accuracy needs key (member m uses fold_in(key, m)) or member_keys")
        return jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(members))
    keys = jnp.asarray(member_keys) if not isinstance(member_keys, jax.Array) else member_keys
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.shape != (members,)) or (not typed and keys.shape[:1] != (members,)):
        raise CrobustError(f"member_keys must hold one key per member, shape ({members},), got {keys.shape}")
    return keys


def population_robust_accuracy(apply_fn, params, x, y, key=None, *, eps, norm: str = "linf",
                               attacks=DEFAULT_ATTACKS, on_fail: str = "warn", mesh=None, member_keys=None,
                               return_adv_at=None, eps_loop="auto", point_chunk="auto", execution="auto") -> list:
    """:func:`robust_accuracy` for every member of a population, in one compiled program or member by member.

    Args:
      apply_fn: ``apply_fn(params_m, x) → logits`` for one member (e.g. a flax ``model.apply``); a static argument
        of the compiled program (the parameters are traced data: new weights are always used).
      params: the members' parameters stacked on a leading member axis M.
      x, y, eps, norm, attacks, on_fail: as :func:`robust_accuracy` (the same points for every member).
      key: member m uses ``fold_in(key, m)`` (identity by position) unless ``member_keys`` is given.
      member_keys: (M,) keys, one per member, e.g. derived by the caller from each member's own seed and a named
        stream, so a member's attack randomness does not depend on its position in the population.
      mesh: the device mesh the members are padded and sharded over (default: every device,
        :func:`crobust.parallel.member_mesh`); padding members are attacked and dropped. On several hosts the
        parameters are replicated instead (every host reads the per-member arrays back).
      return_adv_at: radii (on the grid) whose adversarial examples each report keeps
        (``report.adversarial(eps)`` (N, ...)), so that no caller has to attack twice.
      eps_loop, point_chunk: the memory layout, as :func:`robust_accuracy`; ``'auto'`` counts the members attacked
        at once (the worker threads where members run as their own calls, 1 where they are looped inside one
        program on one CPU device, else the members per device).
      execution: ``'program'`` — every member in one compiled program (``lax.map`` on one CPU device, vmapped
        and sharded elsewhere); ``'host_loop'`` — one compiled call per member (the same program as
        :func:`robust_accuracy`'s, compiled once, its weights traced), on one device, members side by side on
        the cores (:func:`crobust.parallel.host_map`); ``'host_steps'`` — as host_loop, but every attack
        iteration is its own compiled call driven from the host (:mod:`crobust.attacks._stepping`; the ε grid a
        Python loop), so no convolution runs inside a loop; ``'auto'`` — host_steps where
        :func:`crobust.parallel.host_loops_members` (convolutional members on one CPU device: XLA:CPU runs a
        convolution carried through a loop several times slower than alone, ``benchmarks/bench_execution.py``),
        else program, unless :func:`execution_default` sets what ``'auto'`` means. How, never what: the results
        agree to float round-off.

    Returns:
      a list of M :class:`RobustAccuracyReport` (checks run per member; a failure names the member). Member m's
      report equals ``robust_accuracy(Partial(apply_fn, params_m), x, y, key_m, ...)`` up to float rounding.
    """
    x, eps_values, norm = _prepare_eval(x, y, eps, norm, attacks, on_fail)
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise CrobustError("params must be a pytree of arrays with a leading member axis")
    members = int(jnp.shape(leaves[0])[0])
    if any(jnp.shape(leaf)[0] != members for leaf in leaves):
        raise CrobustError("params must have the same leading member axis on every leaf")
    first = jax.tree.map(lambda leaf: leaf[0], params)
    n, num_classes = logits_shape(Partial(apply_fn, first), x)
    y = check_labels(y, n, num_classes)
    specs = _attack_specs(attacks, num_classes)
    adv_index = _adv_index(eps_values, return_adv_at)
    keys = _member_keys(key, member_keys, members)

    execution = resolve_execution(execution, params)
    layout = parallel.MemberLayout(members, mesh)
    per_member = execution in ("host_loop", "host_steps")
    if per_member and layout.n_devices > 1:
        raise CrobustError(f"execution={execution!r} runs members as their own calls on one device; with several "
                           "devices use 'program' (the member axis is sharded)")
    at_once = (min(parallel.host_threads(), members) if per_member
               else 1 if parallel.loops_over_members() else -(-layout.padded // layout.n_devices))
    if execution == "host_steps":      # the grid is a Python loop over radii there, whatever was asked
        _layout.check_layout(eps_loop, point_chunk)
        eps_loop = True
    attacked = _attacked(eps_values)
    eps_loop, point_chunk = _layout.resolve_layout(eps_loop, point_chunk, Partial(apply_fn, first), x, specs,
                                                   len(attacked), members=at_once)
    static = dict(norm=norm, frozen=_freeze(specs), adv_index=_sub_adv_index(adv_index, attacked),
                  eps_loop=eps_loop, point_chunk=point_chunk)
    eps_array = jnp.asarray(eps_values[attacked], jnp.float32)
    if per_member:       # member m: robust_accuracy's computation on Partial(apply_fn, params_m)
        run = _run_one if execution == "host_loop" else _run_one_stepped
        per = parallel.host_map(lambda m: run(Partial(apply_fn, jax.tree.map(lambda leaf: leaf[m], params)), x, y,
                                              keys[m], eps_array, **static), members)
        arrays = {k: np.stack([np.asarray(p[k]) for p in per]) for k in per[0]}
    else:
        arrays = _run_population(layout.place_for_eval(params), layout.place_for_eval(keys),
                                 layout.put_replicated(x), layout.put_replicated(y), eps_array, apply_fn=apply_fn,
                                 **static)
        arrays = jax.tree.map(lambda v: np.asarray(v)[:members], layout.get(arrays))
    arrays = _with_zero_radii(arrays, eps_values, attacked, adv_index, x, members=members)
    grey_radius = _grey_radius(x, norm)
    reports = []
    for m in range(members):
        member_arrays = {k: v[m] for k, v in arrays.items()}
        x_adv = member_arrays.pop("x_adv", None)
        reports.append(_build_report(member_arrays, eps_values, norm, specs, grey_radius, x_adv, adv_index, on_fail,
                                     _key_data(keys[m]), num_classes, context=f" for member {m}",
                                     layout=dict(eps_loop=eps_loop, point_chunk=point_chunk, execution=execution)))
    return reports


@dataclasses.dataclass(frozen=True)
class _KnownRung:
    """A rung of :func:`budget_convergence` read from ``known``: one member's flags (E, N) and accuracies (E,)."""
    robust_flags: np.ndarray
    robust_acc: tuple
    description: str


def convergence_tolerance_pp(n_points: int, tolerance_pp: float = 0.5, min_points: int = 2) -> float:
    """The convergence threshold of :func:`budget_convergence` on ``n_points`` points, in percent of the points:
    max(tolerance_pp, 100 · min_points / n_points). New breaks strictly below it are within tolerance."""
    return max(float(tolerance_pp), 100.0 * min_points / max(int(n_points), 1))


def budget_convergence(apply_fn, params, x, y, keys, *, eps, norm: str = "linf", iterations=(25, 50, 100, 200),
                       restarts=(1, 2, 4), attacks=("apgd-ce", "apgd-t"), tolerance_pp: float = 0.5, mesh=None,
                       eps_loop="auto", point_chunk="auto", queries=(), tolerance_min_points: int = 2, known=None):
    """Robust accuracy of selected members as the attack budget doubles, and whether it has converged.

    The budget axes: ``iterations`` at the first restart count, then ``restarts`` at the largest iteration count
    (e.g. 25, 50, 100, 200 iterations × 1 restart, then 200 × 2 and 200 × 4) — 6 evaluations rather than the 12 of
    the full grid; every gradient attack of ``attacks`` (APGD-CE, APGD-T, PGD, ART-APGD) gets that ``n_iter`` and
    ``n_restarts`` (APGD-T: restarts per target). Square's axis is ``queries`` (when ``attacks`` holds Square and
    ``queries`` is given): Square runs ``queries[0]`` queries in the rungs above, then the largest gradient budget is
    run with Square at each further entry (e.g. 5000 then 10000 queries); without ``queries`` Square keeps its
    queries in every rung. The rungs form a path on which each budget is at least the one before on every axis.
    A member's robust accuracy has **converged** when the last doubling on each axis finds new breaks on fewer than
    ``tolerance_pp`` percent of the points at every ε — the points that the rung at the top of that axis breaks and
    that no rung before it on the path broke — or, where that percentage is less than ``tolerance_min_points``
    points (N < 400 points at the defaults), on fewer than ``tolerance_min_points`` points: at most one new break.
    The floor is the estimate's resolution. Robust accuracy on N points moves in steps of 1/N, so below 400 points
    a percentage tolerance of 0.5 demands zero new breaks, which a randomised attack fails at any budget: on 100
    points about one member check in ten finds exactly one new break at every doubling from 40 to 160 APGD
    iterations. One point changes robust accuracy by 1/N, at most a third of the binomial standard deviation
    √(p(1 − p)/N) of its estimate for 0.1 ≤ p ≤ 0.9 at N = 100, so the test set, not the attack, dominates the
    headline's uncertainty. From 400 points on, the percentage alone decides. A point is broken when any attack at
    any budget breaks it (the ladder is one more ensemble), so a point a weaker budget broke and a stronger one
    missed is attack noise, not a sign that the budget is too small; counting it as movement
    (|RA(T_max) − RA(T_max/2)|) would let one such point on a few hundred points, a fraction of a percent, block
    convergence forever.

    Args:
      apply_fn, params: the members to check (params with a leading member axis, e.g. the least and the most
        compressed members of a population).
      x, y: the points;  eps: one radius or a grid;  norm: ``'linf'`` or ``'l2'``.
      keys: (M,) member keys (as ``member_keys`` of :func:`population_robust_accuracy`), or one key (member m uses
        ``fold_in(key, m)``). The same keys at every budget (common random numbers).
      iterations, restarts: increasing budgets (each at least 2 entries for a verdict on that axis).
      attacks: the ensemble whose budget is varied (default APGD-CE + APGD-T).
      queries: increasing Square query budgets (at least 2 for a verdict on that axis; needs Square in ``attacks``).
      tolerance_pp: the convergence threshold in percentage points (0.5).
      tolerance_min_points: the threshold's floor in points (2: one new break is within tolerance below 400
        points). The threshold applied, max(tolerance_pp, 100 · tolerance_min_points / N) percent, is returned.
      eps_loop, point_chunk: the memory layout of every budget's evaluation (:func:`population_robust_accuracy`;
        ``'auto'`` chooses per budget, the restarts being part of a point's bytes).
      known: {(n_iter, n_restarts, n_queries): robust flags (M, E, N)} of rungs already run on these points with
        these keys and this ensemble at that budget, below the top rung (``n_queries`` None without a Square
        axis), e.g. the headline evaluation's flags for the same attacks when the headline budget is the ladder's
        first rung: those rungs are read, not run again. Their per-point results are what running them gives, up
        to float rounding of a different memory layout.

    Returns:
      a list of M dicts: ``budgets`` [{n_iter, n_restarts, n_queries (None without Square), robust_acc (per ε),
      overstated_pp (the points robust at this budget that a stronger rung breaks, max over ε)}], ``eps``,
      ``last_doubling_pp`` {'iterations': pp, 'restarts': pp, 'queries': pp} (new breaks of the axis' last doubling,
      max over ε; None for an axis with one entry), ``converged`` (bool), ``tolerance_pp`` (the threshold applied),
      ``robust_acc`` (per ε, at the largest budget), ``description`` (the ensemble at the largest budget).
    """
    iterations, restarts = tuple(int(t) for t in iterations), tuple(int(r) for r in restarts)
    queries = tuple(int(q) for q in queries)
    if not iterations or not restarts or list(iterations) != sorted(set(iterations)) or \
            list(restarts) != sorted(set(restarts)) or list(queries) != sorted(set(queries)) or \
            any(q < 1 for q in queries):
        raise CrobustError(f"iterations, restarts and queries must be increasing lists of positive integers "
                           f"(iterations and restarts non-empty), got {iterations}, {restarts}, {queries}")
    eps_values = _eps_grid(eps)
    base = _attack_specs(attacks)
    square = next((kw for name, _, kw in base if name == "square"), None)
    if queries and square is None:
        raise CrobustError("queries is Square's budget axis: attacks must hold 'square'")
    if isinstance(tolerance_min_points, bool) or not isinstance(tolerance_min_points, int) or tolerance_min_points < 1:
        raise CrobustError(f"tolerance_min_points must be a positive integer, got {tolerance_min_points!r}")
    tolerance = convergence_tolerance_pp(int(np.shape(x)[0]), tolerance_pp, tolerance_min_points)
    q_first = queries[0] if queries else (square.get("n_queries") if square is not None else None)
    leaves = jax.tree.leaves(params)
    members = int(jnp.shape(leaves[0])[0]) if leaves else 0
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    single_key = (jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 0) or \
        (not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 1)
    member_keys = _member_keys(keys, None, members) if single_key else keys

    def ensemble_at(t, r, q):
        out = []
        for name, _, kw in base:
            kw = dict(kw)
            if name == "square" and q is not None:
                kw.update(n_queries=q)
            elif name != "square" and "n_iter" in kw:
                kw.update(n_iter=t, n_restarts=r)
            out.append((name, kw))
        return tuple(out)

    budgets = [(t, restarts[0], q_first) for t in iterations] + \
        [(iterations[-1], r, q_first) for r in restarts[1:]] + \
        [(iterations[-1], restarts[-1], q) for q in queries[1:]]
    known = dict(known or {})
    results = {}
    for budget, flags in known.items():
        flags = np.asarray(flags)
        if budget not in budgets[:-1] or flags.dtype != bool or flags.shape != (members, len(eps_values), len(y)):
            raise CrobustError(f"known: a rung of the ladder {budgets} below its top, with boolean flags of shape "
                               f"({members}, {len(eps_values)}, {len(y)}), got {budget} with {flags.dtype} "
                               f"{flags.shape}")
        results[budget] = [_KnownRung(f, tuple(float(v) for v in f.mean(axis=-1)), "") for f in flags]
    for t, r, q in budgets:
        if (t, r, q) in results:
            continue
        results[(t, r, q)] = population_robust_accuracy(apply_fn, params, x, y, eps=eps_values, norm=norm,
                                                        attacks=ensemble_at(t, r, q), on_fail="ignore", mesh=mesh,
                                                        member_keys=member_keys, eps_loop=eps_loop,
                                                        point_chunk=point_chunk)

    def new_breaks(m, weaker, budget):
        """pp of the points robust under every budget in ``weaker`` but broken at ``budget`` (max over ε)."""
        unbroken = np.logical_and.reduce([np.asarray(results[w][m].robust_flags, bool) for w in weaker])
        return 100 * float(np.max(np.mean(unbroken & ~np.asarray(results[budget][m].robust_flags, bool), axis=-1)))

    def overstated(m, k):
        """pp of the points robust at budget k but broken at some stronger budget of the ladder (max over ε)."""
        if k + 1 == len(budgets):
            return 0.0
        stronger = np.logical_and.reduce([np.asarray(results[b][m].robust_flags, bool) for b in budgets[k + 1:]])
        return 100 * float(np.max(np.mean(np.asarray(results[budgets[k]][m].robust_flags, bool) & ~stronger,
                                          axis=-1)))

    def last_doubling(m, top):
        return new_breaks(m, budgets[:budgets.index(top)], top)

    out = []
    t_top, r_top, q_top = iterations[-1], restarts[-1], (queries[-1] if queries else q_first)
    for m in range(members):
        d_iter = last_doubling(m, (t_top, restarts[0], q_first)) if len(iterations) > 1 else None
        d_rest = last_doubling(m, (t_top, r_top, q_first)) if len(restarts) > 1 else None
        d_query = last_doubling(m, (t_top, r_top, q_top)) if len(queries) > 1 else None
        steps = [d for d in (d_iter, d_rest, d_query) if d is not None]
        top = results[(t_top, r_top, q_top)][m]
        out.append(dict(
            eps=[float(e) for e in eps_values], eps_str=[format_eps(e) for e in eps_values],
            budgets=[dict(n_iter=t, n_restarts=r, n_queries=q, robust_acc=list(results[(t, r, q)][m].robust_acc),
                          overstated_pp=overstated(m, k))
                     for k, (t, r, q) in enumerate(budgets)],
            last_doubling_pp={"iterations": d_iter, "restarts": d_rest, "queries": d_query},
            converged=bool(steps) and all(d < tolerance for d in steps), tolerance_pp=tolerance,
            robust_acc=list(top.robust_acc), description=top.description))
    return out


def _key_data(key):
    try:
        return np.asarray(jax.random.key_data(key)).tolist()
    except TypeError:
        return np.asarray(key).tolist()


__all__ = ["robust_accuracy", "population_robust_accuracy", "budget_convergence", "robust_flags",
           "RobustAccuracyReport", "RobustnessCheckWarning", "format_eps", "DEFAULT_ATTACKS", "EXECUTIONS",
           "execution_default", "resolve_execution"]
