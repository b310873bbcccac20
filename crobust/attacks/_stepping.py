"""An attack's loops driven from the host, one compiled call per iteration (private).

XLA:CPU emits a convolution whose operands are carried through a loop body (``lax.fori_loop``, ``lax.scan``,
``lax.while_loop``, ``lax.map``) as a naive loop fusion: one ResNet-18 input-gradient step inside APGD's loop runs
about three times slower than the same step as its own compiled program (``benchmarks/bench_execution.py``, arm
``apgd_ce_vs_autoattack``). Under :func:`host_stepped`, an attack called with concrete arrays therefore runs each
of its loops as a Python loop over one compiled iteration:

- :func:`fori_loop`, :func:`while_loop`, :func:`scan`: the body is lifted into a ``jax.tree_util.Partial`` whose
  leaves are the arrays it captures (:func:`crobust.attacks._closure.lift`) and called through one cached
  ``jax.jit``, so the iteration compiles once per code and shapes and is reused across iterations, calls, radii,
  members and threads; a body that cannot be lifted runs as the ``lax`` loop (compiled for that call).
- :func:`call`: a loop-free piece (an attack's start, a checkpoint update) compiled the same way.
- :func:`map`, :func:`vmap`: over a leading axis as a Python loop, the function called eagerly and the results
  stacked, so that the loops inside it stay on the host.

Outside :func:`host_stepped`, or when any argument is a tracer (inside ``jit``/``vmap``/``grad``), each is exactly
the ``lax`` / ``jax.vmap`` form it names, so the attacks stay traceable into one program. Both forms run the same
operations per iteration in the same order; they differ in how XLA fuses them, so results agree to float
round-off, not bit for bit.

The mode is per thread (members attacked side by side on worker threads each set it themselves).
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp

from crobust.attacks._closure import Unseen, lift

_STATE = threading.local()


@contextlib.contextmanager
def host_stepped(on: bool = True):
    """Within the block (this thread only), attacks called with concrete arrays step their loops from the host."""
    before = getattr(_STATE, "on", False)
    _STATE.on = bool(on)
    try:
        yield
    finally:
        _STATE.on = before


def active(*trees) -> bool:
    """Host stepping is on in this thread and no leaf of ``trees`` is a tracer."""
    return getattr(_STATE, "on", False) and not any(isinstance(leaf, jax.core.Tracer)
                                                     for leaf in jax.tree.leaves(trees))


@jax.jit
def _invoke(fn, *args):
    return fn(*args)


def _lifted(fn):
    try:
        return lift(fn)
    except Unseen:
        return None


def call(fn, *args):
    """``fn(*args)``; under host stepping, as one compiled program cached by ``fn``'s code and captures."""
    if not active(args):
        return fn(*args)
    lifted = _lifted(fn)
    return fn(*args) if lifted is None else _invoke(lifted, *args)


def fori_loop(lower, upper, body, init):
    """``lax.fori_loop(lower, upper, body, init)``; under host stepping, ``upper − lower`` compiled calls of
    ``body(i, state)`` (``i`` an int32 scalar; the bounds must then be concrete)."""
    if not active(init, lower, upper):
        return jax.lax.fori_loop(lower, upper, body, init)
    lifted = _lifted(body)
    if lifted is None:
        return jax.lax.fori_loop(lower, upper, body, init)
    state = init
    for i in range(int(lower), int(upper)):
        state = _invoke(lifted, jnp.int32(i), state)
    return state


def while_loop(cond, body, init):
    """``lax.while_loop(cond, body, init)``; under host stepping, one compiled call per iteration that returns the
    next state and ``cond`` of it (read on the host before the next call)."""
    if not active(init):
        return jax.lax.while_loop(cond, body, init)
    first = _lifted(cond)
    step = _lifted(lambda state: _next_and_cond(body, cond, state))
    if first is None or step is None:
        return jax.lax.while_loop(cond, body, init)
    state, going = init, bool(_invoke(first, init))
    while going:
        state, going = _invoke(step, state)
        going = bool(going)
    return state


def _next_and_cond(body, cond, state):
    state = body(state)
    return state, cond(state)


def scan(f, init, xs):
    """``lax.scan(f, init, xs)`` (no ``length``/``reverse``); under host stepping, ``f`` is called eagerly on each
    row of ``xs`` (its own loops then step from the host), the per-row outputs stacked."""
    if not active(init, xs):
        return jax.lax.scan(f, init, xs)
    n = jax.tree.leaves(xs)[0].shape[0]
    carry, ys = init, []
    for i in range(n):
        carry, y = f(carry, jax.tree.map(lambda a: a[i], xs))
        ys.append(y)
    return carry, (None if all(y is None for y in ys) else jax.tree.map(lambda *r: jnp.stack(r), *ys))


def map(f, xs):
    """``lax.map(f, xs)``; under host stepping, ``f`` called eagerly on each row of ``xs`` (its loops step from
    the host; wrap a loop-free ``f`` in :func:`call` to run it as one program), the outputs stacked."""
    if not active(xs):
        return jax.lax.map(f, xs)
    n = jax.tree.leaves(xs)[0].shape[0]
    outs = [f(jax.tree.map(lambda a: a[i], xs)) for i in range(n)]
    return jax.tree.map(lambda *r: jnp.stack(r), *outs)


def vmap(f, in_axes=0):
    """``jax.vmap(f, in_axes)`` (outputs on axis 0); under host stepping, ``f`` on each slice in turn, stacked."""
    def mapped(*args):
        if not active(args):
            return jax.vmap(f, in_axes=in_axes)(*args)
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        n = next(a.shape[ax] for a, ax in zip(args, axes) if ax is not None)
        take = lambda a, ax, i: a if ax is None else jax.tree.map(lambda leaf: jnp.take(leaf, i, axis=ax), a)
        outs = [f(*(take(a, ax, i) for a, ax in zip(args, axes))) for i in range(n)]
        return jax.tree.map(lambda *r: jnp.stack(r), *outs)
    return mapped
