"""The study runner: a study is its populations, measures, claims, figures and notes; the runner does the rest.

A study module declares one :class:`Study`::

    STUDY = Study(name="spectral_fixed_scale", title="…", paper_claims=("C3", "C4"), presets=PRESETS,
                  populations=populations, measures=measures, claims=claims, figures=figures, notes=notes,
                  summary=summary)

and :meth:`Study.run` owns the run directory's life (:class:`crobust.records.RunDir`): it checks that the run
directory is usable and that the figures can be drawn before any work, loads the data, trains each population once
(checkpointed under ``<workdir>/checkpoints/<population>``, so a rerun resumes; sources before the stages that start
from them, :mod:`crobust.study.staging`), applies the measures population
by population into one :class:`~crobust.study.table.MemberTable`, writes the records (``metrics.jsonl``,
``members.csv``), draws the figures, judges the claims (:func:`crobust.study.claims.judge`) and writes
``report.md``: the setup actually run (with the code and platform it ran on, :mod:`crobust.provenance`), the
attacks and budgets actually run, which evaluation checks ran and which could not (and why), the verdicts, a table
of means, the figures and the study's notes. ``run.json`` says ``complete`` only once ``report.md`` exists.

What a run guarantees (:func:`run`): every setting, each population's members and its memory are checked before the
run directory is touched; one process at a time holds the directory (:class:`crobust.records.WorkdirLock`); a
refused command changes no file of an existing run; a diverged member is no result (counted in the report, left out
of the records, means and claims) and a population whose members all diverged is marked failed; SIGINT/SIGTERM in
any phase end the run as ``interrupted`` (:mod:`crobust.study.signals`); with one seed per setting only the
per-member checks are judged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from crobust import report as report_lib
from crobust import checkpoint, evaluation, parallel, precision, provenance, training
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.config import to_dict, validate
from crobust.records import RunDir, WorkdirLock
from crobust.study import claims as claims_lib
from crobust.study import dependencies, staging
from crobust.study.blocks import EvalConfig
from crobust.study.measures import Context, TrainedPopulation, ensemble_note
from crobust.study.measures_radii import report_lines as radii_report_lines
from crobust.study.signals import RunSignals
from crobust.study.table import MemberTable


NOT_IDENTITY = tuple(f"train.{f}" for f in training.TrainConfig.NOT_IDENTITY) + \
    tuple(f"eval.{f}" for f in EvalConfig.NOT_IDENTITY)
"""Settings recorded in ``config.json`` but not part of a run's identity (how members execute, not what they compute)."""


@dataclasses.dataclass(frozen=True)
class Population:
    """Members that share array shapes, trained in one program: a name (the checkpoint folder), a model, the
    trainer's config, the member dicts (hyper-parameters + seed) and coordinates common to all of them.
    ``prepare`` transforms the initial :class:`~crobust.training.PopulationState` before training (e.g. scaling a
    layer and its Frobenius target); a checkpoint, when one exists, takes precedence as usual. ``adversary``
    replaces the trainer's default PGD adversary (``training.fit(adversary=…)``, e.g. a universal one).
    ``member_coords`` (one mapping per member, or empty) adds coordinates that differ between members but are no
    trainer hyper-parameter, e.g. the scale a ``prepare`` hook gave each member.

    ``start`` (a :class:`crobust.study.staging.Start`) makes the population a stage: it starts from another
    population's trained members (of this study or of another study in the same output folder) through a
    parameter map, optionally pruned, and trains the parameters ``train.trainable`` names; ``data`` (a function of
    the study's dataset, or a block with ``load()``) is the dataset it trains and is measured on when it is not
    the study's. The runner trains populations in dependency order (:mod:`crobust.study.staging`)."""

    name: str
    model: Any
    train: training.TrainConfig
    members: tuple
    coords: Mapping = dataclasses.field(default_factory=dict)
    prepare: Optional[Callable] = None    # state -> state, applied to the initial population state (e.g. rescaling)
    adversary: Optional[Callable] = None  # the trainer's adversary when ``train.adversarial`` is set (default PGD)
    member_coords: tuple = ()             # one mapping per member, added to its coordinates (e.g. its scale)
    start: Optional[Any] = None           # staging.Start: the trained members it starts from (None: from scratch)
    data: Optional[Any] = None            # its own dataset: data -> data, or a block with load() (None: the study's)

    def member_rows(self) -> list[dict]:
        """Every member's coordinates as the member table holds them: population, index, constant coordinates,
        hyper-parameters and seed, then its own ``member_coords``."""
        extra = self.member_coords or ({},) * len(self.members)
        return [{"population": self.name, "member": i, **dict(self.coords), **m, **dict(extra[i])}
                for i, m in enumerate(self.members)]


