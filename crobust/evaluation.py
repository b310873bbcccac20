"""Robust accuracy, RobustBench-style: clean and robust accuracy on the same points, per-point worst case over an
ensemble of attacks, a whole ε grid in one compiled call, built-in sanity and gradient-masking checks.

Usage::

    import jax, jax.numpy as jnp
    import crobust.evaluation as E
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 1)); y = jnp.arange(64) % 10
    report = E.robust_accuracy(logits_fn, x, y, jax.random.key(2), eps=[0, 1/255, 2/255, 4/255, 8/255],
                               norm="linf", attacks=("apgd-ce", "apgd-t", "square"))
    report.clean_acc, report.robust_acc          # fractions; robust_acc has one entry per ε
    report.model_info(-1)                        # {'threat_model': 'Linf', 'eps': '8/255', 'clean_acc': '..', ...}

    # a population: params with a leading member axis, one compile for all members and all ε
    # reports = E.population_robust_accuracy(model.apply, params, x, y, key, eps=[...], norm="linf")

Semantics (AutoAttack's ``run_standard_evaluation``): a point counts as robust at ε when it is classified
correctly at x and at the output of every attack in the list (re-predicted on the returned x_adv). AutoAttack
runs each later attack only on the points still robust; here every attack runs on every point (a compiled,
vmapped program cannot shrink its batch) and the cascade is applied with masks, which gives the same flags: a
broken point ignores later attacks. The reported adversarial example of a point is the output of the first
attack that broke it. ``robust_acc_after[a]`` is AutoAttack's log line "robust accuracy after A" (cumulative);
``attack_acc[a]`` is attack a alone. Attack a at every ε uses ``fold_in(key, a)`` — the same random numbers at
every ε (common random numbers, which makes the ε curve smoother); member m of a population uses
``fold_in(key, m)`` as its key.

Attacks (names → defaults; override with ``(name, {kwarg: value})`` pairs in ``attacks``):
``'fgsm'`` (ℓ∞) / ``'fgm'``; ``'pgd'`` (:data:`crobust.attacks.presets.PGD_EVAL`, 30 steps × 10 restarts);
``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'`` (AutoAttack standard: 100 iterations, 1 restart, 9 targets);
``'square'`` (5000 queries, p_init 0.8). The default ensemble is AutoAttack's standard one without FAB-T:
``('apgd-ce', 'apgd-t', 'square')``.

Checks run on every evaluation; each failure is listed in ``report.checks['failures']`` and raised as a
:class:`RobustnessCheckWarning` (or a :class:`CrobustError` with ``on_fail='raise'``):

- invariants: ‖x_adv − x‖ ≤ ε + 1e-6 for every attack's output, x_adv ∈ [0, 1], no NaN;
- zero gradients: correctly classified points where ∇ₓ CE or ∇ₓ DLR is exactly zero at x (AutoAttack's
  ``check_zero_gradients``; CE saturates on very confident points, masking gradients for CE attacks; DLR is
  constant on misclassified points whose label ranks third, which is why only correct points count);
- Square beats the white-box attacks: more than 0.2 % of the points survive every gradient attack but not Square
  (AutoAttack's ``check_square_sr`` threshold);
- robust accuracy increases as ε grows (over the sorted grid);
- robust accuracy above 5 % at an ε that reaches the grey image 0.5·1 from every point (ℓ∞ ε ≥ 0.5, ℓ2 ε ≥
  max_n ‖x_n − 0.5‖₂) — there every point can be moved to one common image, so accuracy near 0 is expected;
- missed trivial points: points called robust although the grey image 0.5·1 lies within ε of them and is
  misclassified as something other than their label (an attack failure that needs no search to prove).
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import warnings
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import parallel
from crobust._errors import CrobustError, check_choice
from crobust.attacks import losses as _losses
from crobust.attacks import presets
from crobust.attacks import projections as P
from crobust.attacks.apgd import apgd as _apgd
from crobust.attacks.apgd import apgd_t as _apgd_t
from crobust.attacks.fgsm import fgm as _fgm
from crobust.attacks.pgd import pgd as _pgd
from crobust.attacks.square import square as _square
from crobust.attacks._common import predicts, value_and_input_grad
from crobust.attacks._validate import check_images, check_labels, check_norm, logits_shape

DEFAULT_ATTACKS = ("apgd-ce", "apgd-t", "square")
PERTURBATION_TOL = 1e-6
SQUARE_TOL = 0.002
LARGE_EPS_MAX_ACC = 0.05
ON_FAIL = ("warn", "raise", "ignore")

_ATTACKS = {
    "fgsm": (_fgm, {}),
    "fgm": (_fgm, {}),
    "pgd": (_pgd, dict(presets.PGD_EVAL)),
    "apgd-ce": (_apgd, dict(presets.APGD_CE)),
    "apgd-dlr": (_apgd, dict(presets.APGD_DLR)),
    "apgd-t": (_apgd_t, dict(presets.APGD_T)),
    "square": (_square, dict(presets.SQUARE)),
}
WHITE_BOX = ("fgsm", "fgm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t")


class RobustnessCheckWarning(UserWarning):
    """An evaluation check failed: an invariant is violated or gradient masking is suspected."""


def format_eps(eps: float) -> str:
    """ε as RobustBench writes it: ``'8/255'`` when ε·255 is an integer, else the shortest decimal (``'0.5'``)."""
    eps = float(eps)
    k = eps * 255.0
    if eps > 0 and abs(k - round(k)) < 1e-6:
        frac = fractions.Fraction(int(round(k)), 255)
        return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    return f"{eps:g}"


def _attack_specs(attacks):
    """Validate ``attacks`` into ((name, fn, kwargs), ...)."""
    if isinstance(attacks, str):
        attacks = (attacks,)
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
        specs.append((name, fn, kwargs))
    names = [s[0] for s in specs]
    if len(set(names)) != len(names):
        raise CrobustError(f"attacks must not repeat a name, got {names}")
    if not specs:
        raise CrobustError("attacks must name at least one attack")
    return tuple(specs)


def _freeze(specs):
    """A hashable form of the validated attack list (static argument of the jitted runners)."""
    return tuple((name, tuple(sorted(kwargs.items()))) for name, _, kwargs in specs)


def _thaw(frozen):
    return tuple((name, dict(items)) for name, items in frozen)


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "frozen"))
def _run_one(x, y, key, eps, *, logits_fn, norm, frozen):
    return robust_flags(logits_fn, x, y, key, eps, norm=norm, attacks=_thaw(frozen))


@functools.partial(jax.jit, static_argnames=("apply_fn", "norm", "frozen"))
def _run_population(params, keys, x, y, eps, *, apply_fn, norm, frozen):
    def one_member(member_params, member_key):
        arrays = robust_flags(functools.partial(apply_fn, member_params), x, y, member_key, eps, norm=norm,
                              attacks=_thaw(frozen))
        arrays.pop("x_adv")
        return arrays

    return parallel.map_members(one_member, params, keys)      # a loop on one CPU device, else vmapped


def _eps_grid(eps):
    values = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if values.ndim != 1 or values.size == 0:
        raise CrobustError(f"eps must be a number or a non-empty 1-D list of numbers, got {eps!r}")
    if not np.all(values >= 0):
        raise CrobustError(f"eps must be >= 0, got {values.tolist()}")
    return values


def robust_flags(logits_fn, x, y, key, eps, *, norm: str = "linf", attacks=DEFAULT_ATTACKS):
    """The array core of :func:`robust_accuracy` (jit/vmap-compatible; no checks on values, no host work).

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C).
      x: (N, ...) images;  y: (N,) labels;  key: PRNG key.
      eps: (E,) grid of radii (may be traced); the attacks run vmapped over it.
      norm, attacks: as :func:`robust_accuracy`.

    Returns:
      dict of arrays: ``clean_correct`` (N,), ``attack_correct`` (E, A, N) — correct at attack a's output,
      ``robust`` (E, N), ``x_adv`` (E, N, ...), ``max_excess`` (E, A) = max_n ‖x_adv − x‖ − ε,
      ``min_value``/``max_value`` (E, A), ``nan_count`` (E, A), ``zero_grad_ce``/``zero_grad_dlr`` (N,) bool,
      ``grey_breaks`` (E, N) — the grey image is within ε and misclassified.
    """
    norm = check_norm(norm)
    specs = _attack_specs(attacks)
    eps = jnp.asarray(eps, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    clean_logits = logits_fn(x)
    clean_correct = predicts(clean_logits, y)
    num_classes = clean_logits.shape[-1]

    _, _, grad_ce = value_and_input_grad(logits_fn, lambda z: _losses.cross_entropy(z, y))(x)
    zero_ce = clean_correct & (jnp.sum(jnp.abs(grad_ce), axis=tuple(range(1, x.ndim))) == 0)
    if num_classes >= 3:
        _, _, grad_dlr = value_and_input_grad(logits_fn, lambda z: _losses.dlr(z, y))(x)
        zero_dlr = clean_correct & (jnp.sum(jnp.abs(grad_dlr), axis=tuple(range(1, x.ndim))) == 0)
    else:
        zero_dlr = jnp.zeros_like(zero_ce)

    grey = jnp.full_like(x, 0.5)
    grey_wrong = ~predicts(logits_fn(grey), y)
    grey_distance = P.lp_norm(grey - x, norm)

    def at_eps(eps_value):
        robust = clean_correct
        x_adv = x
        correct_by, excess, lo, hi, nans = [], [], [], [], []
        for index, (_, fn, kwargs) in enumerate(specs):
            xa = fn(logits_fn, x, y, jax.random.fold_in(key, index), eps=eps_value, norm=norm, **kwargs)
            correct = predicts(logits_fn(xa), y)
            newly_broken = robust & ~correct
            x_adv = jnp.where(newly_broken.reshape((-1,) + (1,) * (x.ndim - 1)), xa, x_adv)
            robust = robust & correct
            correct_by.append(correct & clean_correct)
            finite = jnp.where(jnp.isnan(xa), x, xa)
            excess.append(jnp.max(P.lp_norm(finite - x, norm)) - eps_value)
            lo.append(jnp.min(finite))
            hi.append(jnp.max(finite))
            nans.append(jnp.sum(jnp.isnan(xa)))
        return dict(attack_correct=jnp.stack(correct_by), robust=robust, x_adv=x_adv, max_excess=jnp.stack(excess),
                    min_value=jnp.stack(lo), max_value=jnp.stack(hi), nan_count=jnp.stack(nans),
                    grey_breaks=grey_wrong & (grey_distance <= eps_value))

    out = jax.vmap(at_eps)(eps)
    out.update(clean_correct=clean_correct, zero_grad_ce=zero_ce, zero_grad_dlr=zero_dlr)
    return out


@dataclasses.dataclass(frozen=True)
class RobustAccuracyReport:
    """One model's evaluation over an ε grid. Accuracies are fractions in [0, 1].

    Fields mirror RobustBench's model-info entries (``threat_model``, ``eps`` as ``'8/255'``, ``clean_acc``,
    robust accuracy, attack settings); per-point flags are numpy arrays: ``clean_correct`` (N,), ``robust_flags``
    (E, N), ``attack_flags[name]`` (E, N) (correct at x and at that attack's output).
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

    def model_info(self, index: int = -1, **extra) -> dict:
        """A RobustBench-style entry for ε = ``eps[index]`` (accuracies as percent strings with 2 decimals)."""
        info = dict(threat_model=self.threat_model, eps=self.eps_str[index],
                    clean_acc=f"{100 * self.clean_acc:.2f}", robust_acc=f"{100 * self.robust_acc[index]:.2f}",
                    n_examples=self.n_examples, attacks=[dict(a) for a in self.attacks],
                    unreliable=not self.checks["passed"])
        info.update(extra)
        return info

    def to_dict(self, per_point: bool = False) -> dict:
        """JSON-able dict (per-point flags as lists of bools when ``per_point``)."""
        out = dict(threat_model=self.threat_model, norm=self.norm, eps=list(self.eps), eps_str=list(self.eps_str),
                   n_examples=self.n_examples, clean_acc=self.clean_acc, robust_acc=list(self.robust_acc),
                   robust_acc_after={k: list(v) for k, v in self.robust_acc_after.items()},
                   attack_acc={k: list(v) for k, v in self.attack_acc.items()},
                   attacks=[dict(a) for a in self.attacks], checks=self.checks)
        if per_point:
            out.update(clean_correct=self.clean_correct.tolist(), robust_flags=self.robust_flags.tolist(),
                       attack_flags={k: v.tolist() for k, v in self.attack_flags.items()})
        return out


def _json_settings(kwargs):
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in kwargs.items()}


