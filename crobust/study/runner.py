"""The study runner: a study is its populations, measures, claims, figures and notes; the runner does the rest.

A study module declares one :class:`Study`::

    STUDY = Study(name="spectral_fixed_scale", title="…", paper_claims=("C3", "C4"), presets=PRESETS,
                  populations=populations, measures=measures, claims=claims, figures=figures, notes=notes,
                  summary=summary)

and :meth:`Study.run` owns the run directory's life (:class:`crobust.records.RunDir`): it checks that the run
directory is usable and that the figures can be drawn before any work, loads the data, trains each population once
(checkpointed under ``<workdir>/checkpoints/<population>``, so a rerun resumes), applies the measures population
by population into one :class:`~crobust.study.table.MemberTable`, writes the records (``metrics.jsonl``,
``members.csv``), draws the figures, judges the claims (:func:`crobust.study.claims.judge`) and writes
``report.md``: the setup actually run, the attacks and budgets actually run, which evaluation checks ran and which
could not (and why), the verdicts, a table of means, the figures and the study's notes. ``run.json`` says
``complete`` only once ``report.md`` exists.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from crobust import report as report_lib
from crobust import precision, training
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.config import to_dict, validate
from crobust.records import RunDir
from crobust.study import claims as claims_lib
from crobust.study import dependencies
from crobust.study.measures import Context, TrainedPopulation
from crobust.study.table import MemberTable


@dataclasses.dataclass(frozen=True)
class Population:
    """Members that share array shapes, trained in one program: a name (the checkpoint folder), a model, the
    trainer's config, the member dicts (hyper-parameters + seed) and coordinates common to all of them.
    ``prepare`` transforms the initial :class:`~crobust.training.PopulationState` before training (e.g. scaling a
    layer and its Frobenius target); a checkpoint, when one exists, takes precedence as usual. ``adversary``
    replaces the trainer's default PGD adversary (``training.fit(adversary=…)``, e.g. a universal one).
    ``member_coords`` (one mapping per member, or empty) adds coordinates that differ between members but are no
    trainer hyper-parameter, e.g. the scale a ``prepare`` hook gave each member."""

    name: str
    model: Any
    train: training.TrainConfig
    members: tuple
    coords: Mapping = dataclasses.field(default_factory=dict)
    prepare: Optional[Callable] = None    # state -> state, applied to the initial population state (e.g. rescaling)
    adversary: Optional[Callable] = None  # the trainer's adversary when ``train.adversarial`` is set (default PGD)
    member_coords: tuple = ()             # one mapping per member, added to its coordinates (e.g. its scale)


@dataclasses.dataclass(frozen=True)
class Study:
    """A study as data; see the module docstring. Each callable takes the resolved config (``populations`` also
    the dataset); ``summary`` lists the table keys of the report's table of means, ``group_by`` its grouping."""

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

    def run(self, cfg, workdir, *, preset: str = "custom", progress: bool = True) -> dict:
        return run(self, cfg, workdir, preset=preset, progress=progress)

    def main(self, argv=None) -> int:
        from crobust.study.cli import run_cli
        return run_cli(self, argv)


# --------------------------------------------------------------------------------------------------------------
# Before any work

