"""Re-run every study that exists and write one report per study plus an index of the paper's claims C1–C11.

    python -m experiments.reproduce [--preset auto|smoke|small|paper] [--studies a,b] [--out reports] [--jobs auto|N]

``--preset auto`` (the default, what ``make reproduce`` uses) picks ``paper`` when JAX sees an accelerator and
``small`` on a CPU, and prints which and why. Each study writes to ``<out>/<preset>/<study>/``; the index
``<out>/<preset>/index.md`` lists every claim C1–C11 of docs/paper.md §5 with the verdicts of each study that
tests it (its primary claims, then its secondary ones; a study's checks are listed apart and never counted),
or "not covered yet" with the study that will, and the parts of a claim no study here can test and why
(:mod:`crobust.study.catalog`), then every study with its verdicts. A study whose data is missing is marked
*skipped* with the one-line reason (which dataset, where it was looked for, how to get it); it never falls back to
other data. Each study runs in a process of its own (on a multi-host run: in this process, one after another), so
its compiled programs are released when it ends, and ``--jobs`` of them run side by side (``auto``: two on a CPU
with two or more cores for ``small`` and ``smoke``, else one; :func:`resolve_jobs`), each line of their progress
prefixed with the study's name; two studies that share a population (``Study.source_studies``) never run at once.
Ctrl-C stops the running studies as interrupted runs, their finished work checkpointed, and writes no index (exit
130; the same command resumes them). Exit status otherwise: 0 when every study completed or was skipped for
missing data, 1 if any failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

# The children inherit this environment as it was at start; this (parent) process only asks JAX which backend it
# has, so on a GPU it must not preallocate the device memory the children need.
_CHILD_ENV = dict(os.environ)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax

from crobust._errors import CrobustError, check_choice
from crobust.data import DataMissingError
from crobust.parallel import distributed_requested, host_cores, host_threads, maybe_initialize_distributed
from crobust.records import atomic_write_text, is_writer, write_json
from crobust.study import catalog
from crobust.study.cli import enable_compilation_cache
from crobust.study.side_by_side import run_side_by_side
from crobust.study.runner import check_workdir
from experiments import STUDIES

PRESETS = ("auto", "smoke", "small", "paper")


def choose_preset(preset: str) -> tuple[str, str]:
    """(preset, reason) — ``auto`` resolves to ``paper`` on an accelerator and ``small`` on a CPU."""
    if preset != "auto":
        return preset, "forced with --preset"
    backend = jax.default_backend()
    if backend in ("gpu", "tpu", "cuda", "rocm"):
        devices = jax.devices()
        return "paper", f"auto: JAX backend is {backend} ({len(devices)} × {devices[0].device_kind})"
    return "small", f"auto: no accelerator found (JAX backend is {backend}); the paper preset needs a GPU or TPU"


def registered_coverage() -> dict:
    """{claim id: [registered studies that test it]}, from each study's ``paper_claims``."""
    out: dict = {}
    for name, module in STUDIES.items():
        for cid in importlib.import_module(module).STUDY.paper_claims:
            out.setdefault(cid, []).append(name)
    return out


def index_lines(preset: str, why: str, results: list[dict], coverage: dict | None = None) -> list[str]:
    """``index.md``: every claim C1–C11 with its verdicts (or why it has none), then every study's verdicts.
    ``coverage`` ({claim: registered studies}) names the studies that test a claim but were not run."""
    coverage = registered_coverage() if coverage is None else coverage
    lines = [f"# crobust reproduction — preset `{preset}`", "", f"Preset: {why}.", "",
             f"Studies run: {len(results)} ({', '.join(r['study'] for r in results)}). The paper's claims "
             f"(docs/paper.md §5) and what these runs say of each:", "",
             "| claim | the paper says | verdicts here |", "|---|---|---|"]
    for cid, text in catalog.CLAIMS.items():
        found = []
        for r in results:
            if cid not in r.get("paper_claims", []):
                continue
            if r["status"] != "complete":
                found.append(f"{r['study']}: {r['status']}")
                continue
            found.append(f"{r['study']}: {claim_tally(r['claims'], cid)}")
        if not found and coverage.get(cid):
            found = [f"not run here — tested by {', '.join(coverage[cid])}"]
        elif not found:
            found = [f"not covered yet — {catalog.PLANNED.get(cid, 'no study planned')}"]
        if cid in catalog.NOT_COVERED:
            found.append(f"not covered: {catalog.NOT_COVERED[cid]}")
        lines.append(f"| {cid} | {text} | {'; '.join(found)} |")
    lines.append("")
    for r in results:
        lines.append(f"## {r['title']} — {r['status']} ({r['wall_time_s']} s)")
        lines.append("")
        if r["status"] == "complete":
            lines.append(f"Report: [{r['study']}/report.md]({r['study']}/report.md)")
            lines.append("")
            lines += r["verdicts"]
            if r.get("checks"):
                lines += ["", "Checks (not counted above):", "", *r["checks"]]
        else:
            lines.append(f"{r['status']}: {r['reason']}")
        lines.append("")
    return lines