def _build_report(arrays, eps_values, norm, specs, large_eps, x_adv, on_fail, key_data, context=""):
    """Host side: accuracies, checks and the record from the arrays of :func:`robust_flags` (one model)."""
    a = jax.tree.map(np.asarray, arrays)
    names = [s[0] for s in specs]
    n = int(a["clean_correct"].shape[0])
    clean_correct = a["clean_correct"].astype(bool)
    correct = a["attack_correct"].astype(bool)                       # (E, A, N)
    robust = a["robust"].astype(bool)                                # (E, N)
    mean = (lambda v: float(np.mean(v))) if n else (lambda v: float("nan"))
    cumulative = np.logical_and.accumulate(correct, axis=1) & clean_correct   # (E, A, N)
    robust_acc = tuple(mean(robust[e]) for e in range(len(eps_values)))
    robust_acc_after = {name: tuple(mean(cumulative[e, i]) for e in range(len(eps_values)))
                        for i, name in enumerate(names)}
    attack_acc = {name: tuple(mean(correct[e, i]) for e in range(len(eps_values))) for i, name in enumerate(names)}

    failures = []
    max_excess = float(np.max(a["max_excess"])) if n else 0.0
    if max_excess > PERTURBATION_TOL:
        e, i = np.unravel_index(np.argmax(a["max_excess"]), a["max_excess"].shape)
        failures.append(f"perturbation exceeds eps: {names[i]} at eps={format_eps(eps_values[e])} is "
                        f"{max_excess:.3g} beyond the ball (tolerance {PERTURBATION_TOL})")
    lo, hi = (float(np.min(a["min_value"])), float(np.max(a["max_value"]))) if n else (0.0, 1.0)
    if lo < 0.0 or hi > 1.0:
        failures.append(f"adversarial inputs leave [0, 1]: values in [{lo:.4g}, {hi:.4g}]")
    nan_count = int(np.sum(a["nan_count"]))
    if nan_count:
        failures.append(f"NaN in adversarial inputs: {nan_count} entries")
    zero_ce, zero_dlr = int(np.sum(a["zero_grad_ce"])), int(np.sum(a["zero_grad_dlr"]))
    if zero_ce or zero_dlr:
        failures.append(f"zero gradients at x: {zero_ce} points (CE), {zero_dlr} points (DLR); gradient attacks "
                        "may be unreliable there (AutoAttack check_zero_gradients)")
    square_only = []
    if "square" in names and any(nm in WHITE_BOX for nm in names):
        white = [i for i, nm in enumerate(names) if nm in WHITE_BOX]
        survive_white = np.all(correct[:, white, :], axis=1) & clean_correct
        sq = correct[:, names.index("square"), :]
        square_only = [mean(survive_white[e] & ~sq[e]) for e in range(len(eps_values))]
        worst = int(np.argmax(square_only))
        if square_only[worst] > SQUARE_TOL:
            failures.append(f"Square beats the white-box attacks: {100 * square_only[worst]:.2f}% of the points "
                            f"are broken only by Square at eps={format_eps(eps_values[worst])} (possible gradient "
                            "masking; AutoAttack check_square_sr)")
    order = np.argsort(eps_values, kind="stable")
    increases = [(eps_values[order[j]], eps_values[order[j + 1]]) for j in range(len(order) - 1)
                 if robust_acc[order[j + 1]] > robust_acc[order[j]]]
    if increases:
        failures.append("robust accuracy increases with eps: "
                        + ", ".join(f"{format_eps(s)} -> {format_eps(t)}" for s, t in increases))
    large = large_eps
    large_eps_acc = [robust_acc[e] for e in range(len(eps_values)) if eps_values[e] >= large]
    if large_eps_acc and max(large_eps_acc) > LARGE_EPS_MAX_ACC:
        failures.append(f"robust accuracy {100 * max(large_eps_acc):.1f}% > {100 * LARGE_EPS_MAX_ACC:.0f}% at an eps "
                        f"where every point reaches the grey image (eps >= {large:.4g}); expected ~0")
    missed = (a["grey_breaks"].astype(bool) & robust).sum(axis=1)          # (E,)
    if np.any(missed):
        failures.append(f"attacks missed trivially broken points (grey image within eps and misclassified): "
                        f"{missed.tolist()} per eps")

    checks = dict(passed=not failures, failures=failures, max_perturbation_excess=max_excess,
                  min_value=lo, max_value=hi, nan_count=nan_count, zero_gradient_points_ce=zero_ce,
                  zero_gradient_points_dlr=zero_dlr, square_only_fraction=[float(v) for v in square_only],
                  missed_trivial_points=[int(v) for v in missed])
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
        attack_flags={nm: correct[:, i, :] & clean_correct for i, nm in enumerate(names)}, x_adv=x_adv)