@dataclasses.dataclass(frozen=True)
class Study:
    """A study as data; see the module docstring. Each callable takes the resolved config (``populations`` also
    the dataset); ``summary`` lists the table keys of the report's table of means, ``group_by`` its grouping.
    ``source_studies`` names every other study whose trained populations this one starts from
    (``Start(population, study=name)``, :mod:`crobust.study.staging`): the two share that population's checkpoint
    folder, so ``reproduce`` never runs them side by side; a run whose populations start from an undeclared study
    is refused."""

    name: str
    title: str
    paper_claims: tuple
    presets: Mapping[str, Any]
    populations: Callable
    measures: Callable
    claims: Callable
    figures: Callable
    notes: Callable
    summary: Callable
    group_by: tuple = ("population", "alpha")
    setup: Optional[Callable] = None           # (cfg, data) -> a sentence on what is special in the setup
    source_studies: tuple = ()

    def run(self, cfg, workdir, *, preset: str = "custom", progress: bool = True) -> dict:
        return run(self, cfg, workdir, preset=preset, progress=progress)

    def main(self, argv=None) -> int:
        from crobust.study.cli import run_cli
        return run_cli(self, argv)


# --------------------------------------------------------------------------------------------------------------
# Before any work

def check_source_studies(study: Study, populations) -> None:
    """Every other study a population starts from is declared in ``study.source_studies`` (a
    :class:`CrobustError` otherwise): ``reproduce`` schedules studies side by side from that declaration."""
    for pop in populations:
        other = pop.start.study if pop.start is not None else None
        if other is not None and other not in study.source_studies:
            raise CrobustError(f"population {pop.name} starts from study {other!r}, which {study.name} does not "
                               f"declare: add it to Study(source_studies=...)")

def check_workdir(path) -> Path:
    """Create ``path`` (and its parents) and check that a file can be written there; a clear
    :class:`CrobustError` otherwise (a file in the path, no permission, a read-only or full disk)."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise CrobustError(f"workdir {path}: {parent} is a file, not a folder; choose another --workdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".crobust-write-test-{os.getpid()}"      # one per process: runs may probe at once
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise CrobustError(f"workdir {path} is not usable: {_os_reason(e)}") from None
    return path


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the disk"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return e.strerror or str(e)


def check_plotting() -> None:
    """Figures need matplotlib; say so in one line before any training."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CrobustError("the studies draw figures with matplotlib, which is not installed: "
                           "pip install matplotlib (or pip install -e .)") from None


# --------------------------------------------------------------------------------------------------------------
# The run

class RunFailed(RuntimeError):
    """The run finished and its report is written, but a population failed (every member diverged); the command
    line prints the message on one line and exits with status 1."""


# The trainer's record of each member: kept for every member, diverged or not (the other columns of a diverged
# member are left out: its parameters are no result).
TRAINING_COLUMNS = ("best_step", "stopped_step", "diverged")


