"""Staged populations: a population that starts from another's trained members, trained in dependency order.

A :class:`~crobust.study.runner.Population` with ``start=Start(source, …)`` is a **stage**: it is initialised as
any population (its own keys, splits, fresh parameters and optimiser state, on its own data ``Population.data``)
and then starts from the source members' trained variables — each source member's best-validation parameters and
the batch-norm statistics that go with them — through the parameter map ``keep``
(:func:`crobust.training.stages.start_from`: a regular expression on the parameter path, e.g. ``'^encoder/'``
for "keep the encoder, fresh head", or a function). Which parameters then train is the stage's own
``TrainConfig.trainable`` (frozen ones do not move at all: :mod:`crobust.training.update`). ``masks``
prunes the start (a function of the started variables giving pruning masks, e.g. ``lambda v:
crobust.pruning.global_ratio_masks(v, 0.5)``): the stage is then masked fine-tuning
(:func:`crobust.pruning.masked_start`), the pruned entries held at exactly 0.

**Naming a source.**

- ``Start("pretrain")`` — the population named ``pretrain`` of the same study;
- ``Start(other_population, study="row_sparsity")`` — a population of **another study in the same output
  folder**: the :class:`Population` object itself (e.g. taken from that study's ``populations(cfg, data)``, with
  its ``data`` set when that study trains on other data than this one) and the study's name. Its checkpoints are
  that study's, ``<workdir>/../<study>/checkpoints/<population>`` (``reproduce`` writes every study of a preset to
  ``<out>/<preset>/<study>/``), so whichever of the two studies runs first trains it and the other restores it:
  ``small`` trains each model once. The checkpoint's fingerprint (model, config, members, data) must match, so a
  differently configured population is refused rather than silently reused. A source of another study is not
  itself a stage.

``members`` maps the stage's members to source members (a tuple of source member indices, one per stage member;
default: member i starts from source member i, which needs as many members).

**Order and resumption.** :func:`in_dependency_order` sorts a study's populations so that every source comes
before its stages (declaration order otherwise); an unknown source, a cycle or a bad member map is one
:class:`~crobust._errors.CrobustError` before any training. Every population, stages included, is checkpointed
under its own folder, so a run killed in any stage resumes there: the finished stages before it are restored from
their final checkpoints (nothing retrained), the stage's start is rebuilt from them (a deterministic function of
the restored members) and its own checkpoint takes precedence over the start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from crobust import checkpoint as checkpoint_lib
from crobust import pruning, training
from crobust._errors import CrobustError
from crobust.training import stages as training_stages


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a stage starts (module docstring): ``source`` (a population name of this study, or a
    :class:`Population` of the study named ``study``), the parameter map ``keep``, the member map ``members``
    and optional pruning ``masks`` (started variables ``{'params', 'batch_stats'}`` (M, ...) → masks)."""

    source: Any
    keep: Any = ".*"                        # regex on the leaf path, or keep(source_variables, fresh_variables)
    members: Optional[tuple] = None         # source member index of each member; None: the same index
    masks: Optional[Callable] = None        # started variables -> {layer: (out,) or (M, out)} pruning masks
    study: Optional[str] = None             # the other study holding ``source`` (a Population), or None

    @property
    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else f"{self.study}/{self.source.name}"


def _source_population(pop, populations_by_name):
    start = pop.start
    if isinstance(start.source, str):
        if start.study is not None:
            raise CrobustError(f"population {pop.name}: a source of study {start.study!r} is given as its "
                               f"Population, not by name")
        if start.source not in populations_by_name:
            raise CrobustError(f"population {pop.name} starts from {start.source!r}, which is not a population of "
                               f"this study ({', '.join(populations_by_name) or 'none'})")
        return populations_by_name[start.source]
    if start.study is None:
        raise CrobustError(f"population {pop.name}: a source given as a Population must name its study "
                           f"(Start(population, study=...)); a source of this study is named by its name")
    if getattr(start.source, "start", None) is not None:
        raise CrobustError(f"population {pop.name}: the source {start.source_name} of another study is a stage "
                           f"itself; start from its own source instead")
    return start.source


def _named(value):
    """A JSON-able name for a map: a regex as itself, a function by its module and qualified name, a callable
    object (e.g. a dataclass holding its settings) by its class's module and its ``repr``."""
    if value is None or isinstance(value, str):
        return value
    if not hasattr(value, "__qualname__"):
        return f"{type(value).__module__}.{value!r}"
    return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"


def start_identity(pop) -> dict:
    """What a stage's checkpoint must also match to be resumed (``{}`` for a population that is no stage): its
    source, parameter map, member map and pruning masks. A function is named by its module and qualified name, so
    an edited function under the same name is not seen; a callable object by its ``repr`` (its settings); a
    retrained source is refused by the source's own checkpoint."""
    if pop.start is None:
        return {}
    start = pop.start
    return {"stage": {"source": start.source_name, "keep": _named(start.keep),
                      "members": None if start.members is None else [int(i) for i in start.members],
                      "masks": _named(start.masks)}}