def _prepare_eval(x, y, eps, norm, attacks, on_fail):
    norm = check_norm(norm)
    check_choice("on_fail", on_fail, ON_FAIL)
    x = check_images(x)
    eps_values = _eps_grid(eps)
    specs = _attack_specs(attacks)
    return x, eps_values, norm, specs


def _grey_radius(x, norm):
    return 0.5 if norm == "linf" else float(np.max(np.asarray(P.lp_norm(0.5 - x, "l2"))))


def robust_accuracy(logits_fn, x, y, key, *, eps, norm: str = "linf", attacks=DEFAULT_ATTACKS,
                    on_fail: str = "warn", return_adversarial: bool = False) -> RobustAccuracyReport:
    """Clean and robust accuracy of one model over an ε grid, worst case per point over ``attacks``.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); normalisation lives inside it.
      x: test images (N, ...) in [0, 1];  y: integer labels (N,);  key: PRNG key.
      eps: one radius or a list (pixel units); all run in one compiled call (vmapped over ε).
      norm: ``'linf'`` or ``'l2'``.
      attacks: names or ``(name, {kwarg: value})`` pairs; see the module docstring.
      on_fail: what a failed check does: ``'warn'`` (:class:`RobustnessCheckWarning`), ``'raise'``, ``'ignore'``.
      return_adversarial: keep the worst-case x_adv (E, N, ...) in ``report.x_adv``.

    Returns:
      :class:`RobustAccuracyReport`.

    The program is compiled with ``logits_fn`` as a static argument, so calling again with the *same* function
    object (e.g. another chunk of test points) reuses it; JAX's jit cache then keeps a reference to that function
    (and the parameters it closes over). To evaluate many models, pass parameters as data through
    :func:`population_robust_accuracy` instead of a new closure per model.
    """
    x, eps_values, norm, specs = _prepare_eval(x, y, eps, norm, attacks, on_fail)
    n, num_classes = logits_shape(logits_fn, x)
    y = check_labels(y, n, num_classes)
    # jitted with logits_fn static: calling again with the same function object reuses the compiled program
    arrays = dict(_run_one(x, y, key, jnp.asarray(eps_values, jnp.float32), logits_fn=logits_fn, norm=norm,
                           frozen=_freeze(specs)))
    x_adv = arrays.pop("x_adv")
    return _build_report(arrays, eps_values, norm, specs, _grey_radius(x, norm),
                         np.asarray(x_adv) if return_adversarial else None,
                         on_fail, _key_data(key))


