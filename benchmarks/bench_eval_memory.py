"""Benchmark (issue 13, item 10): the evaluation's memory in its vmapped and its looped/chunked layout.

What is measured: the compiled population evaluation program (``crobust.evaluation._run_population``, the
program :func:`crobust.evaluation.population_robust_accuracy` runs) of a ResNet-18 (CIFAR stem, 32×32×3 inputs,
batch norm in eval mode) under APGD-CE + APGD-T (9 targets), for N points and an ε grid of E radii, lowered from
shapes alone (nothing is allocated or run) and compiled; XLA's ``memory_analysis()`` of each compiled program
gives its temporary working set (``temp_size_in_bytes``) beside its arguments and outputs. Layouts: the grid
vmapped and all points at once (the default for a model that fits) against the grid looped and the points in
chunks of C. ``auto`` is what :func:`crobust.evaluation_layout.resolve_layout` picks for this model against the
memory budget, with its per-point estimate b, so the estimate can be read against XLA's figure
(temp_vmapped / (E·N) is XLA's bytes per point and radius).

Target: the looped/chunked program's working set ≤ 1/4 of the vmapped one's at E = 6 (it should shrink by about
E·N/C; XLA keeps some N-sized buffers: the points, the starts, the outputs). ``--quick``: width 16, one block per
stage, E = 3, N = 64, C = 16. Full: ResNet-18 at width 64 (11.2 M parameters), E = 6, N = 256, C = 32 (N ≤ 300 so
that the attacks' own CPU chunking does not hide the vmapped baseline). Compile times on a loaded shared machine
are not final figures. Run: ``python -m benchmarks.bench_eval_memory [--quick]`` or
``python -m benchmarks --only eval_memory``.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp

import crobust.evaluation as E
from benchmarks._machine import describe
from crobust import evaluation_layout as L
from crobust.models import ResNet18
from crobust.training.population import EvalApply

TARGET_SHRINK = 0.25


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    return {k: int(getattr(m, k)) for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                                            "generated_code_size_in_bytes") if hasattr(m, k)}


def run(quick: bool = False) -> dict:
    width, stages, n_eps, n, chunk = (16, (1, 1, 1, 1), 3, 64, 16) if quick else (64, (2, 2, 2, 2), 6, 256, 32)
    model = ResNet18(10, stem="cifar", width=width, stage_sizes=stages)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    members = 1
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct((members,) + s.shape, s.dtype), shapes)
    keys = jax.ShapeDtypeStruct((members,), jax.random.key(0).dtype)
    x = jax.ShapeDtypeStruct((n, 32, 32, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    eps = jax.ShapeDtypeStruct((n_eps,), jnp.float32)
    attacks = (("apgd-ce", {"n_iter": 100}), ("apgd-t", {"n_iter": 100, "n_target_classes": 9}))
    specs = E._attack_specs(attacks, 10)
    apply_fn = EvalApply(model)
    out = {"machine": describe(), "model": f"ResNet18(width={width}, stage_sizes={stages}, stem='cifar')",
           "points": n, "eps_grid": n_eps, "members": members, "attacks": "APGD-CE (100) + APGD-T (9 targets × 100)"}

    concrete = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), params)        # for the estimate only
    a = L.activation_bytes(jax.tree_util.Partial(apply_fn, concrete), jnp.zeros((n, 32, 32, 3)))
    b = L.point_bytes(a, 32 * 32 * 3, max(L.runs_in_flight(nm, kw) for nm, _, kw in specs))
    out["estimate"] = {"activation_bytes_per_point": a, "bytes_per_point": b,
                       "auto_layout_2GiB": L.choose_layout(b, n, n_eps, members, L.EVAL_MEMORY_BUDGET_BYTES),
                       "budget_bytes": L.memory_budget()}

    layouts = {}
    for name, (eps_loop, point_chunk) in (("vmapped", (False, None)), ("looped_chunked", (True, chunk)),
                                          ("looped", (True, None))):
        t = time.perf_counter()
        lowered = E._run_population.lower(params, keys, x, y, eps, apply_fn=apply_fn, norm="linf",
                                          frozen=E._freeze(specs), adv_index=(), eps_loop=eps_loop,
                                          point_chunk=point_chunk)
        compiled = lowered.compile()
        layouts[name] = {"eps_loop": eps_loop, "point_chunk": point_chunk, "compile_s": time.perf_counter() - t,
                         **_memory(compiled)}
        print(f"  {name}: {layouts[name]}", file=sys.stderr, flush=True)
    out["layouts"] = layouts
    temp = {k: v.get("temp_size_in_bytes") for k, v in layouts.items()}
    targets = {}
    if temp["vmapped"]:
        shrink = temp["looped_chunked"] / temp["vmapped"]
        out["xla_bytes_per_point_and_radius_vmapped"] = temp["vmapped"] / (n * n_eps)
        targets[f"looped+chunked temp memory / vmapped, E={n_eps}, N={n}, C={chunk}"] = {
            "value": shrink, "target": TARGET_SHRINK, "met": shrink <= TARGET_SHRINK}
    else:
        targets["looped+chunked temp memory / vmapped"] = {"value": "not measured: no memory analysis on "
                                                           f"{jax.default_backend()}", "target": TARGET_SHRINK,
                                                           "met": None}
    out["targets"] = targets
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
