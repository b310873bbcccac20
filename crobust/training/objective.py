"""The loss of one training step, by adversarial-training variant: the batch the step trains on and its data loss.

A step's loss is ``data_loss + penalty(params, α)`` (:func:`crobust.training.block.make_block_fn` adds the
penalty). The data loss depends on ``TrainConfig.adversarial`` only through the two pieces here:

- :func:`make_inputs` — the inputs the step trains on, made with the member's current variables in eval mode (no
  gradient flows into them): clean (``adversarial=None``) → ``(x, None)``; PGD mix (``method='pgd'``) → the batch
  with its first ⌊ratio·B⌋ permuted points replaced by PGD examples (:func:`~crobust.training.adversarial.
  mix_adversarial`), or by a given adversary's, ``(x_mixed, None)``; TRADES → ``(x, x')`` with x' the KL
  maximiser (:func:`~crobust.training.adversarial.trades_examples`).
- :func:`make_data_loss` — clean and PGD mix: CE(f(x), y), the mean softmax cross-entropy; TRADES:
  CE(f(x), y) + β·KL(f(x) ‖ f(x')) (:func:`~crobust.training.adversarial.kl_divergence`), f in train mode.

Train mode (:func:`train_apply`): batch norm normalises with the batch's statistics and updates its running
statistics, except the statistics a frozen part owns (:mod:`crobust.training.update`): when every statistic is
frozen the model runs in eval mode (running statistics, nothing updated); otherwise the frozen ones are put back
after the forward pass.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from crobust._errors import CrobustError
from crobust.training import adversarial
from crobust.training.config import TrainConfig


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy, −(1/N) Σ_n log softmax(logits_n)[y_n]."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def check_adversary(config: TrainConfig, adversary: Callable | None) -> None:
    """A given adversary replaces PGD in the mix; TRADES has no mix, so the two together are an error."""
    if adversary is not None and config.adversarial is not None and config.adversarial.method == "trades":
        raise CrobustError("a custom adversary replaces PGD examples; it cannot be combined with method='trades'")


def make_inputs(config: TrainConfig, eval_fn: Callable, adversary: Callable | None = None):
    """``inputs(variables, x, y, key, hp) -> (x_train, x_pair)``: the batch a step trains on (module docstring).

    ``eval_fn(variables, x)`` is the member's model in eval mode and ``variables`` its current variables (the
    caller stops their gradient); ``key`` the step's attack key; ``hp`` the member's hyper-parameters (``at_eps``,
    ``at_step_size``, ``at_ratio``). ``adversary(apply_fn, variables, x, y, key) -> x_adv`` replaces PGD in the mix.
    """
    check_adversary(config, adversary)
    at = config.adversarial
    trades = at is not None and at.method == "trades"
    if at is None:
        return lambda variables, x, y, key, hp: (x, None)

    def inputs(variables, x, y, key, hp):
        logits_fn = lambda z: eval_fn(variables, z)
        if trades:
            return x, adversarial.trades_examples(logits_fn, x, key, at, hp["at_eps"], hp["at_step_size"])
        attack = ((lambda xs, ys, k: adversary(eval_fn, variables, xs, ys, k)) if adversary
                  else (lambda xs, ys, k: adversarial.pgd_examples(logits_fn, xs, ys, k, at, hp["at_eps"],
                                                                   hp["at_step_size"])))
        return adversarial.mix_adversarial(attack, x, y, key, at, hp["at_ratio"]), None

    return inputs


def make_data_loss(config: TrainConfig, train_logits: Callable):
    """``data_loss(params, model_state, x, x_pair, y, hp) -> (loss, new_model_state)`` (module docstring).

    ``train_logits(params, model_state, x) -> (logits, new_model_state)`` is :func:`train_apply`'s; TRADES passes
    the state updated by the clean batch on to the adversarial one, as two train-mode forward passes do.
    """
    trades = config.adversarial is not None and config.adversarial.method == "trades"

    def data_loss(p, ms, x, x_pair, y, hp):
        logits, new_ms = train_logits(p, ms, x)
        loss = cross_entropy(logits, y)
        if trades:
            logits_adv, new_ms = train_logits(p, new_ms, x_pair)
            loss = loss + hp["trades_beta"] * adversarial.kl_divergence(logits, logits_adv)
        return loss, new_ms

    return data_loss


def train_apply(apply_fn: Callable, stateful: bool, stats_trainable=None):
    """``train_logits(params, model_state, x) -> (logits, new_model_state)`` in train mode.

    Without model state: ``(apply_fn(params, x), None)``. With it: ``apply_fn({**params, **ms}, x, train=True,
    mutable=[collections])``. ``stats_trainable`` (a tree of Python bools shaped like the model state, or None:
    every statistic trains) marks the statistics of frozen layers: all frozen → the model runs in eval mode and
    the state is returned as it came; some frozen → those leaves of the new state are the old ones.
    """
    if not stateful:
        return lambda p, ms, x: (apply_fn(p, x), None)
    labels = None if stats_trainable is None else jax.tree.leaves(stats_trainable)
    if labels is not None and not any(labels):
        return lambda p, ms, x: (apply_fn({**p, **ms}, x, train=False), ms)

    def train_logits(p, ms, x):
        logits, new_ms = apply_fn({**p, **ms}, x, train=True, mutable=list(ms))
        if labels is not None and not all(labels):
            new_ms = jax.tree.map(lambda keep, new, old: new if keep else old, stats_trainable, dict(new_ms), ms)
        return logits, new_ms

    return train_logits