def population_robust_accuracy(apply_fn, params, x, y, key, *, eps, norm: str = "linf", attacks=DEFAULT_ATTACKS,
                               on_fail: str = "warn") -> list:
    """:func:`robust_accuracy` for every member of a population, in one compiled program.

    Args:
      apply_fn: ``apply_fn(params_m, x) → logits`` for one member (e.g. a flax ``model.apply``).
      params: the members' parameters stacked on a leading member axis M.
      x, y, eps, norm, attacks, on_fail: as :func:`robust_accuracy` (the same points for every member).
      key: member m uses ``fold_in(key, m)``, so member m's report equals ``robust_accuracy(partial(apply_fn,
        params_m), x, y, fold_in(key, m), ...)``.

    Returns:
      a list of M :class:`RobustAccuracyReport` (checks run per member; a failure names the member).
    """
    x, eps_values, norm, specs = _prepare_eval(x, y, eps, norm, attacks, on_fail)
    leaves = jax.tree.leaves(params)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise CrobustError("params must be a pytree of arrays with a leading member axis")
    members = int(jnp.shape(leaves[0])[0])
    if any(jnp.shape(leaf)[0] != members for leaf in leaves):
        raise CrobustError("params must have the same leading member axis on every leaf")
    first = jax.tree.map(lambda leaf: leaf[0], params)
    n, num_classes = logits_shape(functools.partial(apply_fn, first), x)
    y = check_labels(y, n, num_classes)

    keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(members))
    arrays = _run_population(params, keys, x, y, jnp.asarray(eps_values, jnp.float32), apply_fn=apply_fn, norm=norm,
                             frozen=_freeze(specs))
    grey_radius = _grey_radius(x, norm)
    reports = []
    for m in range(members):
        member_arrays = jax.tree.map(lambda v: v[m], arrays)
        reports.append(_build_report(member_arrays, eps_values, norm, specs, grey_radius, None, on_fail,
                                     _key_data(jax.random.fold_in(key, m)), context=f" for member {m}"))
    return reports


def _key_data(key):
    try:
        return np.asarray(jax.random.key_data(key)).tolist()
    except TypeError:
        return np.asarray(key).tolist()


__all__ = ["robust_accuracy", "population_robust_accuracy", "robust_flags", "RobustAccuracyReport",
           "RobustnessCheckWarning", "format_eps", "DEFAULT_ATTACKS"]