def in_dependency_order(populations) -> list:
    """``populations`` with every source before its stages, declaration order otherwise (module docstring)."""
    by_name = {}
    for p in populations:
        if p.name in by_name:
            raise CrobustError(f"two populations are named {p.name!r}")
        by_name[p.name] = p
    for p in populations:
        if p.start is None:
            continue
        src = _source_population(p, by_name)
        n_src, n = len(src.members), len(p.members)
        idx = p.start.members
        if idx is None and n_src != n:
            raise CrobustError(f"population {p.name} has {n} members and its source {p.start.source_name} "
                               f"{n_src}: give Start(members=...) (a source member index per member)")
        if idx is not None and (len(idx) != n or any(not 0 <= int(i) < n_src for i in idx)):
            raise CrobustError(f"population {p.name}: Start.members must give {n} source member indices in "
                               f"[0, {n_src}), got {tuple(idx)}")
    done, order = set(), []

    def visit(p, path):
        if p.name in done:
            return
        if p.name in path:
            cycle = " → ".join([*path[path.index(p.name):], p.name])
            raise CrobustError(f"the populations' sources form a cycle: {cycle}")
        if p.start is not None and isinstance(p.start.source, str):
            visit(by_name[p.start.source], path + [p.name])
        done.add(p.name)
        order.append(p)

    for p in populations:
        visit(p, [])
    return order


def population_data(pop, data):
    """The dataset ``pop`` trains and is measured on: its own ``data`` (a function of the study's dataset, e.g.
    other classes, or a block with ``load()`` such as a :class:`~crobust.study.blocks.DataConfig`), else the
    study's."""
    own = getattr(pop, "data", None)
    if own is None:
        return data
    return own.load() if hasattr(own, "load") else own(data)


def initial_state(pop, data, source_fit):
    """The state ``pop`` starts training from (before its own checkpoint, which takes precedence): a fresh
    population; for a stage started from ``source_fit`` (the source's :class:`~crobust.training.FitResult`) and
    pruned by ``start.masks``; then ``pop.prepare``. None when nothing changes the fresh start."""
    state = None
    if pop.start is not None:
        start = pop.start
        idx = np.asarray(start.members if start.members is not None else range(len(pop.members)), np.int32)
        take = lambda tree: None if tree is None else jax.tree.map(lambda a: jnp.asarray(a)[idx], tree)
        state = training_stages.start_from(
            training.init_population(pop.model, data, pop.train, list(pop.members)), pop.train,
            take(source_fit.best_params), take(source_fit.best_model_state), keep=start.keep)
        if start.masks is not None:
            state = pruning.masked_start(state, pop.train, start.masks({**state.params, **(state.model_state or {})}))
    if pop.prepare is not None:
        state = pop.prepare(state if state is not None else
                            training.init_population(pop.model, data, pop.train, list(pop.members)))
    return state


def checkpoint_dir(workdir: Path, pop, start_of=None) -> Path:
    """Where ``pop``'s checkpoints live: ``<workdir>/checkpoints/<name>``, or for the source of ``start_of`` from
    another study ``<workdir>/../<study>/checkpoints/<name>``."""
    if start_of is not None and start_of.study is not None:
        return Path(workdir).parent / start_of.study / "checkpoints" / pop.name
    return Path(workdir) / "checkpoints" / pop.name


def restore_finished(pop, data, directory: Path, source_fit=None):
    """The :class:`~crobust.training.FitResult` of ``pop``'s finished training, read from its final checkpoint in
    ``directory`` without training; a clear error when there is none or some member is still training."""
    template = initial_state(pop, data, source_fit)
    if template is None:
        template = training.init_population(pop.model, data, pop.train, list(pop.members))
    if not directory.is_dir():
        raise CrobustError(f"population {pop.name} has no checkpoint in {directory}")
    ckpt = checkpoint_lib.Checkpointer(directory, description={
        **checkpoint_lib.describe(pop.model, data, pop.train, list(pop.members)), **start_identity(pop)})
    try:
        restored = ckpt.restore(template)
    finally:
        ckpt.close()
    if restored is None:
        raise CrobustError(f"population {pop.name} has no checkpoint in {directory}")
    state = restored.state
    alive = ~(np.asarray(state.stopped) | np.asarray(state.diverged))
    if alive.any():
        raise CrobustError(f"population {pop.name} has not finished training ({int(alive.sum())} member(s) still "
                           f"training at step {restored.step}); rerun the study to finish it")
    history = {k: np.stack(v) for k, v in restored.history.items()}
    return training.FitResult(members=[dict(m) for m in pop.members], state=state, history=history,
                              wall_time=restored.wall_time, steps_run=0, compiles=0)


def describe_stage(pop, data) -> str:
    """One phrase for the report: where a stage started, what it kept and trained, and on which data ('' when
    ``pop`` is not a stage)."""
    if pop.start is None:
        return ""
    start = pop.start
    keep = "a parameter map function" if callable(start.keep) else f"parameters matching `{start.keep}`"
    parts = [f"started from `{start.source_name}` ({keep})",
             "every parameter trained" if pop.train.trainable is None
             else f"only parameters matching `{pop.train.trainable}` trained, the others frozen"]
    if start.masks is not None:
        parts.append("pruned at the start, pruned entries held at 0 (masked fine-tuning)")
    if getattr(pop, "data", None) is not None:
        parts.append(f"on its own data ({getattr(data, 'name', 'dataset')}, {data.train_images.shape[0]} train)")
    return "; ".join(parts)
