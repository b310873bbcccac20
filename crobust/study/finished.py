"""A finished run, opened in Python: its config, member table and trained members, without retraining.

::

    run = crobust.study.open_run("reports/small/spectral_fixed_scale")
    run.config                   # the resolved study config (config.json, rebuilt as the study's dataclasses)
    run.members                  # members.csv: one dict per member (population, member, coordinates, measures)
    pop = run["mlp"]             # a TrainedPopulation: model, members, best parameters and batch statistics
    acc = crobust.evaluation.population_robust_accuracy(pop.apply_fn, pop.variables, run.data.test_images, …)

:func:`open_run` reads ``run.json`` (which study, which preset), rebuilds the config from ``config.json``, loads
the data (the run's ``data_source`` must be the same), asks the study for its populations and reads each one's
final training checkpoint (``<workdir>/checkpoints/<population>``; a source of another study from that study's
folder, :mod:`crobust.study.staging`), in dependency order, nothing trained: a population whose checkpoint is
missing or unfinished is one clear error. Each :class:`~crobust.study.measures.TrainedPopulation` holds the
model (for a stage: the whole model, e.g. encoder + probe, as the measures attack it in pixel space), its
members, the best-validation parameters and the batch-norm statistics that go with them, and the
:class:`~crobust.training.FitResult` (final state, history) — what the measures read, so any measure can be
applied again: ``measure(Context.build(run.config.eval, run.config.measure, run.datasets["mlp"]), run["mlp"])``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from crobust._errors import CrobustError
from crobust.config import from_dict
from crobust.study import staging
from crobust.study.measures import TrainedPopulation


@dataclasses.dataclass
class FinishedRun:
    """What :func:`open_run` returns: the run folder, its study, the config, ``run.json``, the study's dataset, the
    member table (``members.csv`` rows, numbers parsed), the trained populations by name and the dataset each was
    trained and measured on (the study's, or a stage's own)."""

    path: Path
    study: Any
    config: Any
    status: dict
    data: Any
    members: list
    populations: dict
    datasets: dict

    def __getitem__(self, name: str) -> TrainedPopulation:
        if name not in self.populations:
            raise CrobustError(f"no population {name!r} in {self.path} (populations: {', '.join(self.populations)})")
        return self.populations[name]


def open_run(workdir, study=None) -> FinishedRun:
    """Open the study run in ``workdir`` (module docstring). ``study``: the :class:`~crobust.study.Study` that ran
    (default: ``experiments.<name>.STUDY`` for the name in ``run.json``)."""
    path = Path(workdir)
    status = _read_json(path / "run.json")
    if study is None:
        try:
            study = importlib.import_module(f"experiments.{status['study']}").STUDY
        except (ImportError, AttributeError, KeyError):
            raise CrobustError(f"{path}: cannot find the study {status.get('study')!r} that wrote it (pass "
                               f"open_run(workdir, study=...))") from None
    if status.get("study") != study.name:
        raise CrobustError(f"{path} holds a run of {status.get('study')!r}, not of {study.name!r}")
    preset = status.get("preset")
    template = study.presets.get(preset) or next(iter(study.presets.values()))
    recorded = {k: v for k, v in _read_json(path / "config.json").items() if k != "provenance"}   # not a setting
    config = from_dict(template, recorded)
    data = config.data.load()
    if status.get("data_source") is not None and getattr(data, "source", None) != status["data_source"]:
        raise CrobustError(f"{path} was run on {status['data_source']}; this machine loads {data.source}")
    populations, datasets, fits = {}, {}, {}
    for pop in staging.in_dependency_order(study.populations(config, data)):
        source_fit = None
        if pop.start is not None and pop.start.source_name not in fits:       # a population of another study
            src = pop.start.source
            fits[pop.start.source_name] = staging.restore_finished(src, staging.population_data(src, data),
                                                                   staging.checkpoint_dir(path, src, pop.start))
        if pop.start is not None:
            source_fit = fits[pop.start.source_name]
        pdata = datasets[pop.name] = staging.population_data(pop, data)
        fit = fits[pop.name] = staging.restore_finished(pop, pdata, staging.checkpoint_dir(path, pop), source_fit)
        populations[pop.name] = TrainedPopulation(pop.name, pop.model, list(pop.members), dict(pop.coords), fit,
                                                  fit.best_params, fit.best_model_state,
                                                  stage=staging.describe_stage(pop, pdata))
    return FinishedRun(path=path, study=study, config=config, status=status, data=data,
                       members=_read_members(path / "members.csv"), populations=populations, datasets=datasets)


def _read_json(file: Path) -> dict:
    if not file.is_file():
        raise CrobustError(f"{file.parent} is not a study run folder (no {file.name})")
    return json.loads(file.read_text())


def _read_members(file: Path) -> list:
    """``members.csv`` rows with numbers as numbers and empty cells as None."""
    if not file.is_file():
        raise CrobustError(f"{file.parent} has no {file.name}: the run did not get as far as measuring")
    with open(file, newline="", encoding="utf-8") as f:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell(text: str):
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
