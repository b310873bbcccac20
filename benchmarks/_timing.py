"""Timing a compiled call: one warm-up call (compilation, first-touch), then ``repeats`` timed calls."""

import time

import jax


def call_times(fn, *args, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn(*args)`` after one warm-up call, each until its result is ready."""
    jax.block_until_ready(fn(*args))
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t)
    return out
