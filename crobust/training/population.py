"""Members and the population state: the member grid, per-member hyper-parameters and keys, the stacked
:class:`PopulationState` pytree, and its initialisation."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Iterable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from crobust import parallel, regularizers
from crobust._errors import CrobustError
from crobust.training import update
from crobust.training.config import HPARAMS, TrainConfig, check_hparam_name

# The named random streams of a member: stream s of the member with key k is fold_in(k, s) (never its position).
STREAMS = {"init": 0, "data": 1, "split": 2, "attack": 3, "augment": 4}


def stream_key(key, name: str):
    """The member's key for the named stream (:data:`STREAMS`)."""
    return jax.random.fold_in(key, STREAMS[name])


def grid(seeds: Iterable[int] = (0,), **axes: Sequence[float]) -> list[dict]:
    """The Cartesian product of hyper-parameter values × seeds, seeds varying fastest.

    ``grid(alpha=[0, 0.1], seeds=range(3))`` → 6 members ``{'alpha': 0, 'seed': 0}``, … ``{'alpha': 0.1, 'seed': 2}``.
    Any member axis of :data:`crobust.training.HPARAMS` may be an axis (``grid(lr=[0.1, 0.05], at_eps=[0, 8/255])``).
    """
    for name in axes:
        if name == "seed":
            raise CrobustError("seeds are given as grid(seeds=...), not as an axis named 'seed'")
        check_hparam_name(name)
    names = list(axes)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CrobustError("seeds must not be empty")
    members = []
    for values in itertools.product(*(axes[n] for n in names)):
        for seed in seeds:
            members.append({**dict(zip(names, (float(v) for v in values))), "seed": seed})
    return members


def member_hparams(members: Sequence[Mapping], config: TrainConfig) -> dict:
    """Stack every member axis of :data:`~crobust.training.HPARAMS` into a traced float32 array (M,), filling the
    values a member does not set from ``config``; each value is checked against its axis' range, and setting an
    axis that cannot apply under ``config`` (e.g. ``at_eps`` without adversarial training) is an error."""
    if not members:
        raise CrobustError("a population needs at least one member")
    for m in members:
        for k in m:
            check_hparam_name(k)
    out = {}
    for name, spec in HPARAMS.items():
        why_not = spec.needs(config)
        given = [m for m in members if name in m]
        if why_not is not None and given:
            raise CrobustError(f"member setting {name!r} cannot apply: {why_not}")
        values = [float(m.get(name, spec.default(config))) for m in members]
        if why_not is None:
            for v in values:
                spec.check(name, v, config)
        out[name] = jnp.asarray(values, jnp.float32)
    return out


def member_keys(members: Sequence[Mapping]) -> jax.Array:
    """One typed PRNG key per member, ``jax.random.key(seed)``."""
    return jax.vmap(jax.random.key)(jnp.asarray([int(m.get("seed", 0)) for m in members], jnp.uint32))


# --------------------------------------------------------------------------------------------------------------
# State

