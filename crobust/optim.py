"""The trainer's optimisers, torch's update rules written as one fused, maskable elementwise pass per parameter.

Why not optax: a population step must be able to *not* take a step (a member that has reached ``max_steps`` in
the middle of a block, or whose loss is no longer finite). With optax that is a ``jnp.where`` over the new and
old parameters and optimiser state after the update; on the CPU that was a separate pass over every member's
parameters and moments (≈10 % of a 784→400→10 step, ``benchmarks/bench_training.py``). Here the condition is a
scalar ``active`` inside the same elementwise expression as the update, so XLA fuses it into the one loop that
reads p, g, m, v and writes p, m, v. When ``active`` is false every output is exactly its input (a select, so a
non-finite gradient of a skipped step cannot leak into the state).

Rules (per parameter tensor; lr, wd per member, traced; t = number of steps taken after this one):

* ``adamw`` — ``torch.optim.AdamW`` (β₁ 0.9, β₂ 0.999, ε 1e-8, decoupled decay)::

      m ← β₁ m + (1 − β₁) g ;  v ← β₂ v + (1 − β₂) g²
      p ← p·(1 − lr·wd) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)

* ``sgd`` — ``torch.optim.SGD`` with momentum μ and coupled L2 decay (dampening 0, no Nesterov)::

      d ← g + wd·p ;  b ← μ b + d  (b = d at the first step: b starts at 0) ;  p ← p − lr·b

Shapes: every function works on one member (vmap / lax.map over members outside); ``state.lr``,
``state.weight_decay`` and ``state.count`` are scalars, ``state.mu``/``state.nu``/``state.trace`` have the
parameters' tree structure.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from crobust._errors import check_choice

OPTIMIZERS = ("adamw", "sgd")
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


@flax.struct.dataclass
class OptState:
    """One member's optimiser state. ``mu``/``nu`` are Adam's moments (``None`` for sgd), ``trace`` the momentum
    buffer (``None`` for adamw); ``count`` (int32) the number of steps taken."""

    lr: jax.Array
    weight_decay: jax.Array
    count: jax.Array
    mu: Any = None
    nu: Any = None
    trace: Any = None


def init(name: str, params, lr, weight_decay) -> OptState:
    """Zero moments (or momentum buffer) shaped like ``params``; ``lr``/``weight_decay`` stored per member."""
    check_choice("optimizer", name, OPTIMIZERS)
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    lr, wd = jnp.asarray(lr, jnp.float32), jnp.asarray(weight_decay, jnp.float32)
    count = jnp.zeros((), jnp.int32)
    if name == "adamw":
        return OptState(lr=lr, weight_decay=wd, count=count, mu=zeros(), nu=zeros())
    return OptState(lr=lr, weight_decay=wd, count=count, trace=zeros())


def with_hparams(state: OptState, lr, weight_decay) -> OptState:
    """The same state with another learning rate and weight decay (used to reset members' hyper-parameters)."""
    return state.replace(lr=jnp.asarray(lr, state.lr.dtype), weight_decay=jnp.asarray(weight_decay,
                                                                                       state.weight_decay.dtype))


def _unzip(params, out, n: int):
    """A tree of n-tuples (shaped like ``params`` above the tuples) → n trees shaped like ``params``."""
    treedef = jax.tree.structure(params)
    leaves = treedef.flatten_up_to(out)
    return tuple(jax.tree.unflatten(treedef, [leaf[i] for leaf in leaves]) for i in range(n))


def step(name: str, params, grads, state: OptState, active, *, momentum=0.9, lr_scale=None):
    """One optimiser step if ``active`` (a scalar bool), else ``(params, state)`` unchanged, bit for bit.

    ``momentum`` (sgd's μ) may be traced; ``lr_scale`` (a schedule's factor, may be traced) multiplies the stored
    learning rate for this step, in the update and in AdamW's decoupled decay alike (torch's schedulers change
    the group's lr, which both use). Returns ``(new_params, new_state)``.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    active = jnp.asarray(active, bool)
    lr, wd = state.lr, state.weight_decay
    if lr_scale is not None:
        lr = lr * lr_scale
    keep = lambda new, old: jnp.where(active, new, old)
    count = state.count + active.astype(jnp.int32)
    if name == "adamw":
        t = jnp.maximum(count, 1).astype(jnp.float32)
        bc1, bc2 = 1.0 - ADAM_B1 ** t, 1.0 - ADAM_B2 ** t

        def leaf(p, g, m, v):
            m_new = ADAM_B1 * m + (1.0 - ADAM_B1) * g
            v_new = ADAM_B2 * v + (1.0 - ADAM_B2) * (g * g)
            p_new = p * (1.0 - lr * wd) - lr * (m_new / bc1) / (jnp.sqrt(v_new / bc2) + ADAM_EPS)
            return keep(p_new, p), keep(m_new, m), keep(v_new, v)

        p, m, v = _unzip(params, jax.tree.map(leaf, params, grads, state.mu, state.nu), 3)
        return p, state.replace(count=count, mu=m, nu=v)

    def leaf(p, g, b):                                        # sgd
        b_new = momentum * b + (g + wd * p)
        return keep(p - lr * b_new, p), keep(b_new, b)

    p, b = _unzip(params, jax.tree.map(leaf, params, grads, state.trace), 2)
    return p, state.replace(count=count, trace=b)
