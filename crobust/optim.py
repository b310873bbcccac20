"""The trainer's optimisers: optax's AdamW and SGD with per-member hyper-parameters, and a step that may be skipped.

Each rule is an optax transformation wrapped in :func:`optax.inject_hyperparams`, so the learning rate, weight
decay, SGD momentum and the schedule's factor are arrays in the optimiser state — traced, one value per member when
the state is vmapped over a population. The rules are torch's (the reference code's):

* ``adamw`` — ``torch.optim.AdamW`` (β₁ 0.9, β₂ 0.999, ε 1e-8, decoupled decay), as ``optax.adamw``::

      m ← β₁ m + (1 − β₁) g ;  v ← β₂ v + (1 − β₂) g²
      p ← p − η · ( (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε) + wd · p ),   η = lr · f

* ``sgd`` — ``torch.optim.SGD`` with momentum μ and coupled L2 decay (dampening 0, no Nesterov), as
  ``optax.chain(add_decayed_weights(wd), trace(μ), scale_by_learning_rate(η))``::

      d ← g + wd·p ;  b ← μ b + d  (b = d at the first step: b starts at 0) ;  p ← p − η·b

t is the number of steps taken, f the schedule's factor of this step (1 without a schedule): torch's schedulers
change the group's lr, which the update and AdamW's decoupled decay both use, so f scales both.

**Skipped steps.** A population step must be able to *not* take a step (a member that has reached ``max_steps`` in
the middle of a block, or whose loss is no longer finite): :func:`step` computes optax's update and then selects,
per member, the new or the old parameters and state (``jnp.where`` on a scalar ``active``), so a skipped step
returns its inputs bit for bit and a non-finite gradient of a skipped step cannot leak into the state. (A fused
elementwise rule with the select inside was kept before; ``benchmarks/bench_training.py --issue13`` compares the
two and found it no faster, so optax it is.)

Shapes: every function works on one member (vmap / lax.map over members outside); the hyper-parameters are
scalars. The moments are in optax's state: ``optax.tree_utils.tree_get(state, "mu")`` (AdamW's first moment),
``"nu"``, ``"trace"`` (SGD's momentum buffer).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from crobust._errors import check_choice

OPTIMIZERS = ("adamw", "sgd")
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
DEFAULT_MOMENTUM = 0.9

OptState = optax.InjectHyperparamsState


def _adamw(learning_rate, weight_decay, lr_scale):
    return optax.adamw(learning_rate * lr_scale, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=weight_decay)


def _sgd(learning_rate, weight_decay, momentum, lr_scale):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum, nesterov=False),
                       optax.scale_by_learning_rate(learning_rate * lr_scale))


@functools.cache
def transformation(name: str) -> optax.GradientTransformation:
    """The optax transformation of ``name`` with its hyper-parameters injected (placeholders; :func:`init` sets
    them per member)."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "adamw":
        return optax.inject_hyperparams(_adamw)(learning_rate=1e-3, weight_decay=0.0, lr_scale=1.0)
    return optax.inject_hyperparams(_sgd)(learning_rate=1e-3, weight_decay=0.0, momentum=DEFAULT_MOMENTUM,
                                          lr_scale=1.0)


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def init(name: str, params, lr, weight_decay, momentum=DEFAULT_MOMENTUM) -> OptState:
    """Zero moments (or momentum buffer) shaped like ``params``; ``lr``/``weight_decay`` (and sgd's ``momentum``)
    stored per member as float32."""
    state = transformation(name).init(params)
    hp = {**state.hyperparams, "learning_rate": _f32(lr), "weight_decay": _f32(weight_decay), "lr_scale": _f32(1.0)}
    if name == "sgd":
        hp["momentum"] = _f32(momentum)
    return state._replace(hyperparams=hp)


def learning_rate(state: OptState) -> jax.Array:
    """The stored (base) learning rate, per member when the state is stacked."""
    return state.hyperparams["learning_rate"]


def weight_decay(state: OptState) -> jax.Array:
    """The stored weight decay, per member when the state is stacked."""
    return state.hyperparams["weight_decay"]


def with_hparams(state: OptState, lr, weight_decay) -> OptState:
    """The same state with another learning rate and weight decay (used to reset members' hyper-parameters)."""
    hp = dict(state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, hp["learning_rate"].dtype)
    hp["weight_decay"] = jnp.asarray(weight_decay, hp["weight_decay"].dtype)
    return state._replace(hyperparams=hp)


def step(name: str, params, grads, state: OptState, active, *, momentum=None, lr_scale=None):
    """One optimiser step if ``active`` (a scalar bool), else ``(params, state)`` unchanged, bit for bit.

    ``momentum`` (sgd's μ; ignored by adamw) and ``lr_scale`` (a schedule's factor f) may be traced; given, they
    replace the values in the state for this step (and are kept in it). Returns ``(new_params, new_state)``.
    """
    tx = transformation(name)
    active = jnp.asarray(active, bool)
    hp = dict(state.hyperparams)
    if lr_scale is not None:
        hp["lr_scale"] = _f32(lr_scale)
    if momentum is not None and name == "sgd":
        hp["momentum"] = _f32(momentum)
    updates, new_state = tx.update(grads, state._replace(hyperparams=hp), params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    return keep(new_params, params), keep(new_state, state)
