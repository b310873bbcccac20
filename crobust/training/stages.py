"""A population that starts from another one's trained members: the parameter map from a source to a fresh start.

A staged population is initialised as any other (:func:`crobust.training.init_population`: its own keys,
splits, fresh parameters and optimiser state, on its own data), then :func:`start_from` puts the source members'
trained variables in: with ``keep`` a regular expression, every leaf of ``params`` and of the model state
(batch-norm statistics) whose path (:func:`crobust.training.update.leaf_paths`, e.g. ``'encoder/conv/kernel'``,
``'encoder/bn/mean'``) matches it is the source's, every other leaf stays fresh (``keep='^encoder/'``: the
encoder transferred, a new head); with ``keep`` a function ``keep(source_variables, fresh_variables) ->
variables`` (flax variables dicts ``{'params': …, 'batch_stats': …}`` stacked on the member axis) it decides
alone. A kept leaf must have the fresh leaf's shape (a head for another number of classes cannot be kept).

Which of the started parameters then train is the stage's own ``TrainConfig.trainable``
(:mod:`crobust.training.update`): frozen parameters and their batch-norm statistics do not move at all.
"""

from __future__ import annotations

import re
from typing import Callable

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.training import update
from crobust.training.config import TrainConfig
from crobust.training.population import PopulationState, reference_norms


def map_variables(keep: str | Callable, source: dict, fresh: dict) -> dict:
    """The variables a stage starts from (module docstring): ``source`` and ``fresh`` are flax variables dicts
    stacked (M, ...) with the same members; returns a dict with ``fresh``'s collections and shapes."""
    if callable(keep):
        out = dict(keep(source, fresh))
    else:
        rx = re.compile(keep)
        paths = update.leaf_paths(fresh)
        src_paths = {p: x for p, x in zip(jax.tree.leaves(update.leaf_paths(source)), jax.tree.leaves(source))}
        kept = []

        def pick(path, x):
            if rx.search(path) is None:
                return x
            if path not in src_paths:
                raise CrobustError(f"parameter map {keep!r}: {path} is not in the source population")
            s = src_paths[path]
            if s.shape != x.shape:
                raise CrobustError(f"parameter map {keep!r}: {path} is {tuple(s.shape[1:])} in the source and "
                                   f"{tuple(x.shape[1:])} here; leave it out of the map (a fresh leaf)")
            kept.append(path)
            return jnp.asarray(s, x.dtype)

        out = jax.tree.map(pick, paths, fresh)
        if not kept:
            raise CrobustError(f"parameter map {keep!r} keeps nothing of the source; paths look like "
                               f"{', '.join(jax.tree.leaves(paths)[:3])}")
    if jax.tree.structure(out) != jax.tree.structure(fresh) or any(
            a.shape != b.shape for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(fresh))):
        raise CrobustError("the parameter map must return variables shaped like the stage's model")
    return out


def start_from(state: PopulationState, config: TrainConfig, params, model_state=None, *,
               keep: str | Callable = ".*") -> PopulationState:
    """``state`` (a fresh :func:`~crobust.training.init_population` of the stage) started from the source members'
    ``params`` (``{'params': …}``) and ``model_state`` (``{'batch_stats': …}`` or None), stacked (M, ...) in the
    stage's member order, through the parameter map ``keep`` (module docstring).

    The optimiser state stays fresh (zero moments: it does not depend on the parameters' values), the best
    parameters are the start, and the Frobenius projection's reference norms are the start's."""
    fresh = {**state.params, **(state.model_state or {})}
    source = {**params, **(model_state or {})}
    if jax.tree.leaves(source) and jax.tree.leaves(source)[0].shape[0] != state.num_members:
        raise CrobustError(f"the source gives {jax.tree.leaves(source)[0].shape[0]} members, the stage has "
                           f"{state.num_members}")
    out = map_variables(keep, source, fresh)
    new_params = {"params": out["params"]}
    new_ms = {k: v for k, v in out.items() if k != "params"} or None
    return state.replace(params=new_params, best_params=new_params, model_state=new_ms, best_model_state=new_ms,
                         ref_norms=reference_norms(new_params, config))
