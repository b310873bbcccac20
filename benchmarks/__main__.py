"""``python -m benchmarks [--quick] [--only NAME,...] [--out bench/results.json]``: run every benchmark.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> dict`` whose ``targets`` entry maps a target
name to ``{"value", "target", "met"}``. The harness runs them in turn (a failing benchmark is recorded, not fatal),
writes all results with machine information to ``bench/results.json`` and prints a table of targets.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback

import jax

from benchmarks._machine import cpu_model
from crobust.records import write_json


def machine_info() -> dict:
    devices = jax.devices()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [d.device_kind for d in devices],
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def discover() -> list[str]:
    here = os.path.dirname(__file__)
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds each)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(discover())}")
    p.add_argument("--out", default=os.path.join("bench", "results.json"))
    args = p.parse_args(argv)
    names = discover()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"error: unknown benchmark(s) {unknown}; valid: {', '.join(names)}", file=sys.stderr)
            return 2
        names = wanted
    results = {"machine": machine_info(), "quick": args.quick, "benchmarks": {}}
    for name in names:
        print(f"== bench {name}", flush=True)
        t = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            res = module.run(quick=args.quick)
            res["wall_time_s"] = round(time.perf_counter() - t, 1)
        except Exception as e:
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}", "wall_time_s": round(time.perf_counter() - t, 1)}
        results["benchmarks"][name] = res
        write_json(args.out, results)          # after each benchmark, so a kill keeps what finished
    print(f"\nresults: {args.out}\n")
    print(f"{'benchmark':<12} {'target':<58} {'value':>12} {'target':>10}  met")
    for name, res in results["benchmarks"].items():
        if "error" in res:
            print(f"{name:<12} ERROR {res['error']}")
            continue
        for tname, t in res.get("targets", {}).items():
            v, tg, met = t.get("value"), t.get("target"), t.get("met")
            fmt = lambda x: f"{x:.3g}" if isinstance(x, (int, float)) else str(x)
            print(f"{name:<12} {tname:<58} {fmt(v):>12} {fmt(tg):>10}  {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