def claim_tally(claims: list[dict], cid: str) -> str:
    """The verdicts of one study on paper claim ``cid``: its primary claims, then its secondary ones; checks (the
    manipulation worked, an inequality that holds by construction) are never counted."""
    parts = []
    for family in ("primary", "secondary"):
        tally: dict = {}
        for c in claims:
            if c["paper"] == cid and c.get("family", "secondary") == family:
                tally[c["verdict"]] = tally.get(c["verdict"], 0) + 1
        if tally:
            parts.append(", ".join(f"{n} {v}" for v, n in tally.items()) + f" ({family})")
    return "; ".join(parts) or "checks only"


def run_one(name: str, preset: str, workdir: str, progress: bool) -> dict:
    """Run one study in this process; its index entry (status complete / skipped for missing data / failed)."""
    study = importlib.import_module(STUDIES[name]).STUDY
    entry = {"study": name, "title": study.title, "workdir": workdir, "paper_claims": list(study.paper_claims)}
    try:
        out = study.run(study.presets[preset], workdir, preset=preset, progress=progress)
        entry.update(status="complete", verdicts=[v.line() for v in out["verdicts"] if v.family != "check"],
                     checks=[v.line() for v in out["verdicts"] if v.family == "check"],
                     claims=[{"paper": v.paper, "text": v.text, "verdict": v.verdict, "family": v.family}
                             for v in out["verdicts"]])
    except DataMissingError as e:
        print(f"skipped {name}: {e}", flush=True)
        entry.update(status="skipped", reason=str(e))
    except CrobustError as e:
        print(f"error: {name}: {e}", file=sys.stderr, flush=True)
        entry.update(status="failed", reason=str(e))
    except Exception as e:  # keep going: one broken study must not cost the others
        print(f"FAILED {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        entry.update(status="failed", reason=f"{type(e).__name__}: {e}")
    return entry


def resolve_jobs(jobs: str, preset: str) -> tuple[int, str]:
    """(how many studies run side by side, why). ``auto``: two on a CPU with at least two cores for ``small`` and
    ``smoke`` — one study keeps the two cores of the machine ``small`` is sized for about four-fifths busy (its
    compilations, its small programs and its host loops leave gaps that a second study fills; measured in
    docs/measurements.md §3) — and one otherwise: an accelerator is one device the studies would share, and a
    ``paper`` study on a CPU needs much of the host's memory."""
    if jobs != "auto":
        return int(jobs), "set with --jobs"
    backend = jax.default_backend()
    if backend != "cpu":
        return 1, f"auto: the {backend} device is shared, one study at a time"
    if preset == "paper":
        return 1, "auto: the paper preset on a CPU, one study at a time for memory"
    cores = host_cores()
    if cores < 2:
        return 1, "auto: one core"
    return 2, f"auto: {cores} CPU cores, two studies side by side"


def child_command(name: str, preset: str, args, result: str) -> list:
    """The command that runs study ``name`` alone in a fresh Python process and writes its index entry to
    ``result`` (``--child-result``). One process per study releases its compiled programs and memory before the next
    (a single process that compiled every study's programs could exhaust the operating system's memory-map limit)."""
    return [sys.executable, "-m", "experiments.reproduce", "--preset", preset, "--studies", name,
            "--out", args.out, "--child-result", result] + (["--quiet"] if args.quiet else [])


def child_entry(name: str, workdir: str, code: int, result: str) -> dict:
    """The index entry a child wrote to ``result``; a child that exited without one is recorded as failed, or as
    interrupted where it exited with 130."""
    if os.path.exists(result):
        with open(result, encoding="utf-8") as f:
            return json.load(f)
    study = importlib.import_module(STUDIES[name]).STUDY
    if code != 130:                                     # 130: interrupted, and the child has said so
        print(f"FAILED {name}: its process exited with status {code} without a result", file=sys.stderr, flush=True)
    return {"study": name, "title": study.title, "workdir": workdir, "paper_claims": list(study.paper_claims),
            "status": "interrupted" if code == 130 else "failed",
            "reason": f"the study's process exited with status {code}"}


def run_children(studies: list, preset: str, args, root: str, jobs: int) -> list:
    """Every study in a child process, ``jobs`` at a time (:func:`crobust.study.side_by_side.run_side_by_side`;
    two studies sharing a population never together); their index entries in the order of ``studies``."""
    sources = {name: tuple(importlib.import_module(STUDIES[name]).STUDY.source_studies) for name in studies}
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: os.path.join(tmp, f"{name}.json") for name in studies}

        def on_start(name):
            print(f"\n== {name} ({preset}) → {os.path.join(root, name)}", flush=True)

        def on_exit(name, code, seconds):
            entry = child_entry(name, os.path.join(root, name), code, result[name])
            entry["wall_time_s"] = round(seconds, 1)
            if jobs > 1:
                print(f"== {name}: {entry['status']} ({seconds:.0f} s)", flush=True)
            return entry

        done = run_side_by_side(studies, jobs, lambda name: child_command(name, preset, args, result[name]),
                                on_exit, sources=sources, on_start=on_start, env=_CHILD_ENV)
    return [done[name] for name in studies]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="auto", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated subset of: {', '.join(STUDIES)}")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--jobs", default="auto",
                   help="studies run side by side, each in its own process (default auto: 2 on a CPU with at least "
                        "2 cores for small and smoke, else 1)")
    p.add_argument("--distributed", action="store_true", default=None,
                   help="multi-host run: call jax.distributed.initialize() first (same as CROBUST_DISTRIBUTED=1)")
    p.add_argument("--child-result", default=None, help=argparse.SUPPRESS)   # internal: one study, entry → file
    args = p.parse_args(argv)
    try:
        maybe_initialize_distributed(args.distributed)   # before anything touches a device
        check_choice("preset", args.preset, PRESETS)
        studies = [s.strip() for s in args.studies.split(",") if s.strip()]
        for s in studies:
            check_choice("study", s, tuple(STUDIES))
        if args.jobs != "auto" and (not args.jobs.isdigit() or int(args.jobs) < 1):
            raise CrobustError(f"--jobs must be auto or a positive integer, got {args.jobs!r}")
        if args.jobs not in ("auto", "1") and distributed_requested(args.distributed):
            raise CrobustError("--jobs: a multi-host run runs its studies one after another on every host")
        check_workdir(args.out)
        host_threads()                    # a bad $CROBUST_HOST_THREADS is refused before anything is written
    except CrobustError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preset, why = choose_preset(args.preset)
    enable_compilation_cache()
    if not args.child_result:
        print(f"crobust reproduce: preset {preset} ({why}); studies: {', '.join(studies)}", flush=True)
    root = os.path.join(args.out, preset)
    t0 = time.perf_counter()
    distributed = distributed_requested(args.distributed)
    if args.child_result or distributed:
        results = []
        for name in studies:
            t = time.perf_counter()
            if not args.child_result:
                print(f"\n== {name} ({preset}) → {os.path.join(root, name)}", flush=True)
            try:
                entry = run_one(name, preset, os.path.join(root, name), progress=not args.quiet)
            except KeyboardInterrupt as e:       # the run is recorded as interrupted, its checkpoints kept
                print(f"interrupted ({e}): {name} did not finish; run the same command again to resume",
                      file=sys.stderr, flush=True)
                return 130
            entry["wall_time_s"] = round(time.perf_counter() - t, 1)
            results.append(entry)
    else:
        jobs, jobs_why = resolve_jobs(args.jobs, preset)
        print(f"studies side by side: {jobs} ({jobs_why})", flush=True)
        try:
            results = run_children(studies, preset, args, root, jobs)
        except KeyboardInterrupt as e:
            print(f"interrupted ({e}): the studies that were running stopped with their finished work "
                  f"checkpointed; run the same command again to resume; no index written", file=sys.stderr)
            return 130
    if args.child_result:
        write_json(args.child_result, results[0])
        return 0
    writer = is_writer()                                  # process 0 of a multi-host run writes the index
    if writer:
        os.makedirs(root, exist_ok=True)
        write_json(os.path.join(root, "index.json"), {"preset": preset, "why": why, "studies": results,
                                                      "wall_time_s": round(time.perf_counter() - t0, 1)})
    lines = index_lines(preset, why, results)
    if writer:
        atomic_write_text(os.path.join(root, "index.md"), "\n".join(lines) + "\n")
    print(f"\nindex: {os.path.join(root, 'index.md')} ({time.perf_counter() - t0:.0f} s)")
    for r in results:
        print(f"  {r['study']}: {r['status']}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