@flax.struct.dataclass
class PopulationState:
    """Everything that determines the continuation of training, stacked on a leading member axis (M, ...).

    A checkpoint of this pytree (plus the config) is enough to resume bit-for-bit: the data position is ``step``
    and every random stream is derived from ``key`` and ``step``.

    ``params`` is the flax variables dict of the trained collection, ``{'params': ...}``. ``model_state`` holds the
    model's other (mutable) collections, e.g. ``{'batch_stats': ...}`` of batch norm — updated by the training
    steps (train mode), read by validation, attacks and evaluation (eval mode) — or ``None`` for a model without
    any (the MLPs); ``best_model_state`` is the one that goes with ``best_params``.

    ``param_mask`` (``None``: no mask) freezes entries at zero, per member — pruned filters fine-tuned
    (:func:`crobust.pruning.fit_masked`): every step's gradient g (loss and penalty) becomes g ⊙ mask before the
    optimiser. With the masked entries of ``params`` at 0, AdamW's moments there stay 0 and its update is
    0/(√0 + ε) + wd·0 = 0, SGD's is η·(0 + wd·0) = 0, so they stay exactly 0 whatever the penalty's subgradient at
    0, and so does the Frobenius projection's scaling of them.
    """

    params: Any
    opt_state: Any
    best_params: Any
    ref_norms: Any          # {hidden layer: ‖W₀‖_F} for the Frobenius projection
    key: jax.Array          # per-member base key (typed)
    train_idx: jax.Array    # (M, n_train) int32: indices of the member's training split
    val_idx: jax.Array      # (M, n_val) int32: indices of its validation split
    step: jax.Array         # (M,) int32: optimiser steps taken
    best_val: jax.Array     # (M,) float32: best validation loss (inf until the first eligible evaluation)
    best_step: jax.Array    # (M,) int32: step of the best evaluation (-1 if none)
    stopped: jax.Array      # (M,) bool: stopped by early stopping or max_steps
    diverged: jax.Array     # (M,) bool: a non-finite loss or parameter was met
    model_state: Any = None       # {'batch_stats': ...} etc. (M, ...), or None
    best_model_state: Any = None  # the model_state of best_params
    param_mask: Any = None  # 0/1 per parameter entry shaped like params (M, ...): gradients are multiplied by it

    @property
    def num_members(self) -> int:
        return int(self.step.shape[0])


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns. Arrays have a leading member axis M; ``history`` arrays are (n_blocks, M).

    ``compiles``: compilations of the block this call caused — 1 for a first call, 0 when an earlier ``fit`` of
    the same model, configuration and shapes already compiled it (with ``block_fn`` given: that function's cache
    size); under ``execution='host_loop'`` the step and finish programs count separately, once per group shape
    (2 for a first call member by member).
    ``execution``: the member-execution strategy the block ran under (``TrainConfig.execution`` resolved,
    :mod:`crobust.training.execution`; ``'given'`` for a ``block_fn`` passed in).
    """

    members: list[dict]
    state: PopulationState
    history: dict[str, np.ndarray]
    wall_time: float
    steps_run: int
    compiles: int
    execution: str = "scan"

    @property
    def params(self):
        return self.state.params

    @property
    def best_params(self):
        """Best-validation parameters; a member that never had an eligible evaluation keeps its final ones."""
        has_best = self.state.best_step >= 0
        return jax.tree.map(lambda b, p: jnp.where(_bcast(has_best, b), b, p), self.state.best_params,
                            self.state.params)

    @property
    def model_state(self):
        return self.state.model_state

    @property
    def best_model_state(self):
        """The model state (batch-norm running statistics) that goes with :attr:`best_params`; None for MLPs."""
        if self.state.model_state is None:
            return None
        has_best = self.state.best_step >= 0
        return jax.tree.map(lambda b, p: jnp.where(_bcast(has_best, b), b, p), self.state.best_model_state,
                            self.state.model_state)


class EvalApply:
    """``apply_fn(variables, x, **kwargs) = model.apply(variables, x, train=False, **kwargs)``: a model with mutable
    state (batch norm) in eval mode — running statistics read, nothing updated.

    Equal, and hashing equal, for equal models, so a compiled program that takes it as a static argument (e.g.
    :func:`crobust.evaluation.population_robust_accuracy`) is reused by a second evaluation instead of being
    compiled again, as it would be for a new lambda each call.
    """

    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model

    def __call__(self, variables, x, **kwargs):
        return self.model.apply(variables, x, train=False, **kwargs)

    def __eq__(self, other):
        return type(other) is EvalApply and other.model == self.model

    def __hash__(self):
        return hash((EvalApply, self.model))

    def __repr__(self):
        return f"EvalApply({type(self.model).__name__})"


def eval_apply(model, params, model_state=None):
    """``(apply_fn, variables)`` for evaluating trained members in eval mode: ``apply_fn(variables_m, x)`` → logits.

    ``params`` / ``model_state`` stacked (M, ...) as in :class:`PopulationState` (e.g. ``result.best_params``,
    ``result.best_model_state``). Without model state: ``(model.apply, params)``, as for the MLPs. With it:
    ``variables = {**params, **model_state}`` and ``apply_fn`` = :class:`EvalApply` ``(model)``, i.e.
    ``model.apply(variables, x, train=False)``, so batch norm uses each member's running statistics and nothing is
    updated. This is what :mod:`crobust.evaluation` and the attacks take.
    """
    if model_state is None:
        return model.apply, params
    return EvalApply(model), {**params, **model_state}


def for_evaluation(model, result: "FitResult", which: str = "best"):
    """:func:`eval_apply` of a fitted population's ``'best'`` (best-validation) or ``'final'`` members."""
    if which == "best":
        return eval_apply(model, result.best_params, result.best_model_state)
    if which == "final":
        return eval_apply(model, result.params, result.model_state)
    raise CrobustError(f"which must be 'best' or 'final', got {which!r}")


