"""The compiled block: ``eval_every`` optimiser steps of every member inside one ``lax.scan``, then validation
and early stopping — the program that :func:`crobust.training.fit` calls once per host sync."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crobust import optim, parallel, precision, regularizers
from crobust._errors import CrobustError, check_choice
from crobust.data import to_float
from crobust.shuffle import index_shuffle
from crobust.training import augmentation, objective, update
from crobust.training.config import TrainConfig
from crobust.training.population import PopulationState, select, stream_key

def block_batch_indices(key, step0, train_idx, batch_size: int, block: int):
    """Dataset indices (block, B) of the batches for steps step0 … step0+block−1 of one member.

    Batch s is ``train_idx[π_e(p·B + j)]``, j < B, with e, p = divmod(step0+s, S), S = n_train // B and π_e the
    keyed permutation :func:`crobust.shuffle.index_shuffle` of [0, n_train) under ``fold_in(key, e)``: each
    position is computed directly, no epoch is materialised or sorted.
    """
    n_train = train_idx.shape[0]
    spe = n_train // batch_size
    steps = step0 + jnp.arange(block)
    epoch, pos = steps // spe, steps % spe
    positions = pos[:, None] * batch_size + jnp.arange(batch_size)[None, :]
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(epoch)
    return train_idx[jax.vmap(lambda k, p: index_shuffle(k, p, n_train))(keys, positions)]


def chunked_loss_acc(apply_fn, params, images, labels, idx, chunk: int, unroll: bool = False):
    """Mean cross-entropy and accuracy of ``params`` on images[idx], evaluated in chunks of ``chunk`` points
    (``unroll``: the chunks written out one after another, no loop around the model; same sums in the same order)."""
    n = idx.shape[0]
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    idx_p = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)]).reshape(n_chunks, chunk)
    w = jnp.concatenate([jnp.ones((n,)), jnp.zeros((pad,))]).reshape(n_chunks, chunk)

    def body(carry, inp):
        ids, wt = inp
        logits = apply_fn(params, to_float(images[ids]))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[ids])
        correct = (jnp.argmax(logits, -1) == labels[ids]).astype(jnp.float32)
        return (carry[0] + jnp.sum(ce * wt), carry[1] + jnp.sum(correct * wt)), None

    (loss_sum, correct_sum), _ = jax.lax.scan(body, (0.0, 0.0), (idx_p, w), unroll=bool(unroll))
    return loss_sum / n, correct_sum / n


MEMBER_CACHE_BUDGET_BYTES = 512 * 1024


def auto_members_per_group(params, *, batch_size: int = 128, eval_batch_size: int = 2048) -> int | None:
    """How many members a compiled block steps together (see :func:`make_block_fn`); ``params`` stacked (M, ...).

    - Single CPU device: G = ⌊budget / (16 · P)⌋ clipped to [1, M], with P the parameters per member and 16 · P the
      bytes of its parameters, gradient and two moments (float32), budget :data:`MEMBER_CACHE_BUDGET_BYTES` — a
      group's optimiser working set then stays in the CPU's cache (``benchmarks/bench_training.py``).
    - One accelerator that reports its memory (``device.memory_stats()``): G from the device's free memory at trace
      time (the population's state is already resident, so free = limit − in use) and a member's step working set
      (:func:`crobust.parallel.member_step_bytes`), by :func:`crobust.parallel.members_per_group_for_memory`:
      ``None`` (all members vmapped) when they all fit, a group size otherwise, and a clear
      :class:`~crobust._errors.CrobustError` when one member alone does not fit.
    - Several devices (the member axis is sharded) or no memory statistics: ``None``.
    """
    if parallel.loops_over_members():
        per_member = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(params))
        return int(max(1, min(parallel.leading_size(params), MEMBER_CACHE_BUDGET_BYTES // max(16 * per_member, 1))))
    if jax.device_count() > 1:
        return None
    free = parallel.device_free_bytes()
    if free is None:
        return None
    need = parallel.member_step_bytes(params, batch_size=batch_size, eval_batch_size=eval_batch_size)
    return parallel.members_per_group_for_memory(need, free, parallel.leading_size(params))


def lr_factor(config: TrainConfig, steps_per_epoch: int):
    """``step ↦`` the schedule's learning-rate factor (TrainConfig docstring), or None for ``'constant'``.

    The factor of the step taken after ``step`` steps is f(e), e = ⌊step / S⌋ (S = ``steps_per_epoch``), from
    optax: ``'multistep'`` ``piecewise_constant_schedule(1, {m: γ})`` (γ applies from epoch m on, as MultiStepLR's);
    ``'cosine'``
    ``cosine_decay_schedule(1, T, alpha=ρ)``. (The reference steps its scheduler after iteration k·E + 1, one
    step later than here; E = ⌈N/B⌉ there, ⌊N/B⌋ here because the trainer drops an epoch's remainder.)
    """
    if config.lr_schedule == "constant":
        return None
    spe = max(int(steps_per_epoch), 1)
    if config.lr_schedule == "multistep":
        sched = optax.piecewise_constant_schedule(1.0, {int(m): float(config.lr_gamma)
                                                        for m in config.lr_milestones})
    else:
        epochs = config.cosine_epochs or max(1, math.ceil(config.max_steps / spe))
        sched = optax.cosine_decay_schedule(1.0, int(epochs), alpha=float(config.cosine_min_ratio))
    return lambda step: jnp.asarray(sched(step // spe), jnp.float32)


class MemberProgram(NamedTuple):
    """One member's training block in two traceable pieces (:func:`member_program`); a block is
    ``finish(state_m, hp_m, images, labels, steps(state_m, hp_m, images, labels, block_start(state_m), 0, E))``
    with E = ``eval_every``, however a strategy (:mod:`crobust.training.execution`) loops around the steps."""

    steps: Callable
    finish: Callable


def block_start(state_m: PopulationState):
    """The carry of a member's steps at the start of its block: (params, opt_state, model_state, step, bad,
    loss_sum, n_active) = (its state's, …, its step, False, 0, 0) — also the carry of a frozen member."""
    return (state_m.params, state_m.opt_state, state_m.model_state, state_m.step, jnp.bool_(False),
            jnp.float32(0.0), jnp.int32(0))


def member_program(model, config: TrainConfig, adversary: Callable | None = None) -> MemberProgram:
    """The pieces of one member's block (:class:`MemberProgram`): what :func:`make_block_fn` describes."""
    check_choice("optimizer", config.optimizer, optim.OPTIMIZERS)
    check_choice("augment", config.augment, augmentation.MODES)
    if config.adversarial is not None:
        config.adversarial.validate()
    penalty = regularizers.combined_penalty(config.penalty_terms(), nuclear_method=config.nuclear_method)
    apply_fn = model.apply
    at = config.adversarial
    objective.check_adversary(config, adversary)
    step_update = update.make_update(config)

    def member_steps(state_m: PopulationState, hp_m, images, labels, carry, s0, n_steps: int):
        """``n_steps`` steps of one member from position ``s0`` of its block: ``carry`` (:func:`block_start`) in,
        carry out. ``state_m`` is the member's slice of the population state at the block's start (the same pytree
        without the member axis); ``s0`` may be traced. One step is traced without a loop around it."""
        key, step0 = state_m.key, state_m.step
        stateful = state_m.model_state is not None
        train_idx, ref_norms = state_m.train_idx, state_m.ref_norms
        factor = lr_factor(config, train_idx.shape[0] // config.batch_size)
        eval_fn = apply_fn if not stateful else (lambda variables, x: apply_fn(variables, x, train=False))
        variables = (lambda p, ms: p) if not stateful else (lambda p, ms: {**p, **ms})
        inputs = objective.make_inputs(config, eval_fn, adversary)
        data_loss = objective.make_data_loss(config, objective.train_apply(
            apply_fn, stateful, update.stats_labels(state_m.model_state, state_m.params, config.trainable)))

        batches = block_batch_indices(stream_key(key, "data"), step0 + s0, train_idx, config.batch_size, n_steps)

        def one_step(carry, ids):
            params, opt_state, ms, step, bad, loss_sum, n_active = carry
            x, y = to_float(images[ids]), labels[ids]
            if config.augment != "none":
                x = augmentation.augment(jax.random.fold_in(stream_key(key, "augment"), step), x, config.augment)
            x_pair = None
            if at is not None:
                x, x_pair = inputs(jax.lax.stop_gradient(variables(params, ms)), x, y,
                                   jax.random.fold_in(stream_key(key, "attack"), step), hp_m)

            def loss_fn(p):
                loss, new_ms = data_loss(p, ms, x, x_pair, y, hp_m)
                return loss + penalty(p, hp_m), new_ms

            (loss, new_ms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            finite = jnp.isfinite(loss)
            ok = (~bad) & (step < config.max_steps) & finite
            new_params, opt_state = step_update(params, grads, opt_state, ok, mask=state_m.param_mask,
                                                ref_norms=ref_norms, momentum=hp_m["momentum"],
                                                lr_scale=None if factor is None else factor(step))
            if stateful:
                ms = select(ok, new_ms, ms)
            bad = bad | ((step < config.max_steps) & ~finite)
            return (new_params, opt_state, ms, step + ok.astype(jnp.int32), bad,
                    loss_sum + jnp.where(ok, loss, 0.0), n_active + ok.astype(jnp.int32)), None

        if n_steps == 1:
            return one_step(carry, batches[0])[0]
        return jax.lax.scan(one_step, carry, batches)[0]

    def member_finish(state_m: PopulationState, hp_m, images, labels, carry, unroll_validation: bool = False):
        """The end of one member's block: ``carry`` after its steps (or :func:`block_start` for a frozen member)
        -> (new member state, metrics): finiteness check, validation (eval mode) and early stopping."""
        params0, opt0, ms0, step0 = state_m.params, state_m.opt_state, state_m.model_state, state_m.step
        stateful = ms0 is not None
        best_ms, val_idx = state_m.best_model_state, state_m.val_idx
        best_val, best_step, best_params = state_m.best_val, state_m.best_step, state_m.best_params
        stopped, diverged = state_m.stopped, state_m.diverged
        frozen = stopped | diverged
        eval_fn = apply_fn if not stateful else (lambda variables, x: apply_fn(variables, x, train=False))
        variables = (lambda p, ms: p) if not stateful else (lambda p, ms: {**p, **ms})
        params, opt_state, ms, new_step, bad, loss_sum, n_active = carry
        # One finiteness check per block: a member whose loss, parameters or model state stopped being finite goes
        # back to where it started the block, and is frozen from then on (below). A frozen member took no step.
        bad = bad | (~frozen & ~jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x))
                                                     for x in jax.tree.leaves((params, ms))])))
        params, opt_state, ms = select(bad, params0, params), select(bad, opt0, opt_state), select(bad, ms0, ms)
        new_step, loss_sum, n_active = (jnp.where(bad, step0, new_step), jnp.where(bad, 0.0, loss_sum),
                                        jnp.where(bad, 0, n_active))
        diverged = diverged | bad

        # Validation (eval mode) and early stopping (docs/reference-code.md §4).
        if val_idx.shape[0] > 0:
            val_loss, val_acc = chunked_loss_acc(eval_fn, variables(params, ms), images, labels, val_idx,
                                                 config.eval_batch_size, unroll=unroll_validation)
        else:
            val_loss, val_acc = jnp.float32(jnp.nan), jnp.float32(jnp.nan)
        evaluated = n_active > 0
        eligible = evaluated & (new_step >= config.min_steps) & ~diverged
        improved = eligible & (val_loss < best_val)
        best_val = jnp.where(improved, val_loss, best_val)
        best_step = jnp.where(improved, new_step, best_step)
        best_params = select(improved, params, best_params)
        if stateful:
            best_ms = select(improved, ms, best_ms)
        stop = new_step >= config.max_steps
        if config.patience is not None:
            stop = stop | ((best_step >= 0) & (new_step - best_step >= config.patience))
        stopped = stopped | stop
        metrics = {"step": new_step, "train_loss": loss_sum / jnp.maximum(n_active, 1), "val_loss": val_loss,
                   "val_acc": val_acc, "evaluated": evaluated, "alive": ~(stopped | diverged)}
        new_state = state_m.replace(params=params, opt_state=opt_state, best_params=best_params, step=new_step,
                                    best_val=best_val, best_step=best_step, stopped=stopped, diverged=diverged,
                                    model_state=ms, best_model_state=best_ms)
        return new_state, metrics

    return MemberProgram(member_steps, member_finish)