def check_workdir(path) -> Path:
    """Create ``path`` (and its parents) and check that a file can be written there; a clear
    :class:`CrobustError` otherwise (a file in the path, no permission, a read-only or full disk)."""
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise CrobustError(f"workdir {path}: {parent} is a file, not a folder; choose another --workdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".crobust-write-test"
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

def run(study: Study, cfg, workdir, *, preset: str = "custom", progress: bool = True) -> dict:
    """Run ``study`` at ``cfg`` into ``workdir`` (see the module docstring). Returns ``{'verdicts', 'table'}``."""
    validate(cfg)
    check_plotting()
    path = check_workdir(workdir)
    t_start = time.perf_counter()
    log = (lambda *a: print(f"[{study.name}]", *a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    data = cfg.data.load()
    out = RunDir(path, study=study.name, preset=preset)
    try:
        out.start(to_dict(cfg), extra={"data_source": data.source})
        result = _run(study, cfg, data, out, log, progress)
    except OSError as e:
        out.finish("failed", error=f"{type(e).__name__}: {e}") if _can_write(path) else None
        raise CrobustError(f"cannot write the run directory {path}: {_os_reason(e)}") from None
    except BaseException as e:
        out.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=f"{type(e).__name__}: {e}")
        raise
    out.finish("complete", wall_time_s=round(time.perf_counter() - t_start, 1))
    return result


def _can_write(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _run(study: Study, cfg, data, out: RunDir, log, progress) -> dict:
    log(f"data: {data.name} {data.train_images.shape[0]} train / {data.test_images.shape[0]} test ({data.source})")
    populations = study.populations(cfg, data)
    measures = dependencies.order(study.measures(cfg))      # their declared needs, whatever the listed order
    ctx = Context.build(cfg.eval, cfg.measure, data)
    table = MemberTable()
    trained = []
    for pop in populations:
        if pop.member_coords and len(pop.member_coords) != len(pop.members):
            raise CrobustError(f"population {pop.name}: {len(pop.member_coords)} member_coords for "
                               f"{len(pop.members)} members")
        log(f"population {pop.name}: training {len(pop.members)} members in one program")
        state = None
        if pop.prepare is not None:
            state = pop.prepare(training.init_population(pop.model, data, pop.train, list(pop.members)))
        fit = training.fit(pop.model, data, pop.train, list(pop.members), state=state, progress=progress,
                           adversary=pop.adversary,
                           checkpoint_dir=out.path / "checkpoints" / pop.name,
                           checkpoint_every=getattr(cfg, "checkpoint_every", None))
        tp = TrainedPopulation(pop.name, pop.model, list(pop.members), dict(pop.coords), fit, fit.best_params,
                               fit.best_model_state)
        trained.append(tp)
        extra = pop.member_coords or ({},) * len(pop.members)
        rows = table.add_members([{"population": pop.name, "member": i, **dict(pop.coords), **m, **dict(extra[i])}
                                  for i, m in enumerate(pop.members)])
        for measure in measures:
            t0 = time.perf_counter()
            with precision.full():              # every measured number at full float32 on every backend
                for column, values in measure(ctx, tp).items():
                    table.set(rows, column, values)
            log(f"population {pop.name}: {_measure_name(measure)} {time.perf_counter() - t0:.1f} s")
        ctx.cache.clear()
    out.log(table.records(study=study.name))
    out.write_csv("members.csv", table.member_rows())

    figures = []
    for fig in study.figures(cfg):
        figures.append(fig.draw(table, out.path).name)
    verdicts = claims_lib.judge(study.claims(cfg), table)
    summary_rows = _means(table, study.group_by, study.summary(cfg))
    out.write_csv("means.csv", summary_rows)
    out.write_json("verdicts.json", [dataclasses.asdict(v) for v in verdicts])
    out.write_json("evaluation.json", ctx.log)
    out.write_text("report.md", _report(study, cfg, data, trained, ctx, verdicts, summary_rows, figures))
    log(f"wrote {out.path / 'report.md'}")
    return {"verdicts": verdicts, "table": table}


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
    # pivot: one row per group, one column per key (mean ± s.d.)
    pivot: dict[tuple, dict] = {}
    for r in rows:
        row = pivot.setdefault(tuple(r[b] for b in by), {b: r[b] for b in by})
        row[r["column"]] = f"{r['mean']:.4g} ± {r['std']:.2g}"
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
    lines = ["Robust accuracy of the least and the most compressed member at the headline ε as the attack budget "
             "doubles (iterations at one restart, then restarts at the most iterations; the same random streams at "
             "every budget). A headline is **converged** when the last doubling on each axis moves it by < 0.5 pp.",
             "", "| population | member | norm | ε | " + " | ".join(
                 f"{b['n_iter']}×{b['n_restarts']}" for b in rows[0]["budgets"]) + " | last doubling (pp) | converged |",
             "|---|---|---|---|" + "---|" * len(rows[0]["budgets"]) + "---|---|"]
    for r in rows:
        moved = max([v for v in r["last_doubling_pp"].values() if v is not None], default=float("nan"))
        lines.append(f"| {r['population']} | {r['member']} | {r['norm']} | {r['eps']} | " + " | ".join(
            f"{b['robust_acc'][0]:.3f}" for b in r["budgets"]) + f" | {moved:.2f} | {'yes' if r['converged'] else '**no**'} |")
    all_conv = all(r["converged"] for r in rows)
    lines += ["", f"Headline: **{'converged' if all_conv else 'not converged'}** at this preset's budget."]
    return lines


def _report(study: Study, cfg, data, trained, ctx: Context, verdicts, summary_rows, figures) -> str:
    d_in = int(np.prod(data.train_images.shape[1:]))
    lines = [f"# {study.title}", ""]
    lines += ["## Setup (as run)", "",
              f"- Data: **{data.name}**, {data.train_images.shape[0]} train / {data.test_images.shape[0]} test "
              f"({data.source}); input dimension {d_in}, {data.num_classes} classes."]
    for tp in trained:
        t = tp.fit
        lines.append(f"- Population `{tp.name}`: {type(tp.model).__name__} "
                     f"({', '.join(f'{k}={v}' for k, v in tp.coords.items()) or 'no constant coordinates'}), "
                     f"{tp.size} members, trained in {t.wall_time:.1f} s ({t.compiles} compile(s) in this call).")
    lines.append(f"- Training: {_train_line(cfg.train)}.")
    if study.setup is not None:
        lines.append(f"- {study.setup(cfg, data)}")
    lines += ["", "## Evaluation (as run)", ""]
    e = ctx.eval
    for norm, attacks in ctx.log["attacks"].items():
        lines.append(f"- {norm}: {attacks}; ε grid {', '.join(format_eps(v) for v in e.grid(norm))} (pixel units), "
                     f"headline ε = {format_eps(e.headline(norm))}.")
    lines.append("- Precision: every measurement (attacks included) at full float32 matmul precision on every backend "
                 "(`crobust.precision.full`).")
    lines.append(f"- Points: the first {int(ctx.x.shape[0])} test points, the same for every member; true labels; "
                 f"per point the worst case over the attacks; clean and robust accuracy on the same points.")
    lines.append("- Randomness: each member's attack noise derives from its seed and a named stream, never from its "
                 "position in the population.")
    lines += ["", "### Evaluation checks", "", *_check_lines(ctx), ""]
    lines += ["### Attack-budget convergence", "", *_convergence_lines(ctx), ""]
    if ctx.log["weaker"]:
        lines += ["### What a weaker evaluation would report", "",
                  "The reference code's only attack library is ART; its AutoProjectedGradientDescent differs from "
                  "AutoAttack's APGD (FINDINGS.md §2). Run beside the ensemble at each headline ε: "
                  + "; ".join(f"{n}: {d}" for n, d in ctx.log["weaker"].items())
                  + ". `art_overstatement` = RA(ART) − RA(ensemble) per member is in the table of means; claims "
                    "marked “(ART)” below repeat a headline claim on the ART numbers, so a verdict that depends on "
                    "the evaluation shows as a disagreement.", ""]
    lines += ["## Verdicts", "",
              f"Each claim is judged by the rule printed after it; the p-values of the trend, comparison and "
              f"correlation claims ({sum(v.p_value is not None for v in verdicts)} here) are two-sided and "
              f"Holm-corrected together at level {claims_lib.LEVEL}.", ""]
    lines += [v.line() for v in verdicts] + [""]
    lines += ["## Means per group (mean ± s.d. over seeds)", "", report_lib.markdown_table(summary_rows), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += ["Numbers behind every figure: the `.csv` beside it; per member: `members.csv`; every measurement: "
              "`metrics.jsonl`; means: `means.csv`; verdicts: `verdicts.json`; evaluation log: `evaluation.json`.", ""]
    lines += ["## Choices made here (the paper is silent)", ""] + [f"- {n}" for n in study.notes(cfg)] + [""]
    return "\n".join(lines)


def _train_line(t: training.TrainConfig) -> str:
    parts = [f"{t.optimizer} lr {t.lr:g}, weight decay {t.weight_decay:g}, batch {t.batch_size}, ≤ {t.max_steps} steps, "
             f"matmul precision {t.matmul_precision}"]
    if t.patience is not None:
        parts.append(f"early stopping on validation loss (patience {t.patience}, min {t.min_steps} steps, "
                     f"{t.val_ratio:.0%} held out per member)")
    if t.regularizer != "none":
        parts.append(f"penalty {t.regularizer} × α")
    if t.projection != "none":
        parts.append(f"projection {t.projection} after every step")
    if t.adversarial is not None:
        a = t.adversarial
        parts.append(f"PGD adversarial training ({a.norm}, ε {format_eps(a.eps)}, {a.n_iter} steps of "
                     f"{format_eps(a.step_size)}, {a.ratio:.0%} of each batch)")
    return "; ".join(parts)


__all__ = ["Population", "Study", "run", "check_workdir", "check_plotting"]
