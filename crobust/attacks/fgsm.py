"""Single-step attacks: FGSM (ℓ∞) and FGM (ℓ∞ or ℓ2).

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import fgsm, fgm
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    x_adv = fgsm(logits_fn, x, y, eps=8/255)                  # x + ε·sign(∇ₓ CE), clipped to [0,1]
    x_adv = fgm(logits_fn, x, y, eps=0.5, norm="l2")          # x + ε·∇ₓ CE/‖∇ₓ CE‖₂, clipped

Maths: x_adv = Π(x + ε·d), d = sign(g) (ℓ∞) or g/‖g‖₂ (ℓ2, 0 where g = 0), g = ∇ₓ loss(f(x), y), Π the
projection of :mod:`crobust.attacks.projections` (a no-op before clipping, since ‖ε·d‖ = ε). For a linear binary
classifier this is the exact worst case in the unboxed ε-ball (and, for ℓ∞, also in the box-constrained one).
"""

from __future__ import annotations

import jax.numpy as jnp

from crobust._errors import CrobustError, check_choice
from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks._common import predicts, public_attack, value_and_input_grad
from crobust.attacks._validate import check_call, prepare


KEEP = ("best", "step")


def _fgm(logits_fn, x, y, key=None, *, eps, norm: str = "linf", loss: str = "ce", labels: str = "true",
         clip: bool = True, keep: str = "best"):
    """Fast gradient method: one step of size ε along the steepest ascent direction of ``loss``.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); ``jax.tree_util.Partial(apply_fn, params)`` reuses the
        compiled program across calls with new weights, and so does a plain closure over arrays (package
        docstring, "Captures"); any other callable is compiled for that call only.
      x: clean images (N, ...), float in [0, 1].
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: unused (FGM is deterministic); accepted so every attack has the signature (logits_fn, x, y, key).
      eps: radius ε ≥ 0 in pixel units (scalar, may be traced).
      norm: ``'linf'`` or ``'l2'``.
      loss: ``'ce'``, ``'margin'`` or ``'dlr'``.
      labels: ``'true'`` (use y) or ``'predicted'`` (argmax f(x), the reference code's choice).
      clip: clip to [0, 1] (``False`` reproduces the reference code's unclipped attacks).
      keep: ``'best'`` (the evaluation default: the worse of the two iterates x and x + step per point — a point
        misclassified at x is returned unchanged, as AutoAttack does) or ``'step'`` (always the stepped point).

    Returns:
      x_adv (N, ...) with ‖x_adv − x‖ ≤ ε.
    """
    del key
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    loss_fn = _losses.get(loss)
    check_choice("keep", keep, KEEP)
    _, logits, grad = value_and_input_grad(logits_fn, lambda z: loss_fn(z, y))(x)
    x_adv = P.project(x + eps * P.steepest_direction(grad, norm), x, eps, norm, clip)
    if keep == "step":
        return x_adv
    correct = predicts(logits, y).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(correct, x_adv, x)


def _fgsm(logits_fn, x, y, key=None, *, eps, norm: str = "linf", loss: str = "ce", labels: str = "true",
          clip: bool = True, keep: str = "best"):
    """FGSM (Goodfellow et al. 2015): :func:`fgm` with ℓ∞, x_adv = clip(x + ε·sign(∇ₓ loss)).

    ``norm`` must be ``'linf'`` (the sign step is an ℓ∞ attack); ``norm='l2'`` is refused — use :func:`fgm` for
    the normalised-gradient ℓ2 step. Call form and other arguments as :func:`fgm`.
    """
    if isinstance(norm, str) and norm.lower() != "linf":
        raise CrobustError(f"fgsm is the l-inf sign step; norm={norm!r} is refused: use fgm(..., norm='l2') for the "
                           "l2 fast gradient method")
    return _fgm(logits_fn, x, y, key, eps=eps, norm="linf", loss=loss, labels=labels, clip=clip, keep=keep)


fgm = public_attack(_fgm, check_call)
fgsm = public_attack(_fgsm, check_call)
