"""Projected gradient descent (Madry et al. 2018), with restarts vmapped and the per-example worst case kept.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import pgd, presets
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    key = jax.random.key(2)
    x_adv = pgd(logits_fn, x, y, key, eps=8/255, **presets.PGD_EVAL)          # 30 steps × 10 restarts
    x_adv = pgd(logits_fn, x, y, key, eps=8/255, **presets.PGD_REFERENCE_AT)  # the authors' AT attack
    # the explicit form of the closure above (which is lifted to it): compiled once, new weights always used
    f = jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, W)
    x_adv = pgd(f, x, y, key, eps=8/255, **presets.PGD_EVAL)

Maths (one restart r, T = ``n_iter`` steps, step η, projection Π of :mod:`crobust.attacks.projections`):

    x⁰ = Π(x + δ₀),  δ₀ ~ U(−ε, ε)^d (ℓ∞) or uniform in the ℓ2 ball (``random_start``), else δ₀ = 0
    xᵗ⁺¹ = Π(xᵗ + η·d(gᵗ)),  gᵗ = ∇ₓ loss(f(xᵗ), y),  d = sign (ℓ∞) or g/‖g‖₂ (ℓ2, 0 where g = 0)

NaN gradient entries are set to 0 (ART). R restarts run at once under ``vmap`` and one result per example is
kept, as ``keep`` says:

- ``keep='best'`` (the default, for evaluation): the per-point worst case over **every iterate of every
  restart**, as APGD's ``x_best_adv``. Every iterate x⁰ … x^T of every restart is classified; if any is
  misclassified, the result is the last misclassified iterate of the first restart (in key order) that has one;
  otherwise the highest-loss iterate over all iterates and restarts. A point misclassified at x itself is returned
  unchanged (as AutoAttack). So a point broken only at an intermediate iterate, or only by a later restart,
  counts as broken when the evaluation re-predicts the returned point.
- ``keep='max_loss'``: the restart whose last iterate x^T has the largest loss, its x^T (the training rule:
  adversarial training uses this, with one restart it is x^T);
- ``keep='first_success'``: the first restart (in key order) whose x^T is misclassified; if none, max loss;
- ``keep='last_success'``: ART's rule — restart 0's x^T, overwritten by every later restart whose x^T
  misclassifies ("last success wins"); if none, restart 0's.

"Misclassified" is argmax f(x^T) ≠ the label the attack uses (y, or the clean prediction with
``labels='predicted'``). The default step is η = 2.5·ε/T (Madry et al.'s rule, so a straight path can cross the
ball); the training preset fixes η = 2/255 as the reference code does. ε and η may be traced, so ``pgd`` runs
inside a jitted, vmapped adversarial-training step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crobust._errors import check_choice
from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks._common import predicts, public_attack, select_runs, value_and_input_grad
from crobust.attacks._validate import check_call, check_eps, check_positive_int, prepare
from crobust.attacks.apgd import chunk_size_for, map_in_chunks

KEEP = ("best", "max_loss", "first_success", "last_success")


def _pgd(logits_fn, x, y, key, *, eps, step_size=None, n_iter: int = 10, norm: str = "linf", loss: str = "ce",
        n_restarts: int = 1, random_start: bool = True, keep: str = "best", labels: str = "true",
        clip: bool = True, chunk_size="auto"):
    """PGD with random start and vmapped restarts; see the module docstring for the maths.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); pass ``jax.tree_util.Partial(apply_fn, params)`` so
        that a second call with the same ``apply_fn`` and shapes reuses the compiled program (params are traced
        data, new weights are always used), and so does a plain closure over arrays (package docstring,
        "Captures"); any other callable is compiled for that call only.
      x: clean images (N, ...) in [0, 1].
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: PRNG key for the random starts: a single restart uses ``key``; with R > 1 restart r uses
        ``split(key, R)[r]`` (so restart r equals a one-restart call with that key).
      eps: radius ε ≥ 0 (pixel units; scalar, may be traced).
      step_size: η (pixel units, may be traced); ``None`` → 2.5·ε/n_iter.
      n_iter: number of gradient steps T (static).
      norm: ``'linf'`` (sign steps) or ``'l2'`` (normalised steps).
      loss: ``'ce'``, ``'margin'`` or ``'dlr'``.
      n_restarts: number of restarts R (static), run in parallel under ``vmap``.
      random_start: start from a uniform random point of the ball (else from x).
      keep: how iterates and restarts are combined per example: ``'best'`` (every iterate and restart, the
        evaluation default), ``'max_loss'`` (training), ``'first_success'``, ``'last_success'``.
      labels: ``'true'`` or ``'predicted'`` (argmax f(x), the reference code's ART default).
      clip: clip every iterate to [0, 1] (``False`` reproduces the reference code's unclipped attack).
      chunk_size: examples × restarts per sequential chunk (``lax.map``) — ``'auto'`` (≤ 300 on CPU, none on
        accelerators), an int, or None; only speed changes (see :func:`crobust.attacks.apgd.chunk_size_for`).

    Returns:
      x_adv (N, ...) with ‖x_adv − x‖ ≤ ε (and in [0, 1] when ``clip``).
    """
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    loss_fn = _losses.get(loss)
    check_choice("keep", keep, KEEP)
    n_iter = check_positive_int(n_iter, "n_iter", minimum=0)
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    step = 2.5 * eps / max(n_iter, 1) if step_size is None else check_eps(step_size, "step_size")
    chunk = chunk_size_for(x.shape[0] * n_restarts, chunk_size)
    chunk = None if chunk is None else max(1, chunk // n_restarts)

    track = keep == "best"

    def restarts_on(xc, yc, starts_c):        # starts_c (n, R, ...) → (n, R, ...) results (+ tracking when best)
        evaluate = value_and_input_grad(logits_fn, lambda z: loss_fn(z, yc))
        if norm == "linf":
            # B_∞(x, ε) ∩ [0, 1]^d is the box [max(x − ε, 0), min(x + ε, 1)]: computed once, one clip per step
            lo, hi = (jnp.maximum(xc - eps, 0.0), jnp.minimum(xc + eps, 1.0)) if clip else (xc - eps, xc + eps)
            project = lambda v: jnp.clip(v, lo, hi)
        else:
            project = lambda v: P.project_l2(v, xc, eps, clip)
        expand = lambda v: v.reshape(v.shape + (1,) * (xc.ndim - 1))

        def record(t, x_now, loss, logits):
            """Fold iterate x_now into (x_best_adv, broken, x_max, loss_max)."""
            wrong = ~predicts(logits, yc)
            higher = loss > t["loss_max"]
            return dict(x_best_adv=jnp.where(expand(wrong), x_now, t["x_best_adv"]), broken=t["broken"] | wrong,
                        x_max=jnp.where(expand(higher), x_now, t["x_max"]),
                        loss_max=jnp.where(higher, loss, t["loss_max"]))

        def one_restart(start):
            x0 = project(start)
            if not track:
                def body(_, x_adv):
                    _, _, grad = evaluate(x_adv)
                    return project(x_adv + step * P.steepest_direction(grad, norm))

                return jax.lax.fori_loop(0, n_iter, body, x0)

            def tracked_body(_, carry):
                x_adv, t = carry
                loss, logits, grad = evaluate(x_adv)
                t = record(t, x_adv, loss, logits)
                return project(x_adv + step * P.steepest_direction(grad, norm)), t

            n = xc.shape[0]
            t0 = dict(x_best_adv=x0, broken=jnp.zeros((n,), bool), x_max=x0,
                      loss_max=jnp.full((n,), -jnp.inf, x0.dtype))
            x_last, t = jax.lax.fori_loop(0, n_iter, tracked_body, (x0, t0))
            logits = logits_fn(x_last)                                 # the last iterate: a forward pass only
            t = record(t, x_last, loss_fn(logits, yc), logits)
            return t["x_best_adv"], t["broken"], t["x_max"], t["loss_max"]

        out = jax.vmap(one_restart, in_axes=1)(starts_c)
        return jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1), out)

    # random starts drawn for the whole batch, so results do not depend on the chunking
    keys = key[None] if n_restarts == 1 else jax.random.split(key, n_restarts)
    starts = (jax.vmap(lambda k: P.random_start(k, x, eps, norm, clip))(keys) if random_start
              else jnp.broadcast_to(x, (n_restarts,) + x.shape))
    results = map_in_chunks(restarts_on, chunk, x, y, jnp.moveaxis(starts, 0, 1))
    results = jax.tree.map(lambda o: jnp.moveaxis(o, 1, 0), results)            # run axis first: (R, N, ...)
    if track:
        x_best_adv, broken, x_max, loss_max = results
        expand = lambda v: v.reshape(v.shape + (1,) * (x.ndim - 1))
        any_broken = jnp.any(broken, axis=0)
        out = jnp.where(expand(any_broken), select_runs(x_best_adv, jnp.argmax(broken, axis=0)),
                        select_runs(x_max, jnp.argmax(loss_max, axis=0)))
        return jnp.where(expand(predicts(logits_fn(x), y)), out, x)
    x_runs = results
    if n_restarts == 1:
        return x_runs[0]

    logits = jax.vmap(logits_fn)(x_runs)                                         # (R, N, C)
    success = ~jax.vmap(predicts, in_axes=(0, None))(logits, y)                  # (R, N)
    run_loss = jax.vmap(loss_fn, in_axes=(0, None))(logits, y)                   # (R, N)
    max_loss = jnp.argmax(run_loss, axis=0)
    if keep == "max_loss":
        index = max_loss
    elif keep == "first_success":
        index = jnp.where(jnp.any(success, axis=0), jnp.argmax(success, axis=0), max_loss)
    else:  # last_success: restart 0 unless a later restart succeeds; the last such restart wins
        last = n_restarts - 1 - jnp.argmax(success[::-1], axis=0)
        index = jnp.where(jnp.any(success, axis=0), last, 0)
    return select_runs(x_runs, index)


pgd = public_attack(_pgd, check_call)