def run(study: Study, cfg, workdir, *, preset: str = "custom", progress: bool = True) -> dict:
    """Run ``study`` at ``cfg`` into ``workdir`` (see the module docstring). Returns ``{'verdicts', 'table'}``.

    Before the run directory is touched: every setting is validated (:func:`crobust.config.validate`; each
    population's training settings and members against the data), the memory each population needs is checked
    against what the host (and a device that reports its memory) has, and the figures' library is checked. Then
    the workdir's lock is taken (:class:`crobust.records.WorkdirLock`: a second run on a busy workdir is refused)
    and :meth:`RunDir.start` refuses a folder holding another run before it writes anything. SIGINT/SIGTERM in any
    phase end the run as "interrupted" (:mod:`crobust.study.signals`). A population whose members all diverged is
    marked failed in the report and ``run.json``, and :class:`RunFailed` is raised once everything is written."""
    validate(cfg)
    check_plotting()
    with RunSignals() as signals:
        log = (lambda *a: print(f"[{study.name}]", *a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
        data = cfg.data.load()
        populations = staging.in_dependency_order(study.populations(cfg, data))
        check_source_studies(study, populations)
        dependencies.order(study.measures(cfg))        # a measure whose needs no other provides: refused here
        check_populations(populations, data)
        path = check_workdir(workdir)
        out = RunDir(path, study=study.name, preset=preset)
        with (WorkdirLock(path) if out.writer else contextlib.nullcontext()):
            out.check_reusable(to_dict(cfg), NOT_IDENTITY)       # another run here, or a checkpoint of another configuration:
            for pop in populations:                 # refused before a file changes
                checkpoint.check_configuration(staging.checkpoint_dir(out.path, pop), description={
                    **checkpoint.describe(pop.model, staging.population_data(pop, data), pop.train, list(pop.members)),
                    **staging.start_identity(pop)})
            return _locked_run(study, cfg, data, populations, out, log, progress, signals)


def _locked_run(study, cfg, data, populations, out: RunDir, log, progress, signals: RunSignals) -> dict:
    t_start = time.perf_counter()
    origin = provenance.provenance()
    try:
        out.start(to_dict(cfg), extra={"data_source": data.source}, provenance=origin,   # may refuse: no write
                  not_identity=NOT_IDENTITY)
        result = _run(study, cfg, data, populations, out, log, progress, signals, origin)
        signals.check()
    except OSError as e:
        out.finish("failed", error=f"{type(e).__name__}: {e}") if _can_write(out.path) else None
        raise CrobustError(f"cannot write the run directory {out.path}: {_os_reason(e)}") from None
    except BaseException as e:
        out.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=f"{type(e).__name__}: {e}")
        raise
    wall = round(time.perf_counter() - t_start, 1)
    failed = result["failed_populations"]
    if failed:
        message = (f"every member of population(s) {', '.join(failed)} diverged (the report marks them failed and "
                   f"keeps the other populations): {out.path / 'report.md'}")
        out.finish("failed", wall_time_s=wall, error=message, failed_populations=failed)
        raise RunFailed(message)
    out.finish("complete", wall_time_s=wall)
    return result


def check_populations(populations: Sequence[Population], data) -> None:
    """Each population's members and training settings against the data (as the trainer checks them, but before
    the run directory is touched), and its memory: the population's state and one training step
    (:func:`crobust.training.population_bytes`, from shapes alone) against the host's available memory (on a CPU,
    where the step runs there too) and the device's free memory where the backend reports it. A one-line
    :class:`CrobustError` naming what is needed and what there is."""
    import jax

    cpu = jax.default_backend() == "cpu"
    free_device = None if cpu else parallel.device_free_bytes()
    for pop in populations:
        if pop.member_coords and len(pop.member_coords) != len(pop.members):
            raise CrobustError(f"population {pop.name}: {len(pop.member_coords)} member_coords for "
                               f"{len(pop.members)} members")
        state, step = training.population_bytes(pop.model, staging.population_data(pop, data), pop.train,
                                                list(pop.members))
        what = f"population {pop.name} ({len(pop.members)} members, {type(pop.model).__name__})"
        parallel.check_host_memory(state + step if cpu else state, what)
        if free_device is not None and jax.device_count() == 1:
            m = len(pop.members)
            parallel.offload_chunk_for_memory(state // m, step // m, free_device, m)


def _can_write(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _run(study: Study, cfg, data, populations, out: RunDir, log, progress, signals: RunSignals, origin) -> dict:
    log(f"data: {data.name} {data.train_images.shape[0]} train / {data.test_images.shape[0]} test ({data.source})")
    measures = dependencies.order(study.measures(cfg))      # their declared needs, whatever the listed order
    ctx = Context.build(cfg.eval, cfg.measure, data)
    table = MemberTable()
    trained, failed = [], []
    fits = {}

    def train(pop, pdata, source_fit, directory):
        state = staging.initial_state(pop, pdata, source_fit)
        return training.fit(pop.model, pdata, pop.train, list(pop.members), state=state, progress=progress,
                            adversary=pop.adversary, checkpoint_dir=directory,
                            checkpoint_every=getattr(cfg, "checkpoint_every", None),
                            checkpoint_extra=staging.start_identity(pop))

    for pop in populations:
        source_fit = None
        if pop.start is not None and pop.start.source_name not in fits:        # a population of another study
            src = pop.start.source
            log(f"population {pop.name}: source {pop.start.source_name} (trained there, or restored)")
            fits[pop.start.source_name] = train(src, staging.population_data(src, data), None,
                                                staging.checkpoint_dir(out.path, src, pop.start))
        if pop.start is not None:
            source_fit = fits[pop.start.source_name]
        pdata = staging.population_data(pop, data)
        log(f"population {pop.name}: training {len(pop.members)} members together"
            + (f", starting from {pop.start.source_name}" if pop.start is not None else ""))
        fit = fits[pop.name] = train(pop, pdata, source_fit, staging.checkpoint_dir(out.path, pop))
        signals.check()
        tp = TrainedPopulation(pop.name, pop.model, list(pop.members), dict(pop.coords), fit, fit.best_params,
                               fit.best_model_state, stage=staging.describe_stage(pop, pdata))
        pctx = ctx
        if pdata is not data:                   # measured on its own data; one evaluation log for the report
            pctx = Context.build(cfg.eval, cfg.measure, pdata)
            pctx.log = ctx.log
        trained.append(tp)
        rows = table.add_members(pop.member_rows())
        diverged = np.asarray(fit.state.diverged, bool)
        if diverged.all():
            failed.append(pop.name)
            log(f"population {pop.name}: every member diverged; not measured")
        else:
            for measure in measures:
                t0 = time.perf_counter()
                with precision.full(), evaluation.execution_default(cfg.eval.execution):   # full float32 everywhere
                    for column, values in measure(pctx, tp).items():
                        table.set(rows, column, values)
                signals.check()
                log(f"population {pop.name}: {_measure_name(measure)} {time.perf_counter() - t0:.1f} s")
        _record_training(table, rows, fit.state)
        pctx.cache.clear()
    table = _without_diverged(table)
    out.log(table.records(study=study.name))
    out.write_csv("members.csv", table.member_rows())

    figures = []
    for fig in study.figures(cfg):
        figures.append(fig.draw(table, out.path).name)
        signals.check()
    verdicts = _one_seed(claims_lib.judge(study.claims(cfg), table), study.claims(cfg), table)
    summary_rows = _means(table, study.group_by, study.summary(cfg))
    out.write_csv("means.csv", summary_rows)
    out.write_json("verdicts.json", [dataclasses.asdict(v) for v in verdicts])
    out.write_json("evaluation.json", ctx.log)
    signals.check()
    out.write_text("report.md", _report(study, cfg, data, trained, ctx, verdicts, summary_rows, figures, table,
                                        failed, origin))
    log(f"wrote {out.path / 'report.md'}")
    return {"verdicts": verdicts, "table": table, "failed_populations": failed}


def _record_training(table: MemberTable, rows: slice, state) -> None:
    """The trainer's record of every member (:data:`TRAINING_COLUMNS`), whatever the study measures."""
    table.set(rows, "best_step", np.asarray(state.best_step))
    table.set(rows, "stopped_step", np.asarray(state.step))
    table.set(rows, "diverged", np.asarray(state.diverged, np.float64))


def _without_diverged(table: MemberTable) -> MemberTable:
    """``table`` with every column but :data:`TRAINING_COLUMNS` set to NaN (no value) for the diverged members:
    their parameters are no result, so no record, mean or claim reads them."""
    if "diverged" not in table.columns:
        return table
    gone = table["diverged"] == 1.0
    if gone.any():
        for key, values in table.columns.items():
            if key not in TRAINING_COLUMNS:
                values[gone] = np.nan
    return table


def _one_seed(verdicts, claims, table: MemberTable):
    """Every claim but a per-member check (:class:`~crobust.study.claims.Holds`) is skipped when the run has one
    seed per setting: a mean without a spread over seeds cannot carry a verdict."""
    if "seed" not in table or len({c.get("seed") for c in table.coords}) > 1:
        return verdicts
    return [v if isinstance(c, claims_lib.Holds) or v.verdict == "skipped" else
            dataclasses.replace(v, verdict="skipped", stats={}, p_value=None, p_adjusted=None,
                                detail="one seed per setting (no spread over seeds to judge it by)")
            for v, c in zip(verdicts, claims)]


def _measure_name(measure) -> str:
    return getattr(measure, "__qualname__", "measure").split(".<locals>")[0]


def _means(table: MemberTable, group_by, keys) -> list[dict]:
    by = [b for b in group_by if b in table]
    rows = []
    for key in keys:
        if key not in table:
            continue
        for g in table.group_stats(by, key):
            rows.append({**{b: g[b] for b in by}, "column": key, "mean": g["mean"], "std": g["std"], "n": g["n"]})
    # pivot: one row per group, one column per key (mean ± s.d.; n/a where the group has no value)
    pivot: dict[tuple, dict] = {}
    for r in rows:
        row = pivot.setdefault(tuple(r[b] for b in by), {b: r[b] for b in by})
        row[r["column"]] = f"{r['mean']:.4g} ± {r['std']:.2g}" if r["n"] else "n/a"
    return list(pivot.values())


# --------------------------------------------------------------------------------------------------------------
# report.md

CHECK_NAMES = {
    "perturbation_within_eps": "‖x_adv − x‖ ≤ ε + 1e-6 for every attack's output",
    "inputs_in_unit_range": "x_adv ∈ [0, 1]",
    "no_nan": "no NaN in x_adv",
    "zero_gradients": "no zero input gradients at correctly classified points (AutoAttack's check_zero_gradients)",
    "gradient_masking": "gradient masking: Square breaks ≤ 0.2 % of the points the white-box attacks leave",
    "monotone_in_eps": "robust accuracy non-increasing in ε",
    "large_eps": "RA ≤ 5 % where every point reaches the grey image",
    "grey_image_points": "no point called robust whose grey image 0.5·1 lies within ε and is misclassified",
}


def _check_lines(ctx: Context) -> list[str]:
    """What the evaluation checked: each check that ran with the evaluations it failed, each that could not run
    with the reason (``crobust.evaluation`` reports both per member and norm)."""
    checks = ctx.log["checks"]
    if not checks:
        return ["- No robust-accuracy evaluation ran, so no evaluation check ran."]
    lines = []
    for name in dict.fromkeys([n for c in checks for n in (*c["ran"], *c["not_run"])]):
        label = CHECK_NAMES.get(name, name)
        ran = [c for c in checks if name in c["ran"]]
        failed = [c for c in ran if c["ran"][name] != "passed"]
        skipped = {}
        for c in checks:
            if name in c["not_run"]:
                skipped.setdefault(c["norm"], c["not_run"][name])
        if ran:
            line = f"- {label}: ran in {len(ran)} member × norm evaluations, " + (
                "all passed" if not failed else f"**{len(failed)} failed** (e.g. member {failed[0]['member']}, "
                f"{failed[0]['norm']}: {failed[0]['ran'][name]})")
            if skipped:
                line += "; not run for " + "; ".join(f"{n}: {why}" for n, why in skipped.items())
            lines.append(line + ".")
        else:
            lines.append(f"- {label}: **not run** — " + "; ".join(f"{n}: {why}" for n, why in skipped.items()) + ".")
    failing = [c for c in checks if c["failures"]]
    lines.append(f"- Summary: {'every check that ran passed' if not failing else f'{len(failing)} evaluation(s) failed a check'}"
                 f" (\"passed\" covers only the checks that ran; per member in `evaluation.json`).")
    return lines


def _convergence_lines(ctx: Context) -> list[str]:
    rows = ctx.log["convergence"]
    if not rows:
        return ["Not run (no `eval.convergence_iters` in this preset)."]
    lines = ["Robust accuracy of every least and most compressed member at the headline ε as the attack budget "
             "doubles (iterations at one restart, then restarts at the most iterations, then Square's queries where "
             "`eval.convergence_queries` is set — otherwise the gradient attacks only, Square left out; the same "
             "random streams at every budget). A point counts as broken when any rung breaks it. A ladder is "
             "**converged** when the last doubling on each axis breaks < 0.5 % of the points that no rung before it "
             "broke (its new breaks, 'last doubling'), or at most one point where 0.5 % is under two points (fewer "
             "than 400 points: one point is the estimate's resolution, 1/N, at most a third of its binomial "
             "standard deviation at 100 points); the headline is vouched for when, besides, its own budget is on "
             "the ladder and the stronger rungs break fewer than that tolerance of the points it calls robust.",
             "", "| population | member | norm | ε | " + " | ".join(
                 f"{b['n_iter']}×{b['n_restarts']}" + (f"×{b['n_queries']}q" if b.get("n_queries") else "")
                 for b in rows[0]["budgets"]) + " | last doubling (pp) | converged |",
             "|---|---|---|---|" + "---|" * len(rows[0]["budgets"]) + "---|---|"]
    for r in rows:
        moved = max([v for v in r["last_doubling_pp"].values() if v is not None], default=float("nan"))
        lines.append(f"| {r['population']} | {r['member']} | {r['norm']} | {r['eps']} | " + " | ".join(
            f"{b['robust_acc'][0]:.3f}" for b in r["budgets"]) + f" | {moved:.2f} | {'yes' if r['converged'] else '**no**'} |")
    vouched = sum(bool(r.get("headline_converged")) for r in rows)
    lines += ["", f"Headline: **{'converged' if vouched == len(rows) else 'not converged'}** at this preset's budget: "
                  f"{vouched} of {len(rows)} member × norm checks vouch for it (the headline's own budget is on the "
                  f"ladder, the ladder converged and the stronger rungs break fewer than the tolerance of the points "
                  f"it calls robust). "
                  f"A primary claim on an unconverged headline is at most *inconclusive (not converged)*."]
    read = sum(bool(r.get("first_rung_from_headline")) for r in rows)
    if read:
        lines += ["", f"In {read} of {len(rows)} checks the first rung is the headline's own budget: its flags are "
                      f"the headline evaluation's (the same attacks, random streams and points), read, not attacked "
                      f"a second time."]
    return lines


def _evaluation_execution(tp, execution: str = "auto") -> str:
    """How :func:`crobust.evaluation.population_robust_accuracy` runs this population's attacks under
    ``eval.execution``: e.g. ``host_steps`` (each attack iteration one compiled call) or ``program``."""
    return evaluation.resolve_execution(execution, tp.variables)


def _report(study: Study, cfg, data, trained, ctx: Context, verdicts, summary_rows, figures, table: MemberTable,
            failed: Sequence[str], origin: Mapping) -> str:
    d_in = int(np.prod(data.train_images.shape[1:]))
    lines = [f"# {study.title}", ""]
    lines += ["## Setup (as run)", "",
              f"- Data: **{data.name}**, {data.train_images.shape[0]} train / {data.test_images.shape[0]} test "
              f"({data.source}); input dimension {d_in}, {data.num_classes} classes."]
    for tp in trained:
        t = tp.fit
        lines.append(f"- Population `{tp.name}`: {type(tp.model).__name__} "
                     f"({', '.join(f'{k}={v}' for k, v in tp.coords.items()) or 'no constant coordinates'}), "
                     f"{tp.size} members, trained in {t.wall_time:.1f} s ({t.compiles} compile(s) in this call; member "
                     f"execution `{t.execution}`, attacks `{_evaluation_execution(tp, cfg.eval.execution)}`)"
                     f"{_divergence_note(tp)}"
                     + (f"; {tp.stage}." if tp.stage else "."))
    lines.append(f"- Training: {_train_line(cfg.train)}.")
    lines.append(f"- Code and platform: {provenance.line(origin)}.")
    if study.setup is not None:
        lines.append(f"- {study.setup(cfg, data)}")
    lines += ["", "## Evaluation (as run)", ""]
    e = ctx.eval
    for norm, attacks in ctx.log["attacks"].items():
        lines.append(f"- {norm}: {attacks} ({ensemble_note(e.attacks)}); ε grid {', '.join(format_eps(v) for v in e.grid(norm))} (pixel units), "
                     f"headline ε = {format_eps(e.headline(norm))}.")
    lines.append("- Precision: every measurement (attacks included) at full float32 matmul precision on every backend "
                 "(`crobust.precision.full`).")
    lines.append(f"- Points: robust accuracy on the first {int(ctx.x.shape[0])} test points, the same for every "
                 f"member; true labels; per point the worst case over the attacks. Clean accuracy on those points is "
                 f"`clean_acc_points`; `clean_acc` is on all {int(data.test_images.shape[0])} test points.")
    lines.append("- Randomness: each member's attack noise derives from its seed and a named stream, never from its "
                 "position in the population.")
    lines += ["", "### Evaluation checks", "", *_check_lines(ctx), ""]
    lines += ["### Attack-budget convergence", "", *_convergence_lines(ctx), ""]
    lines += radii_report_lines(ctx.log.get("radii", []))
    if ctx.log["weaker"]:
        lines += ["### What a weaker evaluation would report", "",
                  "The reference code's only attack library is ART; its AutoProjectedGradientDescent differs from "
                  "AutoAttack's APGD (docs/findings.md §2). Run beside the ensemble at each headline ε: "
                  + "; ".join(f"{n}: {d}" for n, d in ctx.log["weaker"].items())
                  + ". `art_overstatement` = RA(ART) − RA(ensemble) per member is in the table of means; claims "
                    "marked “(ART)” below repeat a headline claim on the ART numbers, so a verdict that depends on "
                    "the evaluation shows as a disagreement.", ""]
    lines += _verdict_lines(verdicts, _trained_note(table, failed))
    lines += ["## Means per group (mean ± s.d. over seeds)", "", report_lib.markdown_table(summary_rows), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["Numbers behind every figure: the `.csv` beside it; per member: `members.csv`; every measurement: "
              "`metrics.jsonl`; means: `means.csv`; verdicts: `verdicts.json`; evaluation log: `evaluation.json`.", ""]
    lines += ["## Choices made here (the paper is silent)", ""] + [f"- {n}" for n in study.notes(cfg)] + [""]
    return "\n".join(lines)


def _divergence_note(tp: TrainedPopulation) -> str:
    gone = np.flatnonzero(np.asarray(tp.fit.state.diverged, bool))
    if gone.size == tp.size:
        return "; **failed: every member diverged** (nothing measured)"
    if gone.size:
        return (f"; **{gone.size} of {tp.size} members diverged** (member(s) {', '.join(map(str, gone))}: left out of "
                f"the records, means and claims)")
    return "; no member diverged"


def _trained_note(table: MemberTable, failed: Sequence[str]) -> str:
    """Which members the claims rest on: those that trained (diverged members carry no measurement)."""
    if "diverged" not in table.columns:
        return ""
    gone = int(np.sum(table["diverged"] == 1.0))
    if not gone:
        return f"Claims are computed on all {len(table)} members (none diverged)."
    note = f"Claims are computed on the {len(table) - gone} of {len(table)} members that trained ({gone} diverged"
    return note + (f"; population(s) {', '.join(failed)} **failed**: every member diverged)." if failed else ").")


def _verdict_lines(verdicts, trained_note: str = "") -> list[str]:
    """The Verdicts section (primary, then secondary claims, each its own Holm family) and the Checks section."""
    count = lambda fam: sum(v.p_value is not None for v in verdicts if v.family == fam)
    lines = ["## Verdicts", "",
             f"Each claim is judged by the rule printed after it, with the effect it states; p-values are two-sided "
             f"and Holm-corrected within their family at level {claims_lib.LEVEL}: the primary claims "
             f"({count('primary')} p-values) form one family, the secondary claims ({count('secondary')}) another. "
             f"Members sharing a seed are paired and permuted within the seed. {trained_note}".rstrip(), ""]
    for family in ("primary", "secondary"):
        chosen = [v for v in verdicts if v.family == family]
        if chosen:
            lines += [f"### {claims_lib.FAMILY_TITLES[family][0].upper()}{claims_lib.FAMILY_TITLES[family][1:]}", "",
                      *[v.line() for v in chosen], ""]
    checks = [v for v in verdicts if v.family == "check"]
    if checks:
        lines += ["## Checks", "",
                  f"What the setup must show for the claims to be read at all — the manipulation worked, the scale "
                  f"held, an inequality that holds by construction. Never counted as evidence for a paper claim "
                  f"({count('check')} p-values, their own Holm family).", "", *[v.line() for v in checks], ""]
    return lines


def _train_line(t: training.TrainConfig) -> str:
    parts = [f"{t.optimizer} lr {t.lr:g}, weight decay {t.weight_decay:g}, batch {t.batch_size}, ≤ {t.max_steps} steps, "
             f"matmul precision {t.matmul_precision}"]
    if t.patience is not None:
        parts.append(f"early stopping on validation loss (patience {t.patience}, min {t.min_steps} steps, "
                     f"{t.val_ratio:.0%} held out per member)")
    if t.val_ratio > 0:
        parts.append(f"each member's result (what is measured): its best-validation parameters ({t.val_ratio:.0%} "
                     f"held out, validation every {t.eval_every} steps)")
    else:
        parts.append("no validation split: each member's result (what is measured) is its last parameters")
    terms = [f"{name} × {'α' if axis == 'alpha' else axis}" for name, axis in t.penalty_terms() if name != "none"]
    if terms:
        parts.append(f"penalty {' + '.join(terms)}")
    if t.projection != "none":
        parts.append(f"projection {t.projection} after every step")
    if t.adversarial is not None:
        a = t.adversarial
        parts.append(f"PGD adversarial training ({a.norm}, ε {format_eps(a.eps)}, {a.n_iter} steps of "
                     f"{format_eps(a.step_size)}, {a.ratio:.0%} of each batch)")
    return "; ".join(parts)


__all__ = ["Population", "Study", "RunFailed", "run", "check_workdir", "check_plotting", "check_populations"]