def make_block_fn(model, config: TrainConfig, adversary: Callable | None = None, *,
                  members_per_group: int | None | str = "auto"):
    """Build ``block(state, hparams, images, labels) -> (state, metrics)``: ``eval_every`` steps for every member,
    in one traceable program (the ``'scan'`` strategy; the host loop is :mod:`crobust.training.execution`'s).

    ``adversary(apply_fn, variables, x, y, key) -> x_adv`` replaces the default PGD of ``config.adversarial``
    (method ``'pgd'``) when given; ``apply_fn(variables, x)`` is the member's model in eval mode.

    A step of one member (key k, step s; streams of :data:`~crobust.training.population.STREAMS`): the batch of
    step s (``block_batch_indices``) scaled to [0, 1]; augmented (``config.augment``, key fold_in(augment(k), s));
    the inputs it trains on, adversarial examples made in eval mode (key fold_in(attack(k), s)) — clean, PGD mix,
    TRADES or the given adversary's (:func:`crobust.training.objective.make_inputs`); loss = data loss in train mode
    (cross-entropy, + β·KL for TRADES, :func:`~crobust.training.objective.make_data_loss`; batch norm: batch
    statistics, running statistics updated into ``model_state``) + the penalty terms; the update — gradient mask →
    freeze → optimiser with the schedule's factor → projection (:func:`crobust.training.update.make_update`).
    Validation runs in eval mode. Models without model state are applied as
    ``model.apply(params, x)``; with it as ``model.apply(variables, x, train=..., mutable=[collections])``.

    ``members_per_group`` is how the members are laid out in the program, never what they compute: ``None``
    vmaps every member (one wide program: accelerators, sharded populations); an integer G runs groups of G
    vmapped members one group after another (``lax.map``): on a CPU a member's parameters and optimiser state then
    stay in cache through its step, and with G = 1 a stopped or diverged member's block is skipped outright
    (``lax.cond``). ``"auto"``: :func:`auto_members_per_group`, decided when the block is traced. Members are
    independent, so every layout gives the same results up to float rounding of the batched matmuls.
    """
    if not (members_per_group is None or members_per_group == "auto"
            or (isinstance(members_per_group, int) and members_per_group >= 1)):
        raise CrobustError(f"members_per_group must be None, 'auto' or a positive integer, got {members_per_group!r}")
    program = member_program(model, config, adversary)
    block = config.eval_every

    def member_block(state_m: PopulationState, hp_m, images, labels):
        # one member's block: the scan of its eval_every steps (skipped outright when it is frozen), then the end
        train = lambda carry: program.steps(state_m, hp_m, images, labels, carry, 0, block)
        carry = jax.lax.cond(state_m.stopped | state_m.diverged, lambda carry: carry, train, block_start(state_m))
        return program.finish(state_m, hp_m, images, labels, carry)

    def block_fn(state: PopulationState, hparams, images, labels):
        # traced at the config's training precision (crobust.precision); metrics inside open full float32 themselves
        with precision.training(config.matmul_precision):
            group = members_per_group
            if members_per_group == "auto":
                group = auto_members_per_group(state.params, batch_size=config.batch_size,
                                               eval_batch_size=config.eval_batch_size)
            return parallel.map_members(lambda s, h: member_block(s, h, images, labels), state, hparams,
                                        group=group)

    return block_fn
