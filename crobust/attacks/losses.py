"""Per-example attack losses, all written as quantities the attacker **maximises**.

Usage::

    import jax.numpy as jnp
    from crobust.attacks import losses
    logits = jnp.array([[2.0, 1.0, 0.5, -1.0]])
    y = jnp.array([0])
    losses.cross_entropy(logits, y)            # (1,)  log Σ_j e^{z_j} − z_y
    losses.margin(logits, y)                   # (1,)  max_{j≠y} z_j − z_y  (> 0 ⇔ misclassified)
    losses.dlr(logits, y)                      # (1,)  AutoAttack's DLR
    losses.targeted_dlr(logits, y, jnp.array([2]))

Every loss maps logits z of shape (N, C) and integer labels y of shape (N,) to a loss of shape (N,); attacks sum it
over the batch before differentiating, so example n's gradient is ∂ loss_n / ∂ x_n (the models act per example).
With z_π1 ≥ z_π2 ≥ … the logits sorted in decreasing order:

- ``cross_entropy``: log Σ_j exp z_j − z_y.
- ``margin``: max_{j≠y} z_j − z_y (the negative of Carlini–Wagner's margin; positive exactly when misclassified).
- ``dlr``: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12)  (Croce & Hein 2020, eq. 3; needs C ≥ 3). It is
  invariant to shifting and positive scaling of the logits.
- ``targeted_dlr``: −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12) for target t (AutoAttack's APGD-T; C ≥ 4).
- ``targeted_cross_entropy``: −(log Σ_j exp z_j − z_t), i.e. the log-probability of the target.

The constant 1e-12 is AutoAttack's; it keeps DLR finite when the top logits tie.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError, check_choice

_DLR_EPS = 1e-12


def _true_logit(logits, y):
    return jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _max_other(logits, y):
    """max_{j≠y} z_j, shape (N,)."""
    is_y = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    return jnp.max(jnp.where(is_y, -jnp.inf, logits), axis=-1)


def cross_entropy(logits, y):
    """CE_n = log Σ_j exp z_{n,j} − z_{n,y_n}; shape (N,)."""
    return jax.nn.logsumexp(logits, axis=-1) - _true_logit(logits, y)


def margin(logits, y):
    """max_{j≠y} z_j − z_y; shape (N,). Positive exactly when the point is misclassified."""
    return _max_other(logits, y) - _true_logit(logits, y)


def dlr(logits, y):
    """Difference-of-logits ratio −(z_y − max_{j≠y} z_j)/(z_π1 − z_π3 + 1e-12); shape (N,); needs C ≥ 3."""
    _need_classes(logits, 3, "dlr")
    top = jax.lax.top_k(logits, 3)[0]
    return -(_true_logit(logits, y) - _max_other(logits, y)) / (top[:, 0] - top[:, 2] + _DLR_EPS)


def targeted_dlr(logits, y, target):
    """Targeted DLR −(z_y − z_t)/(z_π1 − ½(z_π3 + z_π4) + 1e-12); shape (N,); needs C ≥ 4."""
    _need_classes(logits, 4, "targeted_dlr")
    top = jax.lax.top_k(logits, 4)[0]
    num = _true_logit(logits, y) - _true_logit(logits, target)
    return -num / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS)


def targeted_cross_entropy(logits, y, target):
    """log p_t = −(log Σ_j exp z_j − z_t); shape (N,). ``y`` is unused (kept for a uniform signature)."""
    del y
    return -cross_entropy(logits, target)


def _need_classes(logits, minimum, name):
    if logits.shape[-1] < minimum:
        raise CrobustError(f"loss {name!r} needs at least {minimum} classes, the logits have C={logits.shape[-1]}")


UNTARGETED = {"ce": cross_entropy, "margin": margin, "dlr": dlr}
TARGETED = {"dlr-targeted": targeted_dlr, "ce-targeted": targeted_cross_entropy}


def get(name: str, choices=tuple(UNTARGETED)):
    """The untargeted loss called ``name`` (one of ``choices``); raise :class:`CrobustError` naming ``loss``."""
    check_choice("loss", name, choices)
    return UNTARGETED[name]
