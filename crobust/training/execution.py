"""Member-execution strategies: how a population's training block is laid out on the backend, never what it computes.

A block of E = ``eval_every`` steps of member m is ``finish(steps^E(block_start(state_m)))``
(:class:`crobust.training.block.MemberProgram`). Two strategies run it:

- ``'scan'`` — one compiled program per block (:func:`crobust.training.block.make_block_fn`): the E steps in a
  ``lax.scan``, the members vmapped or ``lax.map``-ped (``members_per_group``), then validation. One dispatch per
  block; the right form where the step's operations compile well inside a loop (matrix products: MLPs on a CPU;
  every model on an accelerator, where one wide vmapped program fills the device).
- ``'host_loop'`` — :func:`make_host_loop_block`: a Python loop of compiled single steps. Each call is one step of
  one member (``members_per_group`` 1) or of a vmapped group of members, with no loop around its convolutions;
  then one compiled ``finish`` per member or group (validation with its chunks written out, no loop). On XLA:CPU
  a convolution inside a loop (``scan``, ``lax.map``) or under ``vmap`` is emitted as a naive loop fusion instead
  of the library convolution, 10–100× slower (``benchmarks/bench_execution.py``), so convolutional members run
  each step as one call; and since one such call keeps about one core busy, members run side by side, one
  worker thread per core (:func:`crobust.parallel.host_map`), each member's steps in order in its thread.

``'auto'`` (:func:`resolve`) is a fixed rule from those measurements, never timed at run time
(:func:`crobust.parallel.host_loops_members`): ``'host_loop'`` for a convolutional model (a parameter with a kernel
of ≥ 3 axes: conv (kh, kw, in, out)) on a single CPU device, ``'scan'`` otherwise (MLPs everywhere; every model
on accelerators and on several devices, where the member axis is sharded: not measured against the host loop on
a GPU yet).

Every strategy takes the same operations per member: the batch indices of step s are those of position s of
the block, the random keys fold in the member's own seed and step, frozen (stopped, diverged) members take no
step. Results per member therefore agree across strategies up to float round-off (XLA fuses a step differently
inside and outside a loop, and a vmapped convolution is a grouped one), and are bitwise reproducible run to run
under one strategy on a CPU. The strategy is not part of a run's identity (:func:`crobust.checkpoint.describe`
leaves it out): a checkpoint resumes under another.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from crobust import parallel, precision
from crobust._errors import CrobustError, check_choice
from crobust.training.block import block_start, member_program
from crobust.training.config import EXECUTIONS, TrainConfig
from crobust.training.population import PopulationState, jit_once, select


def resolve(execution: str, params) -> str:
    """The strategy ``execution`` names, with ``'auto'`` decided by the module docstring's rule."""
    check_choice("execution", execution, EXECUTIONS)
    if execution != "auto":
        return execution
    return "host_loop" if parallel.host_loops_members(params) else "scan"


def _host_group(members_per_group, n_members: int) -> int | None:
    """Members per host-loop call: ``'auto'`` is 1 on a single CPU device (each call one member, no vmap), else
    None (every member in one vmapped call: accelerators, and several devices, where the member axis is sharded)."""
    if members_per_group == "auto":
        return 1 if parallel.loops_over_members() else None
    if members_per_group is not None and (isinstance(members_per_group, bool) or not isinstance(members_per_group, int)
                                          or members_per_group < 1):
        raise CrobustError(f"members_per_group must be None, 'auto' or a positive integer, got {members_per_group!r}")
    if members_per_group is None or (members_per_group > 1 and members_per_group >= n_members):
        return None
    if jax.device_count() > 1:
        raise CrobustError("execution='host_loop' with members_per_group=G runs on one device; with several devices "
                           "use members_per_group=None (the member axis is sharded)")
    return members_per_group


def make_host_loop_block(model, config: TrainConfig, adversary: Callable | None = None, *,
                         members_per_group: int | None | str = "auto", counter: list | None = None):
    """``block(state, hparams, images, labels) -> (state, metrics)`` as :func:`~crobust.training.make_block_fn`'s,
    run as a host loop of compiled steps (module docstring). Not itself jittable: call it directly.

    ``members_per_group``: 1 — per member, ``block_start``, then one compiled call per step (E calls, fewer in the
    block where it reaches ``max_steps``; none for a frozen member), then its ``finish``; G > 1 — groups of G
    members vmapped in each call (frozen members of a group keep their carry); None — every member in each call
    (works on a sharded population); ``'auto'`` as :func:`_host_group`. The members (or groups) run side by side
    on :func:`crobust.parallel.host_threads` worker threads (one per core, or ``$CROBUST_HOST_THREADS``), each
    member's steps in order within its thread. ``counter[0]`` is incremented on every trace of the step and finish
    programs (its compilations).
    """
    program = member_program(model, config, adversary)
    block, max_steps = config.eval_every, config.max_steps
    counter = [0] if counter is None else counter

    def traced(fn):
        def run(*args):
            counter[0] += 1
            with precision.training(config.matmul_precision):
                return fn(*args)
        return run

    def one_step(st, hp, carry, s, images, labels):
        return program.steps(st, hp, images, labels, carry, s, 1)

    def finish(st, hp, carry, images, labels):
        return program.finish(st, hp, images, labels, carry, unroll_validation=True)

    def group_step(st, hp, carry, s, images, labels):     # a frozen member keeps its carry (no step)
        new = one_step(st, hp, carry, s, images, labels)
        return select(st.stopped | st.diverged, carry, new)

    step_1, finish_1 = jax.jit(traced(one_step)), jax.jit(traced(finish))
    step_g = jax.jit(traced(jax.vmap(group_step, in_axes=(0, 0, 0, None, None, None))))
    finish_g = jit_once(traced(jax.vmap(finish, in_axes=(0, 0, 0, None, None))))
    start_1, start_g = jit_once(block_start), jit_once(jax.vmap(block_start))
    take = jit_once(lambda tree, i: jax.tree.map(lambda a: a[i], tree))
    stack = jit_once(lambda parts: jax.tree.map(lambda *xs: jnp.stack(xs), *parts))
    concat = jit_once(lambda parts: jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts))

    def run_group(st, hp, images, labels, n_steps):
        carry = start_g(st)
        for s in range(n_steps):
            carry = step_g(st, hp, carry, np.int32(s), images, labels)
        return finish_g(st, hp, carry, images, labels)

    def host_block(state: PopulationState, hparams, images, labels):
        n = parallel.leading_size(state.params)
        group = _host_group(members_per_group, n)
        if group is None:
            return run_group(state, hparams, images, labels, block)
        step0 = np.asarray(state.step)
        frozen = np.asarray(state.stopped) | np.asarray(state.diverged)
        todo = np.where(frozen, 0, np.clip(max_steps - step0, 0, block))    # steps each member still takes

        def run_part(j):
            idx = np.arange(j * group, min((j + 1) * group, n), dtype=np.int32)
            if group > 1:
                return run_group(*take((state, hparams), idx), images, labels, int(todo[idx].max()))
            st, hp = take((state, hparams), idx[0])
            carry = start_1(st)
            for s in range(int(todo[idx[0]])):
                carry = step_1(st, hp, carry, np.int32(s), images, labels)
            return finish_1(st, hp, carry, images, labels)

        parts = parallel.host_map(run_part, -(-n // group))
        return (stack if group == 1 else concat)(parts)

    return host_block


__all__ = ["EXECUTIONS", "resolve", "make_host_loop_block"]
