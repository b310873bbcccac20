"""Fast Minimum-Norm attack (FMN; Pintor et al., NeurIPS 2021), ℓ∞ and ℓ2: a per-point robustness radius from above.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import fmn, robust_accuracy_curve
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    x_adv, radius = fmn(logits_fn, x, y, None, norm="linf", n_iter=100)     # radius (8,), pixel units
    robust_accuracy_curve(radius, jnp.array([0.0, 4/255, 8/255]))          # (3,) robust accuracy at every ε

Unlike the fixed-budget attacks, FMN has no ε argument: it searches, for every point, the smallest perturbation
that changes the predicted label, and returns that point and its norm. Because ``radius`` is the norm of an
actual misclassified point, it is an upper bound on the point's true minimal adversarial radius, and a point is
counted robust at a budget ε exactly when ``radius > ε``: one run gives the whole robust-accuracy curve
(:func:`robust_accuracy_curve`). The certified side (lower bounds) is :mod:`crobust.metrics.certified`.

The algorithm, per point, with δ⁰ = 0 (or the boundary point found from ``starting_points``, below), ε⁰ = +∞,
margin loss ℓ(x') = max_{j≠y} z_j(x') − z_y(x') (> 0 ⇔ misclassified), q the dual exponent (q = 1 for ℓ∞, 2 for
ℓ2) and K = ``n_iter`` iterations k = 0 … K−1:

- cosine annealing: c_k = (1 + cos(πk/K))/2, α_k = α_f + (α_0 − α_f)·c_k, γ_k = γ_f + (γ_0 − γ_f)·c_k;
- evaluate x_k = x + δᵏ: ℓ, g = ∇ₓℓ(x_k) (with ``clip``, entries g_i < 0 where x_k,i = 0 and g_i > 0 where
  x_k,i = 1 set to 0), and whether x_k is misclassified; if it is and ‖δᵏ‖ is below the best norm so far, x_k becomes the point's best adversarial example (its norm the best norm);
- ε update: misclassified → εᵏ⁺¹ = min(εᵏ(1 − γ_k), best norm); not misclassified and an adversarial example
  already found → εᵏ⁺¹ = εᵏ(1 + γ_k); not misclassified and none found yet →
  εᵏ⁺¹ = (‖δᵏ‖ + |ℓ|/max(‖g‖_q, 1e-12))·(1 + γ_k), the distance to the boundary of the margin linearised at x_k,
  enlarged by the factor 1 + γ_k; then ε is capped at ‖max(x, 1 − x)‖ (the largest norm of any point of the box
  [0, 1]^d around x);
- step: δ ← δᵏ + α_k·g/max(‖g‖₂, 1e-12) (the ℓ2-normalised gradient for both norms, as the reference
  implementations do), then onto the ε-ball (ℓ∞: clip each coordinate to [−ε, ε]; ℓ2: δ·min(1, ε/‖δ‖₂)), then
  into the box: δᵏ⁺¹ = clip(x + δ, 0, 1) − x (``clip=True``).

Two changes to the reference rules, each with a switch that restores it. (1) ``overshoot``: the factor 1 + γ_k
on the boundary estimate. On a piece where the model is linear (a linear model, or a ReLU network inside one
activation region) the estimate is exact, so the reference rule puts the iterate on the boundary itself, where rounding
decides the label, and a point left on the correct side gets ε = ‖δ‖ + (a rounding-sized distance) at every
later iteration and is never broken. With the factor the first adversarial iterate overshoots by at most γ_k
relative, which the ε ← ε(1 − γ) updates then shrink. (2) ``box_aware``: the gradient entries that
point out of the box at coordinates already on its faces are dropped. The reference rule spends part of the ε
budget on them, which the box clip then removes; the next estimate ε = ‖δ‖ + |ℓ|/‖g‖_q starts from the clipped,
shorter δ and counts those entries in ‖g‖_q, so on images with many pixels at 0 or 1 (digits) ε settles at a
fixed point below the boundary and the point is never broken. (2) changes nothing while the iterates stay in
the interior of the box.

Only the K evaluated iterates are candidates (the last step's result is not evaluated), so K iterations cost K
forward and backward passes. A point misclassified at x itself has radius 0 (x_adv = x); a point for which no
iterate is misclassified has radius +∞ and x_adv = x. Norms are over all non-batch axes, in pixel units.

``starting_points`` (N, ...) (any adversarial points, e.g. from another attack): a bisection of
``binary_search_steps`` halvings on t ∈ [0, 1] finds the boundary point between x and the start along
x + clip(s − x, −t, t) (ℓ∞) or x + t(s − x) (ℓ2), keeping the misclassified end, and FMN starts there. A point
whose start is not misclassified starts from δ = 0 instead (the reference raises an error; inside a compiled
program the check cannot raise).

Iterations run through :func:`crobust.attacks._stepping.fori_loop`, so under host stepping the loop is driven
from the host, one compiled call per iteration.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.attacks import _stepping
from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks._common import predicts, public_attack, value_and_input_grad
from crobust.attacks._validate import check_call, check_images, check_positive_int, prepare

_TINY = 1e-12


def _expand(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _dual_norm(g, norm):
    """‖g‖_q per example, q the dual exponent of ``norm`` (ℓ1 for ℓ∞, ℓ2 for ℓ2)."""
    if norm == "linf":
        return jnp.sum(jnp.abs(g), axis=tuple(range(1, g.ndim)))
    return P.lp_norm(g, "l2")


def _project_ball(delta, eps, norm):
    """δ onto the ε-ball around 0, per example (ε (N,), possibly +∞)."""
    e = _expand(eps, delta)
    if norm == "linf":
        return jnp.clip(delta, -e, e)
    norms = P.lp_norm(delta, "l2")
    factor = jnp.minimum(1.0, eps / jnp.maximum(norms, _TINY))
    return delta * _expand(factor, delta)


def _segment_point(x, start, t, norm):
    """The point at parameter t (N,) ∈ [0, 1] from x towards ``start``: x + clip(s − x, ±t) (ℓ∞), x + t(s − x) (ℓ2)."""
    if norm == "linf":
        te = _expand(t, x)
        return x + jnp.clip(start - x, -te, te)
    return x + _expand(t, x) * (start - x)


def _boundary_start(logits_fn, x, y, start, norm, steps):
    """δ at the misclassified end of a bisection between x and ``start`` (0 where ``start`` is not adversarial)."""
    adversarial = ~_stepping.call(lambda s: predicts(logits_fn(s), y), start)
    n = x.shape[0]

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        adv = ~predicts(logits_fn(_segment_point(x, start, mid, norm)), y)
        return jnp.where(adv, lo, mid), jnp.where(adv, mid, hi)

    _, hi = _stepping.fori_loop(0, steps, halve, (jnp.zeros((n,), x.dtype), jnp.ones((n,), x.dtype)))
    delta = _segment_point(x, start, hi, norm) - x
    return jnp.where(_expand(adversarial, x), delta, 0.0)


def fmn_run(logits_fn, x, y, norm: str, n_iter: int, alpha_init: float, alpha_final: float, gamma_init: float,
            gamma_final: float, clip: bool = True, delta_init=None, overshoot: bool = True,
            box_aware: bool = True):
    """The FMN loop of the module docstring on validated inputs (no checks).

    Returns (x_adv (N, ...), radius (N,), found (N,) bool): the smallest-norm misclassified iterate per point
    (x where none), its norm ‖x_adv − x‖ (+∞ where none), and whether one was found.
    """
    image_shape = x.shape
    x = x.reshape(image_shape[0], -1)
    n = x.shape[0]
    evaluate = value_and_input_grad(lambda q: logits_fn(q.reshape(image_shape)),
                                    lambda z: _losses.margin(z, y))
    if clip:
        worst = P.lp_norm(jnp.maximum(x, 1.0 - x), norm)
    else:
        worst = jnp.full((n,), jnp.inf, x.dtype)
    delta0 = jnp.zeros_like(x) if delta_init is None else delta_init.reshape(x.shape)
    state = dict(delta=delta0, eps=jnp.full((n,), jnp.inf, x.dtype), best_norm=jnp.full((n,), jnp.inf, x.dtype),
                 best_adv=x, found=jnp.zeros((n,), bool))

    def body(k, s):
        cosine = (1.0 + jnp.cos(math.pi * k.astype(jnp.float32) / n_iter)) / 2.0
        alpha = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine
        grow = 1.0 + gamma if overshoot else 1.0
        delta = s["delta"]
        x_k = x + delta
        delta_norm = P.lp_norm(delta, norm)
        loss, logits, grad = evaluate(x_k)
        adv = ~predicts(logits, y)
        if clip and box_aware:
            grad = jnp.where(((x_k <= 0.0) & (grad < 0.0)) | ((x_k >= 1.0) & (grad > 0.0)), 0.0, grad)
        better = adv & (delta_norm < s["best_norm"])
        found = s["found"] | adv
        best_norm = jnp.where(better, delta_norm, s["best_norm"])
        best_adv = jnp.where(_expand(better, x), x_k, s["best_adv"])
        to_boundary = jnp.abs(loss) / jnp.maximum(_dual_norm(grad, norm), _TINY)
        eps = jnp.where(adv, jnp.minimum(s["eps"] * (1.0 - gamma), best_norm),
                        jnp.where(found, s["eps"] * (1.0 + gamma), (delta_norm + to_boundary) * grow))
        eps = jnp.minimum(eps, worst)
        step = grad / _expand(jnp.maximum(P.lp_norm(grad, "l2"), _TINY), grad)
        delta = _project_ball(delta + alpha * step, eps, norm)
        if clip:
            delta = jnp.clip(x + delta, 0.0, 1.0) - x
        return dict(delta=delta, eps=eps, best_norm=best_norm, best_adv=best_adv, found=found)

    s = _stepping.fori_loop(0, n_iter, body, state)
    best_adv = s["best_adv"]
    radius = jnp.where(s["found"], P.lp_norm(best_adv - x, norm), jnp.inf)
    return best_adv.reshape(image_shape), radius, s["found"]


def _fmn(logits_fn, x, y, key=None, *, norm: str = "linf", n_iter: int = 100, alpha_init: float = 1.0,
         alpha_final: float | None = None, gamma_init: float = 0.05, gamma_final: float = 0.001,
         starting_points=None, binary_search_steps: int = 10, overshoot: bool = True, box_aware: bool = True,
         labels: str = "true", clip: bool = True):
    """FMN: per point, the smallest-norm misclassified point found and its norm (module docstring).

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); call forms as every attack (package docstring), e.g.
        ``jax.tree_util.Partial(model.apply, params)``.
      x: clean images (N, ...) in [0, 1].
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: unused (FMN is deterministic); accepted for the common attack signature.
      norm: ``'linf'`` or ``'l2'``.
      n_iter: iterations K (one forward and backward pass each).
      alpha_init, alpha_final: step size α_0 → α_f (cosine-annealed; the step is α times the ℓ2-normalised
        gradient, pixel units); ``alpha_final=None`` means α_0/100.
      gamma_init, gamma_final: relative ε change γ_0 → γ_f (cosine-annealed). Near the end of a run ε moves by a
        factor 1 ± γ per iteration, so ``gamma_final`` sets the resolution of the returned radius.
      starting_points: optional adversarial points (N, ...) in [0, 1] to start from (module docstring).
      binary_search_steps: halvings of the bisection towards ``starting_points``.
      overshoot: scale the linearised boundary estimate by (1 + γ_k) (module docstring); ``False`` is the
        reference rule.
      box_aware: with ``clip``, drop the gradient entries that point out of [0, 1] at coordinates already on the
        box's faces, before the boundary estimate and the step (module docstring); ``False`` is the reference rule.
      labels: ``'true'`` or ``'predicted'``.
      clip: keep every iterate in [0, 1].

    Returns:
      (x_adv (N, ...), radius (N,)): radius = ‖x_adv − x‖ (``norm``, over all non-batch axes) where an
      adversarial point was found, 0 for points misclassified at x, +∞ where none was found (x_adv = x there).
    """
    x, y, _, norm, _ = prepare(logits_fn, x, y, 0.0, norm, labels)
    n_iter = check_positive_int(n_iter, "n_iter")
    binary_search_steps = check_positive_int(binary_search_steps, "binary_search_steps", minimum=0)
    alpha_final = alpha_init / 100.0 if alpha_final is None else alpha_final
    for name, value in (("alpha_init", alpha_init), ("alpha_final", alpha_final), ("gamma_init", gamma_init),
                        ("gamma_final", gamma_final)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
            raise CrobustError(f"{name} must be a number >= 0, got {value!r}")
    if not (gamma_init < 1 and gamma_final < 1):
        raise CrobustError(f"gamma_init and gamma_final must be < 1, got {gamma_init!r} and {gamma_final!r}")
    delta_init = None
    if starting_points is not None:
        start = check_images(starting_points, "starting_points")
        if start.shape != x.shape:
            raise CrobustError(f"starting_points must have the shape of x {x.shape}, got {start.shape}")
        delta_init = _boundary_start(logits_fn, x, y, start, norm, binary_search_steps)
    x_adv, radius, _ = fmn_run(logits_fn, x, y, norm, n_iter, float(alpha_init), float(alpha_final),
                               float(gamma_init), float(gamma_final), clip, delta_init, bool(overshoot),
                               bool(box_aware))
    return x_adv, radius


def _check_fmn(logits_fn, x, y, *, starting_points=None, **kwargs):
    """Eager value checks before compiling: those of every attack (no ε), and ``starting_points`` in [0, 1]."""
    check_call(logits_fn, x, y, **kwargs)
    if starting_points is not None:
        check_images(starting_points, "starting_points")


fmn = public_attack(_fmn, _check_fmn, dynamic=("starting_points",))


def robust_accuracy_curve(radii, eps_grid):
    """Robust accuracy at every budget from per-point radii: (E,) with entry e = mean_n [radius_n > ε_e].

    A point is robust at ε when its (attack-found) minimal adversarial radius exceeds ε; points misclassified
    at x have radius 0 and are never robust, points no attack broke have radius +∞ and always are. ``radii``
    (N,), ``eps_grid`` (E,) (or a scalar → a scalar), both in pixel units of the same norm. jit-compatible.
    """
    radii = jnp.asarray(radii, jnp.float32)
    eps_grid = jnp.asarray(eps_grid, jnp.float32)
    if radii.ndim != 1:
        raise CrobustError(f"radii must have shape (N,), got {radii.shape}")
    return jnp.mean(radii > eps_grid[..., None], axis=-1)
