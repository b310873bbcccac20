"""Each registered study's ``smoke`` run, made once per test session and shared by every test module that reads it.

The contract tests (tests/test_study_contract.py) and a study's own tests read the same smoke run; running it once
for both halves the suite's most expensive fixtures. ``make test`` runs two pytest-xdist workers, each its own
process, so the runs live on disk in a folder both workers share (the session's temporary root) and a file lock
serialises each study's run: a worker that needs a run another worker is making waits for it rather than making
it twice, while runs of different studies proceed side by side (one lock per study). All runs sit side by side in
``<root>/smoke/<study>`` — the layout ``make reproduce`` writes — so a study that starts from another study's
population (``Start(pop, study=...)``) restores it from there instead of training it again; the source study's
run is finished first (under its own lock), so no two runs ever write one population's checkpoints.

:func:`smoke_run` returns ``(study, cfg, workdir, out)``; ``out`` is what ``Study.run`` returned (the member table
and the verdicts), pickled beside the run for the worker that did not make it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import pickle
from pathlib import Path

from experiments import STUDIES


def _shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base    # xdist: gw0, gw1 share the parent
    path = root / "shared_study_runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _source_studies(study, cfg) -> list[str]:
    """The studies whose populations ``study`` starts from (``Start(pop, study=...)``)."""
    pops = study.populations(cfg, cfg.data.load())
    return sorted({p.start.study for p in pops if p.start is not None and p.start.study is not None})


def smoke_run(name: str, tmp_path_factory):
    """(study, cfg, workdir, out) of study ``name``'s smoke preset, run once per test session; the studies it
    starts from run first, as ``reproduce`` orders them (their own run then owns the source's folder)."""
    study = importlib.import_module(STUDIES[name]).STUDY
    cfg = study.presets["smoke"]
    for source in _source_studies(study, cfg):
        smoke_run(source, tmp_path_factory)
    root = _shared_root(tmp_path_factory)
    workdir, result = root / "smoke" / name, root / f"{name}.smoke.pkl"
    with _locked(root / f"{name}.lock"):
        if not result.exists():
            out = study.run(cfg, workdir, preset="smoke", progress=False)
            status = json.loads((workdir / "run.json").read_text())["status"]
            tmp = result.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({"status": status, "out": out}))
            tmp.replace(result)
        saved = pickle.loads(result.read_bytes())
    return study, cfg, workdir, saved["out"]
