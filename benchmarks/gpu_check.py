"""``make gpu-check``: the accelerator check in one command — test suite, ``make reproduce PRESET=small`` and the
accelerator benchmarks, within a time budget, summarised in one JSON file.

Usage::

    python -m benchmarks.gpu_check [--out bench/gpu_check.json] [--budget-s 480] [--all-studies] [--resnet]
                                   [--cpu-dry-run]

Phases (each a subprocess with its own time limit, so a hang or a crash is recorded, not fatal; the limits add up to
the budget, default 480 s = 8 minutes, plus 600 s with ``--all-studies`` and 240 s with ``--resnet``):

1. ``bench`` (≤ 150 s): :mod:`benchmarks.bench_spectral` (nuclear-norm step ÷ unpenalised step at 35 × 400×784;
   batched SVD vs Gram ``eigvalsh`` vs Newton–Schulz polar at 24×64×64, 35×400×784, 8×2000×2000) and the big-MLP
   step against its roofline (:func:`benchmarks.bench_scaling.big_mlp_report`, float32 and tf32);
2. ``reproduce`` (≤ 150 s): ``python -m experiments.reproduce --preset small --studies spectral_fixed_scale`` (the
   motivating study) into a temporary folder, its wall time against the same command on an idle 2-core CPU
   (:data:`CPU_REFERENCE_S`; issue 12's target: faster on the accelerator), with the seconds JAX spent tracing,
   lowering and compiling (:func:`compile_stats`); with ``--all-studies`` every study
   (``make reproduce PRESET=small``, ≤ 600 s more);
2b. ``resnet`` (``--resnet``, ≤ 240 s): issue 13's ResNet-18 population target
   (:func:`benchmarks.bench_training.resnet18_throughput`);
3. ``tests`` (the rest, ≥ 200 s): ``pytest`` over every module of ``tests/``, :data:`FIRST_TESTS` first, in
   :func:`xdist_workers` pytest-xdist workers with a JUnit XML, from which passed / failed / skipped counts and the
   failing tests' names are read. At the budget's end pytest gets SIGINT and 45 s to write the report of the tests
   that ran (``tests.complete: false``).

Before any phase it checks that this interpreter meets crobust's requirements (:mod:`benchmarks.device_env`) and
refuses with one line naming what is missing. On a machine with no network whose image has JAX but not
tensorflow-datasets, ``make device-wheels`` (where there is a network) and ``sh benchmarks/gpu_check_device.sh``
(there) bring the rest; the README's "Scaling out" says how.

The summary (``bench/gpu_check.json``): device kind and count, jax and jaxlib versions, every phase's return code,
wall time and whether it timed out, the tests' counts, the reproduce wall time, the benchmarks' figures and
targets, and the total wall time against the budget.

On a CPU it refuses with one line and exit status 2; ``--cpu-dry-run`` runs the same machinery at toy sizes
(tests/test_precision.py only, the ``smoke`` preset, quick benchmarks) to check the script itself, and says so in
the JSON (``dry_run: true``) — its figures are not accelerator figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

from benchmarks import device_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = ("import json, jax, jaxlib; d = jax.devices(); print(json.dumps({'backend': jax.default_backend(), "
          "'device_kind': d[0].device_kind, 'device_count': len(d), 'jax': jax.__version__, "
          "'jaxlib': jaxlib.__version__}))")

# `make reproduce PRESET=small` on an idle 2-core CPU (AMD EPYC, jax 0.10.2, fresh clone, empty compilation cache):
# the motivating study alone and all six studies, wall seconds.
CPU_REFERENCE_S = {"spectral_fixed_scale": 137.0, "all": 756.0}
# The motivating study's small preset on the same CPU with the compilation cache off (CROBUST_CACHE_DIR=off,
# JAX_LOG_COMPILES=1; :func:`compile_stats`): 102 compilations, 8.5 s tracing, 3.9 s lowering, 49.6 s compiling.
CPU_REFERENCE_STAGES = {"spectral_fixed_scale": {"compiles": 102, "trace_s": 8.5, "lower_s": 3.9, "compile_s": 49.6}}

# The test phase runs these modules first (:func:`tests_in_order`), so that a run cut at the budget has covered where
# issue 12 saw GPU failures: precision, the models' products, the nuclear norm's VJP, Theorem 3.1's check on a
# trained head, the literal AutoAttack port, population vs member-alone training, the convnet trainers, the
# evaluation layouts and the sharded population.
FIRST_TESTS = ["tests/test_precision.py", "tests/test_models.py", "tests/test_regularizers.py",
               "tests/test_metrics_bounds.py", "tests/test_attacks_mlp.py", "tests/test_training.py",
               "tests/test_training_cnn.py", "tests/test_evaluation_layout.py", "tests/test_parallel.py"]


def tests_in_order() -> list[str]:
    """Every test module, :data:`FIRST_TESTS` first, then the rest in name order (pytest keeps the command line's
    order of files; a directory argument would be collected in name order whatever came before it)."""
    rest = sorted(f"tests/{f}" for f in os.listdir(os.path.join(ROOT, "tests"))
                  if f.startswith("test_") and f.endswith(".py"))
    return [f for f in FIRST_TESTS if f in rest] + [f for f in rest if f not in FIRST_TESTS]


_RESNET = """
import json
from benchmarks import bench_training
print("GPU_CHECK_JSON " + json.dumps({"resnet18": bench_training.resnet18_throughput()}, default=str))
"""

_BENCH = """
import json, sys
from benchmarks import bench_scaling, bench_spectral
quick = sys.argv[1] == "1"
print("GPU_CHECK_JSON " + json.dumps({"spectral": bench_spectral.run(quick=quick)}, default=str), flush=True)
big, targets = bench_scaling.big_mlp_report(quick=quick)
print("GPU_CHECK_JSON " + json.dumps({"roofline": {**big, "targets": targets}}, default=str), flush=True)
"""


def _json_lines(stdout: str) -> dict | None:
    """The merged ``GPU_CHECK_JSON {...}`` lines a phase printed (each part as soon as it was measured, so a phase
    cut at its time limit keeps what it finished), or None if it printed none."""
    parts = [json.loads(x[len("GPU_CHECK_JSON "):]) for x in stdout.splitlines() if x.startswith("GPU_CHECK_JSON ")]
    return {k: v for part in parts for k, v in part.items()} if parts else None


@contextlib.contextmanager
def _sigint_not_ignored():
    """While a child is started: SIGINT handled, not ignored, in this process. A process a shell started in the
    background (``cmd &``, ``nohup``) ignores SIGINT, an ignored signal stays ignored through ``exec``, and the
    child would never see the interrupt; a handled one is reset to the default there."""
    ignored = (signal.getsignal(signal.SIGINT) == signal.SIG_IGN
               and threading.current_thread() is threading.main_thread())
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(cmd, timeout: float, env=None, interrupt_grace_s: float | None = None) -> dict:
    """Run ``cmd`` for at most ``timeout`` s. At the limit it gets SIGINT and ``interrupt_grace_s`` more seconds to
    finish (pytest then writes its JUnit report of the tests that ran), then its whole process group is killed."""
    t = time.perf_counter()
    with _sigint_not_ignored():
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        if interrupt_grace_s:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=interrupt_grace_s or 0.1)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    finally:
        try:                                 # stray children (pytest-xdist workers) go with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"rc": None if timed_out else proc.returncode, "timed_out": timed_out,
            "wall_s": round(time.perf_counter() - t, 1), "stdout": out or "", "stderr": err or "",
            "limit_s": round(timeout, 1)}


def xdist_workers(on_accelerator: bool, cores: int | None = None) -> int:
    """pytest-xdist workers for the test phase: none on a CPU dry run; on an accelerator machine one per two of its
    cores, 2 to 8 (tracing and compiling are single-threaded per process; each worker allocates GPU memory on
    demand, tests/conftest.py)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    return max(2, min(8, cores // 2)) if on_accelerator else 0


_STAGES = {"trace_s": re.compile(r"Finished tracing .* in ([0-9.eE+-]+) sec"),
           "lower_s": re.compile(r"Finished jaxpr to MLIR module conversion .* in ([0-9.eE+-]+) sec"),
           "compile_s": re.compile(r"Finished XLA compilation of .* in ([0-9.eE+-]+) sec")}


def compile_stats(log: str) -> dict:
    """Seconds spent tracing, lowering and compiling, and the number of XLA compilations, summed from the lines
    ``JAX_LOG_COMPILES=1`` makes JAX log (every process that wrote to ``log``): how much of a run's wall time
    is compilation, which on a fresh accelerator machine (empty compilation cache) can exceed the computing."""
    out = {k: 0.0 for k in _STAGES}
    out["compiles"] = 0
    for line in log.splitlines():
        for key, pattern in _STAGES.items():
            m = pattern.search(line)
            if m:
                out[key] += float(m.group(1))
                out["compiles"] += key == "compile_s"
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def _junit_counts(path: str) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {"parsed": False}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failures = sum(int(s.get("failures", 0)) for s in suites)
    errors = sum(int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {"parsed": True, "total": total, "passed": total - failures - errors - skipped, "failed": failures,
            "errors": errors, "skipped": skipped, "failed_tests": failed}


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    p.add_argument("--out", default=os.path.join("bench", "gpu_check.json"))
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--all-studies", action="store_true", help="reproduce every study (small), not just the first")
    p.add_argument("--resnet", action="store_true", help="also issue 13's ResNet-18 population benchmark")
    p.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on a CPU, to check this script")
    args = p.parse_args(argv)
    args.budget_s += (600.0 if args.all_studies else 0.0) + (240.0 if args.resnet else 0.0)
    py = sys.executable
    t0 = time.perf_counter()

    problems = device_env.unsatisfied(device_env.project_requirements())
    if problems:
        print(f"gpu-check: crobust's requirements are not met by {py}: {', '.join(problems)} (on a machine "
              f"without a network, carry the wheels of `make device-wheels` and run benchmarks/gpu_check_device.sh)",
              file=sys.stderr)
        return 2

    probe = _run([py, "-c", _PROBE], timeout=120)
    if probe["rc"] != 0:
        print(f"gpu-check: cannot start JAX: {_tail(probe['stderr'], 300).strip()}", file=sys.stderr)
        return 2
    device = json.loads(probe["stdout"].strip().splitlines()[-1])
    on_accel = device["backend"] in ("gpu", "tpu")
    if not on_accel and not args.cpu_dry_run:
        print(f"gpu-check: no GPU/TPU here (JAX backend {device['backend']!r}); run it on an accelerator, or "
              f"`python -m benchmarks.gpu_check --cpu-dry-run` to exercise the script", file=sys.stderr)
        return 2
    dry = not on_accel
    summary: dict = {"device": device, "dry_run": dry, "budget_s": args.budget_s, "phases": {}}
    left = lambda: args.budget_s - (time.perf_counter() - t0)

    # 1. benchmarks
    b = _run([py, "-c", _BENCH, "1" if dry else "0"], timeout=min(400.0 if dry else 150.0, left()))
    bench = _json_lines(b["stdout"])
    summary["phases"]["bench"] = {k: b[k] for k in ("rc", "timed_out", "wall_s", "limit_s")}
    if b["rc"] != 0:
        summary["phases"]["bench"]["stderr_tail"] = _tail(b["stderr"])
    summary["bench"] = bench

    # 2. reproduce
    with tempfile.TemporaryDirectory(prefix="gpu_check_reports_") as tmp:
        preset = "smoke" if dry else "small"
        which = "all" if args.all_studies else "spectral_fixed_scale"
        studies = [] if args.all_studies else ["--studies", which]
        r = _run([py, "-m", "experiments.reproduce", "--preset", preset, *studies, "--out", tmp, "--quiet"],
                 timeout=min(750.0 if args.all_studies else 150.0, left() - 60),
                 env={**os.environ, "JAX_LOG_COMPILES": "1"})
    summary["phases"]["reproduce"] = {k: r[k] for k in ("rc", "timed_out", "wall_s", "limit_s")}
    summary["phases"]["reproduce"].update(preset=preset, studies=which)
    if r["rc"] != 0:
        summary["phases"]["reproduce"]["stderr_tail"] = _tail(r["stderr"])
    wall = None if dry or r["rc"] != 0 else r["wall_s"]
    summary["reproduce_small"] = {"studies": which, "wall_s": wall, "cpu_reference_s": CPU_REFERENCE_S[which],
                                  "faster_than_cpu": None if wall is None else wall < CPU_REFERENCE_S[which],
                                  "jax_stages": compile_stats(r["stderr"]),
                                  "cpu_reference_stages": CPU_REFERENCE_STAGES.get(which)}

    # 2b. the ResNet-18 population target (issue 13)
    if args.resnet:
        rn = _run([py, "-c", _RESNET], timeout=min(240.0, left() - 60))
        summary["phases"]["resnet"] = {k: rn[k] for k in ("rc", "timed_out", "wall_s", "limit_s")}
        summary["resnet18"] = (_json_lines(rn["stdout"]) or {}).get("resnet18")
        if rn["rc"] != 0:
            summary["phases"]["resnet"]["stderr_tail"] = _tail(rn["stderr"])

    # 3. tests: what is left of the budget; at the limit pytest is interrupted and the tests that ran are counted
    with tempfile.TemporaryDirectory(prefix="gpu_check_junit_") as tmp:
        junit = os.path.join(tmp, "junit.xml")
        targets = ["tests/test_precision.py"] if dry else tests_in_order()
        workers = xdist_workers(on_accel)
        xdist = ["-n", str(workers), "--dist", "loadscope"] if workers else []
        grace = 45.0
        tr = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist, f"--junitxml={junit}", *targets],
                  timeout=max(left() - grace - 5, 1), interrupt_grace_s=grace)
        counts = _junit_counts(junit)
    summary["phases"]["tests"] = {k: tr[k] for k in ("rc", "timed_out", "wall_s", "limit_s")}
    summary["phases"]["tests"]["workers"] = workers
    if not counts.get("parsed"):
        summary["phases"]["tests"]["stdout_tail"] = _tail(tr["stdout"])
    counts["complete"] = bool(counts.get("parsed")) and not tr["timed_out"]
    summary["tests"] = counts

    summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
    summary["within_budget"] = summary["total_wall_s"] <= args.budget_s
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    ok = (tr["rc"] == 0 and r["rc"] == 0 and b["rc"] == 0 and summary["within_budget"])
    print(f"gpu-check: {device['device_count']} × {device['device_kind']} ({device['backend']}), tests "
          f"{counts.get('passed', '?')} passed / {counts.get('failed', '?')} failed / {counts.get('errors', '?')} "
          f"errors{'' if counts['complete'] else ' (INCOMPLETE: interrupted at the budget)'}, "
          f"reproduce {preset} {r['wall_s']} s (rc {r['rc']}), total {summary['total_wall_s']} s "
          f"of {args.budget_s:.0f} s{' [CPU DRY RUN]' if dry else ''} → {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
