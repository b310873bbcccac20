"""ART's ``AutoProjectedGradientDescent`` (adversarial-robustness-toolbox 1.18–1.20), the attack the reference code
could run as "AutoPGD" — a named variant beside AutoAttack's APGD (:mod:`crobust.attacks.apgd`), to show what a
weaker evaluation would report (docs/findings.md §2).

Usage::

    import jax, jax.numpy as jnp
    from jax.tree_util import Partial
    from crobust.attacks import apgd_art
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, W)
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1))
    x_adv = apgd_art(logits_fn, x, None, jax.random.key(2), eps=8/255)     # ART's defaults: labels = predictions

The algorithm, as ART's ``generate`` runs it (written from its source; N_iter = ``n_iter``, η⁰ = ``eps_step``):

- labels: with ``labels='predicted'`` (ART's default when no ``y`` is given) y = argmax f(x);
- restarts r = 1 … R (``n_restarts``, ART's ``nb_random_init``, default 5), each on the points still classified
  as y at the current x_adv (x_adv starts at x): start s = x + Π_ε(clip(x_adv + u) − x) with u uniform in the
  ε-ball (ℓ∞: U(−ε, ε)^d; ℓ2: uniform in the ball) — for a point no earlier restart broke, x_adv is the previous
  restart's *start point*, so random draws accumulate;
- ART's projection Π_ε: ℓ∞ clips δ to [−ε, ε]; ℓ2 rescales δ by min(1, ε/‖δ‖₂) (no tolerance);
- iteration k = 0: z = clip(x₀ + η·d(∇L(x₀))), x₁ = x + Π_ε(z − x), f_max = L(x₀), x_max = x₀; where
  L(x₁) ≥ L(x₀): f_max = L(x₁), x_max = x₁ and the counter c += 1;
- iteration k ≥ 1: z = x + Π_ε(clip(x_k + η·d(∇L(x_k))) − x), x_{k+1} = x + Π_ε(clip(x_k + 0.75(z − x_k) +
  0.25(x_k − x_{k−1})) − x); where L(x_{k+1}) > f_max (strict): c += 1, f_max, x_max = x_{k+1} and
  x_max_prev = x_k. If every loss of the batch is exactly 0 the loop stops;
- checkpoints: w = [0, 0.22, …] with w_{j+1} = w_j + max(w_j − w_{j−1} − 0.03, 0.06) while ≤ 1, as iterations
  ⌈w_j·N_iter⌉; at a checkpoint k (k ≥ 1) the step is halved and (x_k, x_{k−1}) ← (x_max, x_max_prev) where
  c < ρ·(k − previous checkpoint) (ρ = 0.75: c counts improvements over the running best, not loss increases
  between consecutive iterates as AutoAttack) or (η unchanged since the last checkpoint and f_max unchanged);
  then c = 0;
- d = sign(g) (ℓ∞) or g/(‖g‖₂ + 1e-7) (ℓ2); the loss is CE or ART's DLR −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3)
  (no 1e-12);
- result of a restart: its **last iterate** x_{N_iter} replaces x_adv where it is misclassified; otherwise x_adv
  becomes the restart's start point (the best-loss point is only used to restart at checkpoints).

Deliberate differences (documented, none changes the algorithm): ART differentiates the batch-*mean* loss and
runs batches of 32 points; here the per-example gradient of the summed loss is used (identical for ℓ∞ signs;
for ℓ2 only the 1e-7 tolerance scales differently) and the stop-when-all-losses-are-zero rule applies to all
points of a restart at once. Random draws use JAX's PRNG (the law is ART's).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import check_choice
from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks._common import predicts, public_attack, value_and_input_grad
from crobust.attacks._validate import check_call, check_eps, check_positive_int, prepare

_ART_TOL = 1e-7   # ART's `tol = 10e-8` in the ℓ2 normalisation


def art_checkpoints(n_iter: int) -> list[int]:
    """ART's checkpoint list ⌈w_j·N_iter⌉ (w₀ = 0 included), computed with the same float operations as ART."""
    w = [0, 0.22]
    while True:
        nxt = w[-1] + max(w[-1] - w[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        w.append(nxt)
    return [math.ceil(p * n_iter) for p in w]


def _art_dlr(logits, y):
    """ART's DLR: −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3), no tolerance; shape (N,)."""
    top = jax.lax.top_k(logits, 3)[0]
    return -(-_losses.margin(logits, y)) / (top[:, 0] - top[:, 2])


_ART_LOSSES = {"ce": _losses.cross_entropy, "dlr": _art_dlr}


def _expand(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _art_project(delta, eps, norm):
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    norms = P.lp_norm(delta, "l2")
    factor = jnp.where(norms > 0, jnp.minimum(1.0, eps / jnp.where(norms > 0, norms, 1.0)), 0.0)
    return delta * _expand(factor, delta)


def _art_direction(grad, norm):
    if norm == "linf":
        return jnp.sign(grad)
    return grad / _expand(P.lp_norm(grad, "l2") + _ART_TOL, grad)


def _uniform_ball(key, x, eps, norm):
    """ART's ``random_sphere`` law: uniform in [−ε, ε]^d (ℓ∞) or uniform in the ℓ2 ball of radius ε."""
    if norm == "linf":
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    k_dir, k_rad = jax.random.split(key)
    g = jax.random.normal(k_dir, x.shape, x.dtype)
    d = int(np.prod(x.shape[1:]))
    radius = eps * jax.random.uniform(k_rad, (x.shape[0],), x.dtype) ** (1.0 / d)
    return g * _expand(radius / P.lp_norm(g, "l2"), g)


def art_single_run(logits_fn, loss_fn, x, y, start, eps, eps_step, norm, n_iter, rho, clip):
    """One pass of ART's iteration loop from ``start`` (N, ...); returns the last iterate x_{N_iter}."""
    evaluate = value_and_input_grad(logits_fn, loss_fn)
    box = (lambda v: jnp.clip(v, 0.0, 1.0)) if clip else (lambda v: v)
    project = lambda v: x + _art_project(v - x, eps, norm)
    n = x.shape[0]
    marks = art_checkpoints(n_iter)
    is_check = np.zeros(max(n_iter, 1), bool)
    window = np.zeros(max(n_iter, 1), np.float32)
    for j in range(1, len(marks)):
        k = marks[j]
        if 1 <= k < n_iter:
            first = marks.index(k)            # ART's var_w.index(k): the first occurrence
            is_check[k] = True
            window[k] = k - marks[first - 1]
    is_check, window = jnp.asarray(is_check), jnp.asarray(window)

    eta = jnp.full((n,), 1.0, x.dtype) * eps_step
    forward_loss = lambda v: loss_fn(logits_fn(v))
    f0, _, g0 = evaluate(start)
    x1 = project(box(start + _expand(eta, x) * _art_direction(g0, norm)))
    f1 = forward_loss(x1)
    up = f1 >= f0
    state = dict(x_k=x1, x_km1=start, eta=eta, count=up.astype(jnp.int32),
                 f_max=jnp.where(up, f1, f0), x_max=jnp.where(_expand(up, x), x1, start),
                 x_max_m1=x, eta_last=eta, f_max_last=f0, stopped=jnp.asarray(False))

    def body(k, s):
        _, _, g = evaluate(s["x_k"])                              # ART's loss_gradient at x_k
        z = project(box(s["x_k"] + _expand(s["eta"], x) * _art_direction(g, norm)))
        x_new = project(box(s["x_k"] + 0.75 * (z - s["x_k"]) + 0.25 * (s["x_k"] - s["x_km1"])))
        f = forward_loss(x_new)                                   # ART's compute_loss at x_{k+1}
        all_zero = jnp.all(f == 0.0)
        better = f > s["f_max"]
        b = _expand(better, x)
        t = dict(s, count=s["count"] + better.astype(jnp.int32), x_max=jnp.where(b, x_new, s["x_max"]),
                 x_max_m1=jnp.where(b, s["x_k"], s["x_max_m1"]), f_max=jnp.where(better, f, s["f_max"]),
                 x_km1=s["x_k"], x_k=x_new)
        # checkpoint, masked by a static table of the checkpoint iterations
        check = is_check[k]
        cond = check & ((t["count"].astype(x.dtype) < rho * window[k])
                        | ((t["eta_last"] == t["eta"]) & (t["f_max_last"] == t["f_max"])))
        c = _expand(cond, x)
        eta_new = jnp.where(cond, t["eta"] / 2.0, t["eta"])
        t = dict(t, eta=eta_new, x_k=jnp.where(c, t["x_max"], t["x_k"]),
                 x_km1=jnp.where(c, t["x_max_m1"], t["x_km1"]), count=jnp.where(check, 0, t["count"]),
                 eta_last=jnp.where(check, eta_new, t["eta_last"]),
                 f_max_last=jnp.where(check, t["f_max"], t["f_max_last"]))
        # every loss exactly 0: ART keeps x_{k+1} and leaves the loop
        frozen = dict(s, x_k=jnp.where(s["stopped"], s["x_k"], x_new), stopped=jnp.asarray(True))
        return jax.tree.map(lambda a_, b_: jnp.where(s["stopped"] | all_zero, a_, b_), frozen, t)

    s = jax.lax.fori_loop(1, n_iter, body, state) if n_iter > 1 else state
    return s["x_k"]


def _apgd_art(logits_fn, x, y, key, *, eps, norm: str = "linf", eps_step=0.1, n_iter: int = 100,
              n_restarts: int = 5, loss: str = "ce", rho: float = 0.75, labels: str = "predicted",
              clip: bool = True, perturbations=None):
    """ART's AutoProjectedGradientDescent (untargeted); see the module docstring for the algorithm.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C). Call form: ``apgd_art(jax.tree_util.Partial(apply_fn,
        params), x, y, key, eps=...)`` reuses the compiled program across calls with new weights, and so does a
        plain closure over arrays (package docstring, "Captures"); any other callable is compiled for that call
        only.
      x: clean images (N, ...) in [0, 1];  y: labels (N,) or ``None`` (with ``labels='predicted'``, ART's default).
      key: PRNG key; restart r draws its start from ``split(key, n_restarts)[r]``.
      eps: radius ε (pixel units, may be traced).
      norm: ``'linf'`` or ``'l2'``.
      eps_step: ART's initial step η⁰ (default 0.1, ART's default; may be traced).
      n_iter: ART's ``max_iter`` (100).
      n_restarts: ART's ``nb_random_init`` (5).
      loss: ``'ce'`` (the estimator's cross-entropy, ART's ``loss_type=None`` with a CE model) or ``'dlr'``.
      rho: 0.75 (fixed in ART).
      labels: ``'predicted'`` (ART's default without y) or ``'true'``.
      clip: clip to [0, 1] (ART's ``clip_values=(0, 1)``).
      perturbations: optional (R, N, ...) array replacing the random draws u (tests against ART itself).

    Returns:
      x_adv (N, ...) with ‖x_adv − x‖ ≤ ε: the last iterate of the restart that broke the point, else the last
      restart's start point (as ART returns).
    """
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    check_choice("loss", loss, tuple(_ART_LOSSES))
    loss_base = _ART_LOSSES[loss]
    eps_step = check_eps(eps_step, "eps_step")
    n_iter = check_positive_int(n_iter, "n_iter")
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    loss_fn = lambda z: loss_base(z, y)
    keys = jax.random.split(key, n_restarts)
    if perturbations is None:
        draws = jax.vmap(lambda k: _uniform_ball(k, x, eps, norm))(keys)
    else:
        draws = jnp.asarray(perturbations, x.dtype).reshape((n_restarts,) + x.shape)
    box = (lambda v: jnp.clip(v, 0.0, 1.0)) if clip else (lambda v: v)

    def one_restart(x_adv, u):
        robust = predicts(logits_fn(x_adv), y)
        start = x + _art_project(box(x_adv + u) - x, eps, norm)
        last = art_single_run(logits_fn, loss_fn, x, y, start, eps, eps_step, norm, n_iter, rho, clip)
        broken = ~predicts(logits_fn(last), y)
        new = jnp.where(_expand(broken, x), last, start)
        return jnp.where(_expand(robust, x), new, x_adv), None

    x_adv, _ = jax.lax.scan(one_restart, x, draws)
    return x_adv


apgd_art = public_attack(_apgd_art, check_call)
