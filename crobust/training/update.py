"""The update of one training step, by job: gradient mask → freeze → optimiser → projection.

Given a member's parameters p, its gradient g and optimiser state s, a step is

1. **mask** (``PopulationState.param_mask`` = m, pruned fine-tuning; :func:`mask_gradients`): g ← g ⊙ m;
2. **freeze** (``TrainConfig.trainable``; :func:`trainable_labels`): the parameters split into a trainable part
   T and a frozen part F. The optimiser sees T only — the frozen leaves are :class:`optax.MaskedNode` in its
   input and state, as in ``optax.multi_transform({'train': optimiser, 'frozen': optax.set_to_zero()}, labels)``
   — so nothing of F moves: no gradient step, no weight decay (AdamW's decoupled −η·wd·p and SGD's coupled
   wd·p act on T only), no moments kept. F's leaves are taken back from the step's input unchanged, bit for
   bit;
3. **optimiser** (:func:`crobust.optim.step`, optax's AdamW / SGD, skipped bit for bit when the step is not
   taken);
4. **projection** (``TrainConfig.projection='frobenius'``): every hidden layer of T back to its reference
   Frobenius norm (:func:`crobust.regularizers.frobenius_projection`). It acts on the parameters after the
   step, not as an optax update: an update u = proj(p + Δ) − p added back to p rounds differently from proj(p + Δ).

With neither mask nor freeze the operations are those of a plain optimiser step followed by the projection.
Batch-norm statistics of frozen layers are frozen too: a statistic belongs to the layer (module path) that owns
it; it trains iff that layer has a trainable parameter (a layer without parameters: iff its statistics' path
matches the pattern) — :func:`stats_labels`, applied by :func:`crobust.training.objective.train_apply`.

Paths: a leaf's path is its keys inside its collection joined by ``/`` (``'hidden_0/kernel'``,
``'encoder/bn1/mean'``); ``TrainConfig.trainable`` is a regular expression searched (``re.search``) in it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from crobust import optim, regularizers
from crobust._errors import CrobustError
from crobust.training.config import TrainConfig


def _key_name(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def leaf_paths(variables):
    """A tree shaped like ``variables`` (a flax variables dict ``{collection: tree}``) holding each leaf's path
    inside its collection, ``'a/b/kernel'``."""
    return jax.tree_util.tree_map_with_path(lambda path, _: "/".join(_key_name(k) for k in path[1:]), variables)


def trainable_labels(params, pattern: str | None):
    """Python bools shaped like ``params`` (``{'params': ...}``): True where the leaf's path matches ``pattern``
    (every leaf when ``pattern`` is None). A pattern that matches no parameter is an error."""
    if pattern is None:
        return jax.tree.map(lambda _: True, params)
    rx = re.compile(pattern)
    labels = jax.tree.map(lambda path: rx.search(path) is not None, leaf_paths(params))
    if not any(jax.tree.leaves(labels)):
        raise CrobustError(f"train.trainable {pattern!r} matches no parameter; paths look like "
                           f"{', '.join(jax.tree.leaves(leaf_paths(params))[:3])}")
    return labels


def stats_labels(model_state, params, pattern: str | None):
    """Python bools shaped like ``model_state``: whether each statistic trains (module docstring); None when
    ``pattern`` is None or there is no model state."""
    if pattern is None or model_state is None:
        return None
    rx = re.compile(pattern)
    owner = lambda path: path.rsplit("/", 1)[0] if "/" in path else ""
    param_paths = jax.tree.leaves(leaf_paths(params))
    trained = {owner(p) for p in param_paths if rx.search(p)}
    with_params = {owner(p) for p in param_paths}
    return jax.tree.map(lambda path: owner(path) in trained if owner(path) in with_params
                        else rx.search(path) is not None, leaf_paths(model_state))


def split(tree, labels):
    """The trainable part of ``tree``: its leaves where ``labels`` is True, :class:`optax.MaskedNode` elsewhere
    (``tree`` itself when every label is True)."""
    if all(jax.tree.leaves(labels)):
        return tree
    return jax.tree.map(lambda keep, x: x if keep else optax.MaskedNode(), labels, tree)


def join(part, full, labels):
    """``part``'s leaves where ``labels`` is True, ``full``'s elsewhere (``part`` itself when every label is
    True)."""
    if all(jax.tree.leaves(labels)):
        return part
    return jax.tree.map(lambda keep, new, old: new if keep else old, labels, part, full)


def mask_gradients(mask) -> optax.GradientTransformation:
    """The stateless optax transformation g ↦ g ⊙ mask (``mask`` None: the identity)."""
    if mask is None:
        return optax.identity()
    return optax.stateless(lambda updates, params=None: jax.tree.map(jnp.multiply, updates, mask))


def init_state(optimizer: str, trainable: str | None, params, lr, weight_decay):
    """The optimiser state of one member over the trainable part of ``params`` (``TrainConfig.trainable``; frozen
    leaves hold nothing)."""
    return optim.init(optimizer, split(params, trainable_labels(params, trainable)), lr, weight_decay)


def make_update(config: TrainConfig):
    """``update(params, grads, opt_state, active, *, mask, ref_norms, momentum, lr_scale) -> (params, opt_state)``:
    steps 1–4 of the module docstring for one member; ``active`` False returns ``(params, opt_state)`` bit for bit.
    ``mask`` is ``param_mask`` (or None); ``momentum``, ``lr_scale`` as :func:`crobust.optim.step`'s."""

    def update(params, grads, opt_state, active, *, mask, ref_norms, momentum, lr_scale):
        labels = trainable_labels(params, config.trainable)
        grads, _ = mask_gradients(mask).update(grads, optax.EmptyState(), params)
        new_part, opt_state = optim.step(config.optimizer, split(params, labels), split(grads, labels), opt_state,
                                         active, momentum=momentum, lr_scale=lr_scale)
        new_params = join(new_part, params, labels)
        if config.projection == "frobenius":
            projected = regularizers.frobenius_projection(new_params, ref_norms)
            new_params = jax.tree.map(lambda a, b: jnp.where(active, a, b), join(projected, params, labels), params)
        return new_params, opt_state

    return update
