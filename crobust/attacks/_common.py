"""Pieces shared by the gradient attacks (private)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def value_and_input_grad(logits_fn, loss_fn):
    """x → (loss (N,), logits (N, C), ∂(Σ_n loss_n)/∂x (N, ...)), NaN gradient entries set to 0 (as ART does).

    The per-example loss is summed before differentiation (as AutoAttack and ART do); since the models act per
    example, row n of the gradient is ∂ loss_n / ∂ x_n.
    """

    def total(x_adv):
        logits = logits_fn(x_adv)
        per_example = loss_fn(logits)
        return jnp.sum(per_example), (per_example, logits)

    grad_fn = jax.value_and_grad(total, has_aux=True)

    def evaluate(x_adv):
        (_, (per_example, logits)), grad = grad_fn(x_adv)
        grad = jnp.where(jnp.isnan(grad), 0.0, grad)
        return per_example, logits, grad

    return evaluate


def predicts(logits, y):
    """argmax_j z_j == y, shape (N,) bool."""
    return jnp.argmax(logits, axis=-1) == y


def select_runs(values, index):
    """Pick run index[n] for every example n from values of shape (R, N, ...)."""
    idx = jnp.reshape(index, (1,) + index.shape + (1,) * (values.ndim - 2))
    return jnp.take_along_axis(values, idx, axis=0)[0]
