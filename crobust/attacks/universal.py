"""Universal adversarial perturbation (UAP): one input-agnostic δ for a whole data set.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import universal_perturbation, universal_accuracy
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x_train = jax.random.uniform(jax.random.key(1), (256, 8, 8, 1)); y_train = jnp.arange(256) % 10
    delta = universal_perturbation(logits_fn, x_train, y_train, jax.random.key(2), eps=8/255, norm="linf")
    acc = universal_accuracy(logits_fn, x_train, y_train, delta)     # accuracy of f(clip(x + δ))

Algorithm (the paper gives none; this is the batch-mean-gradient, FGSM-style iteration the third-party
reproduction used, docs/paper.md §3.6, chosen for that reason): δ⁰ = 0 (shape of one image); for each of
``n_passes`` passes over a fresh random permutation of the training set, in mini-batches B of ``batch_size``,

    g = (1/|B|) Σ_{n∈B} ∇_δ loss(f(clip(x_n + δ, 0, 1)), y_n)
    δ ← Π_ε(δ + η·d(g)),   d = sign (ℓ∞) or g/‖g‖₂ (ℓ2),   Π_ε the projection onto the ε-ball around 0.

The box [0, 1] is applied per input when δ is added (clip(x + δ)), so ‖clip(x + δ) − x‖ ≤ ‖δ‖ ≤ ε for every
x. The default step is η = ε/10 (so δ can cross the ball within one pass). The last batch of a pass, when the
data set does not divide into batches, is padded and its padding masked out of the mean. The loop is one
``lax.scan`` over (pass, batch); ε and η may be traced.

Returned δ: the best pass, not the last — after every pass the universal accuracy of the current δ on the
training set (:func:`universal_accuracy`) is measured and the δ with the lowest one is kept (ties: the earlier
pass). ``n_passes=0`` returns δ = 0.

Universal accuracy counts a point as correct when it is classified correctly both at x and at clip(x + δ) (as
robust accuracy does): a point misclassified clean is never counted as resisting δ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks._common import predicts, public_attack
from crobust.attacks._validate import check_call, check_eps, check_images, check_positive_int, prepare


def _universal_perturbation(logits_fn, x, y, key, *, eps, norm: str = "linf", n_passes: int = 3,
                           batch_size: int = 128, step_size=None, loss: str = "ce", labels: str = "true",
                           return_passes: bool = False):
    """Learn one δ (shape x.shape[1:]) that lowers accuracy on every input; see the module docstring.

    Args:
      logits_fn: images (n, ...) in [0, 1] → logits (n, C), for any batch size n. Pass
        ``jax.tree_util.Partial(apply_fn, params)`` to reuse the compiled program across calls with new weights
        (a plain closure over arrays does too: package docstring, "Captures"); any other callable is compiled for
        that call only.
      x: training images (N, ...) in [0, 1];  y: labels (N,) (or ``None`` with ``labels='predicted'``).
      key: PRNG key for the data order of each pass.
      eps: radius ε ≥ 0 (scalar, may be traced).
      norm: ``'linf'`` or ``'l2'``.
      n_passes: passes over the training set (3).
      batch_size: mini-batch size (128; capped at N).
      step_size: η; ``None`` → ε/10.
      loss: ``'ce'``, ``'margin'`` or ``'dlr'``.
      return_passes: also return every pass's δ (P, ...) and its universal accuracy (P,).

    Returns:
      δ with the shape of one image, ‖δ‖ ≤ ε: the pass with the lowest universal accuracy on (x, y) (the first
      such pass on ties; δ = 0 when ``n_passes=0``); with ``return_passes``, ``(δ, deltas, accuracies)``.
    """
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    loss_fn = _losses.get(loss)
    n_passes = check_positive_int(n_passes, "n_passes", minimum=0)
    batch_size = min(check_positive_int(batch_size, "batch_size"), x.shape[0])
    step = eps / 10.0 if step_size is None else check_eps(step_size, "step_size")
    n = x.shape[0]
    n_batches = -(-n // batch_size)
    padded = n_batches * batch_size

    def mean_loss(delta, xb, yb, weight):
        per_example = loss_fn(logits_fn(jnp.clip(xb + delta, 0.0, 1.0)), yb)
        return jnp.sum(per_example * weight) / jnp.sum(weight)

    grad_fn = jax.grad(mean_loss)

    clean_correct = predicts(logits_fn(x), y)

    def accuracy(delta):
        return jnp.mean((clean_correct & predicts(logits_fn(jnp.clip(x + delta, 0.0, 1.0)), y)).astype(jnp.float32))

    def one_pass(delta, pass_key):
        order = jax.random.permutation(pass_key, n)
        order = jnp.concatenate([order, jnp.zeros((padded - n,), order.dtype)]).reshape(n_batches, batch_size)
        weight = (jnp.arange(padded) < n).astype(x.dtype).reshape(n_batches, batch_size)

        def one_batch(delta, batch):
            idx, wb = batch
            g = grad_fn(delta, x[idx], y[idx], wb)
            g = jnp.where(jnp.isnan(g), 0.0, g)
            direction = P.steepest_direction(g[None], norm)[0]
            return P.project_delta(delta + step * direction, eps, norm), None

        delta, _ = jax.lax.scan(one_batch, delta, (order, weight))
        return delta, (delta, accuracy(delta))

    zero = jnp.zeros(x.shape[1:], x.dtype)
    _, (deltas, accs) = jax.lax.scan(one_pass, zero, jax.random.split(key, n_passes))
    best = deltas[jnp.argmin(accs)] if n_passes else zero
    return (best, deltas, accs) if return_passes else best


def universal_accuracy(logits_fn, x, y, delta):
    """Fraction of points classified correctly at x **and** at clip(x + δ, 0, 1) (in [0, 1]); δ has the shape of
    one image. Points misclassified clean count as errors, as in robust accuracy."""
    x = check_images(x)
    y = jnp.asarray(y)
    correct = predicts(logits_fn(x), y) & predicts(logits_fn(jnp.clip(x + delta, 0.0, 1.0)), y)
    return jnp.mean(correct.astype(jnp.float32))


universal_perturbation = public_attack(_universal_perturbation, check_call)
