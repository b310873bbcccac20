"""How an evaluation is laid out in memory: the ε grid vmapped or looped, the points in one batch or in chunks.

:func:`crobust.evaluation.robust_flags` runs every attack at every radius of the grid on every point. Laid out as
one vmapped program, its working set is members × E × N × (bytes per point of the heaviest attack) — fine for an
MLP, tens of GB for a ResNet. The two loops that bound it, both with the same per-point results:

- ``eps_loop``: the grid runs one radius at a time (``lax.map``) instead of vmapped — the working set loses its
  factor E;
- ``point_chunk`` = C: the attacks run on C points at a time (``lax.map`` over chunks, the last one padded with
  copies of the first point and the padding dropped) — the working set holds C points instead of N.

:func:`choose_layout` picks them from a memory estimate: the whole grid vmapped when members × E × N × b fits the
budget; else the ε loop; else the ε loop and chunks of C = ⌊budget / (members × b)⌋ points. The budget is
:data:`~crobust.parallel.MEMORY_FRACTION` of the device's free memory where the device reports it
(:func:`crobust.parallel.device_free_bytes`: GPUs, TPUs), else :data:`EVAL_MEMORY_BUDGET_BYTES` (CPU).

Bytes per point, b = R × (2·a + 8·d·4): R the runs an attack keeps in flight at once on one point (APGD and PGD:
their restarts; APGD-T and FAB-T: targets × restarts; FAB: 10 × restarts, its per-class
backward passes batched; Square, FGM, ART's APGD: 1 — ART's restarts run one after another),
a the bytes of the model's intermediate values for one point (a forward pass kept for the backward one, and the
backward pass's own, ≈ 2·a), d the input size (an attack holds ~8 copies of its point in float32: the iterate, the
previous one, the gradient, the best point and its gradient, the adversarial point, the start, the projection
box). a is measured from the model itself: the bytes of every intermediate value of ``logits_fn`` traced
(``jax.make_jaxpr``, nothing compiled) on 2 points minus those on 1 point, so what does not grow with the batch
(parameters, their reshapes) drops out. It counts every intermediate XLA might fuse away, so it is an upper bound
on a forward pass and close to what a backward pass keeps.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr

from crobust import parallel
from crobust._errors import CrobustError

#: memory an evaluation may plan to use where the device reports no free memory (CPU): 2 GiB
EVAL_MEMORY_BUDGET_BYTES = 2 * 2 ** 30

#: attacks whose results depend on which other points share their batch, never chunked over points: ART's APGD
#: (its loop stops when *every* loss of the batch is exactly 0, as ART's batches of 32 do)
BATCH_COUPLED = ("apgd-art",)


def _jaxpr_bytes(jaxpr) -> int:
    """Bytes of every value an equation of ``jaxpr`` produces, sub-programs (pjit, custom_jvp, loops) included;
    an equation with a sub-program counts its inner values, not its outputs again."""
    total = 0
    for eqn in jaxpr.eqns:
        subs = [p for p in eqn.params.values() if isinstance(p, (Jaxpr, ClosedJaxpr))]
        for p in eqn.params.values():
            if isinstance(p, (tuple, list)):
                subs += [q for q in p if isinstance(q, (Jaxpr, ClosedJaxpr))]
        if subs:
            total += sum(_jaxpr_bytes(s.jaxpr if isinstance(s, ClosedJaxpr) else s) for s in subs)
            continue
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
    return total


def activation_bytes(logits_fn, x) -> int:
    """Bytes of the intermediate values of ``logits_fn`` per point (traced on 2 points minus 1 point; see the
    module docstring). ``x`` (N, ...) supplies the point shape and dtype."""
    one = jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)
    two = jax.ShapeDtypeStruct((2,) + tuple(x.shape[1:]), x.dtype)
    b1 = _jaxpr_bytes(jax.make_jaxpr(logits_fn)(one).jaxpr)
    b2 = _jaxpr_bytes(jax.make_jaxpr(logits_fn)(two).jaxpr)
    return max(b2 - b1, 0)


def runs_in_flight(name: str, kwargs) -> int:
    """Runs attack ``name`` keeps in flight on one point at once (module docstring)."""
    if name in ("apgd-ce", "apgd-dlr", "pgd"):
        return int(kwargs.get("n_restarts", 1))
    if name == "fab":
        # its C cotangents' backward passes are batched in one step (C taken as 10, this repo's datasets)
        return 10 * int(kwargs.get("n_restarts", 1))
    if name in ("apgd-t", "fab-t"):
        return int(kwargs.get("n_target_classes", 9)) * int(kwargs.get("n_restarts", 1))
    return 1


def point_bytes(activation: int, input_size: int, runs: int) -> int:
    """b = R × (2·a + 8·d·4): bytes one point of an attack needs (module docstring)."""
    return int(runs) * (2 * int(activation) + 8 * 4 * int(input_size))


def memory_budget() -> int:
    """The bytes an evaluation may plan to use: MEMORY_FRACTION of the device's free memory, else
    :data:`EVAL_MEMORY_BUDGET_BYTES`."""
    free = parallel.device_free_bytes()
    return EVAL_MEMORY_BUDGET_BYTES if free is None else int(parallel.MEMORY_FRACTION * free)


def choose_layout(per_point: int, n_points: int, n_eps: int, members: int = 1, budget: int | None = None):
    """``(eps_loop, point_chunk)`` for an evaluation of ``members`` models in parallel (module docstring).

    Args:
      per_point: bytes one point needs (:func:`point_bytes`);  n_points: N;  n_eps: E;  members: models attacked
        at once (1 where members are looped);  budget: bytes (default :func:`memory_budget`).

    Returns:
      (False, None) when members·E·N·b ≤ budget; (E > 1, None) when members·N·b ≤ budget; else
      (E > 1, C) with C = ⌊budget / (members·b)⌋ < N. Raises a one-line CrobustError when one point of every
      member does not fit.
    """
    budget = memory_budget() if budget is None else int(budget)
    per_point, members = max(int(per_point), 1), max(int(members), 1)
    if members * n_eps * n_points * per_point <= budget:
        return False, None
    eps_loop = n_eps > 1
    if members * n_points * per_point <= budget:
        return eps_loop, None
    chunk = budget // (members * per_point)
    if chunk < 1:
        raise CrobustError(f"one evaluation point of {members} member(s) needs ~{members * per_point / 2 ** 30:.2f} "
                           f"GiB but the budget is {budget / 2 ** 30:.2f} GiB: evaluate fewer members at once, fewer "
                           f"attack restarts/targets, or use a device with more memory")
    return eps_loop, int(min(chunk, n_points))


def check_layout(eps_loop, point_chunk):
    """Validate the explicit overrides: ``eps_loop`` 'auto' or a bool, ``point_chunk`` 'auto', None or an int ≥ 1."""
    if not (eps_loop == "auto" or isinstance(eps_loop, (bool, np.bool_))):
        raise CrobustError(f"eps_loop must be 'auto', True or False, got {eps_loop!r}")
    if not (point_chunk is None or point_chunk == "auto" or
            (isinstance(point_chunk, (int, np.integer)) and not isinstance(point_chunk, bool) and point_chunk >= 1)):
        raise CrobustError(f"point_chunk must be 'auto', None or a positive integer, got {point_chunk!r}")


def resolve_layout(eps_loop, point_chunk, logits_fn, x, specs, n_eps: int, members: int = 1,
                   budget: int | None = None):
    """The (eps_loop, point_chunk) an evaluation runs with: explicit values kept, ``'auto'`` ones chosen by
    :func:`choose_layout` from the model's bytes per point (its heaviest attack of ``specs``, validated
    ``(name, fn, kwargs)`` triples) against ``budget`` (default :func:`memory_budget`)."""
    check_layout(eps_loop, point_chunk)
    if eps_loop != "auto" and point_chunk != "auto":
        return bool(eps_loop), (None if point_chunk is None else int(point_chunk))
    runs = max(runs_in_flight(name, kw) for name, _, kw in specs)
    b = point_bytes(activation_bytes(logits_fn, x), math.prod(x.shape[1:]), runs)
    auto_loop, auto_chunk = choose_layout(b, int(x.shape[0]), n_eps, members, budget)
    return (auto_loop if eps_loop == "auto" else bool(eps_loop),
            auto_chunk if point_chunk == "auto" else (None if point_chunk is None else int(point_chunk)))


__all__ = ["EVAL_MEMORY_BUDGET_BYTES", "BATCH_COUPLED", "activation_bytes", "runs_in_flight", "point_bytes",
           "memory_budget", "choose_layout", "check_layout", "resolve_layout"]