def _bcast(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def select(mask, a, b):
    """Per-member select on pytrees with a leading member axis (``mask`` (M,)), or one member's (a scalar mask
    inside vmap): ``a`` where ``mask``, else ``b``."""
    return jax.tree.map(lambda x, y: jnp.where(_bcast(mask, x), x, y), a, b)


def split_indices(key, n: int, val_ratio: float):
    """(train_idx, val_idx): a random split of range(n) with ⌊val_ratio·n⌋ validation points (vmap-able)."""
    n_val = int(math.floor(val_ratio * n))
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    return perm[n_val:], perm[:n_val]


def init_population(model, data, config: TrainConfig, members: Sequence[Mapping]) -> PopulationState:
    """Initialise every member (vmap over member keys): parameters, optimiser state, splits, bookkeeping."""
    n_total = int(data.train_labels.shape[0])
    config.validate(n_total)
    hp = member_hparams(members, config)
    keys = member_keys(members)
    image_shape = tuple(int(d) for d in data.train_images.shape[1:])
    try:
        program = _init_program(model, config.optimizer, config.trainable, n_total, float(config.val_ratio),
                                image_shape)
    except TypeError:                                   # an unhashable model: a fresh program
        program = _init_program.__wrapped__(model, config.optimizer, config.trainable, n_total,
                                            float(config.val_ratio), image_shape)
    params, model_state, opt_state, train_idx, val_idx = program(keys, hp["lr"], hp["weight_decay"])
    m = len(members)
    return PopulationState(
        params=params, opt_state=opt_state, best_params=params, ref_norms=reference_norms(params, config),
        key=keys, train_idx=train_idx, val_idx=val_idx,
        step=jnp.zeros((m,), jnp.int32), best_val=jnp.full((m,), jnp.inf, jnp.float32),
        best_step=jnp.full((m,), -1, jnp.int32), stopped=jnp.zeros((m,), bool), diverged=jnp.zeros((m,), bool),
        model_state=model_state, best_model_state=model_state)


def population_bytes(model, data, config: TrainConfig, members: Sequence[Mapping]) -> tuple[int, int]:
    """(bytes of the population's state, bytes its training step adds) from the shapes alone: the initialisation
    program of :func:`init_population` through ``jax.eval_shape`` (nothing is allocated, nothing compiled) gives
    parameters, model state, optimiser state and splits; the state holds the parameters and the model state twice
    (current and best), counted by :func:`crobust.parallel.state_bytes`. The step's working set is
    M · :func:`crobust.parallel.member_step_bytes`. Validates ``config`` and the members as :func:`init_population`
    does."""
    n_total = int(data.train_labels.shape[0])
    config.validate(n_total)
    hp = member_hparams(members, config)
    image_shape = tuple(int(d) for d in data.train_images.shape[1:])
    program = _init_program.__wrapped__(model, config.optimizer, config.trainable, n_total, float(config.val_ratio),
                                        image_shape)
    params, model_state, opt_state, train_idx, val_idx = jax.eval_shape(program, member_keys(members), hp["lr"],
                                                                         hp["weight_decay"])
    state = parallel.state_bytes((params, params, model_state, model_state, opt_state, train_idx, val_idx))
    step = parallel.member_step_bytes(params, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size)
    return state, step * len(members)


@functools.lru_cache(maxsize=16)
def _init_program(model, optimizer: str, trainable: str | None, n_total: int, val_ratio: float, image_shape: tuple):
    """The jitted initialisation of a population (one per model / optimiser / trainable part / data shape, reused
    across calls); the optimiser state covers the trainable parameters (:func:`crobust.training.update.init_state`)."""
    x0 = jnp.zeros((1,) + image_shape, jnp.float32)

    def one(key, lr, wd):
        variables = model.init(stream_key(key, "init"), x0)
        params = {"params": variables["params"]}
        model_state = {k: v for k, v in variables.items() if k != "params"} or None
        opt_state = update.init_state(optimizer, trainable, params, lr, wd)
        train_idx, val_idx = split_indices(stream_key(key, "split"), n_total, val_ratio)
        return params, model_state, opt_state, train_idx, val_idx

    # lax.map, not vmap: the same values, and XLA compiles flax's initialisers for one member faster. An init runs
    # once, so its compile is nearly all of its cost, and on XLA:CPU most of that is LLVM optimising the unrolled
    # threefry rounds of every initialiser (ResNet-18: ~6 s of a 6 s compile); the program is compiled without
    # LLVM's optimisation there (:func:`jit_once`), which changes the initial values only in the last
    # float32 bits (one rounding in the uniform's scale) and is what every run of this version uses.
    return jit_once(lambda k, lr, wd: jax.lax.map(lambda a: one(*a), (k, lr, wd)))


# XLA options for a program that runs once (a population's initialisation): no LLVM optimisation of its machine code
# (XLA still optimises the HLO). Used on CPU only, where LLVM's code generation dominates such a compile.
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_once(fn, **kwargs):
    """``jax.jit(fn)`` for a program that runs once or moves data only: compiled with :data:`RUN_ONCE_OPTIONS`
    on CPU, as usual elsewhere."""
    return jax.jit(fn, compiler_options=RUN_ONCE_OPTIONS if jax.default_backend() == "cpu" else None, **kwargs)


def reference_norms(params, config: TrainConfig) -> dict:
    """{hidden layer: ‖W₀‖_F} per member for the Frobenius projection; {} for a model without the MLP's
    ``hidden_i`` layers when no projection is asked for (the projection is defined on those layers only)."""
    try:
        return _frobenius_norms_program(params)
    except CrobustError:
        if config.projection == "frobenius":
            raise
        return {}


# One compiled program per parameter shapes (eagerly, every layer's matricisation would compile on its own).
_frobenius_norms_program = jax.jit(jax.vmap(regularizers.hidden_frobenius_norms))


