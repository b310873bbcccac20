"""The study framework: each study of the paper declared as populations → measures → claims → figures → report.

A study module (``experiments/<study>.py``) is a configuration (nested blocks, presets as deltas), its populations,
the measures applied to them, the paper's claims judged on the resulting member table, declared figures and the
study's notes; :class:`Study` and :func:`run` do the rest (run directory, training with checkpoints, records,
figures, verdicts with a multiple-claims correction, ``report.md``).

- :mod:`~crobust.study.blocks` — configuration blocks (data, model, grid, evaluation, measurement; training is
  :class:`crobust.training.TrainConfig`) and :class:`StudyConfig`;
- :mod:`~crobust.study.measures` and its siblings ``measures_*`` — the measures (clean and robust accuracy,
  margins, layer metrics, spectra, representation shift, singular-direction alignment, bounds, decision boundary,
  universal perturbations, pruning sweeps, per-point robustness radii, …); :data:`MEASURES` is every one of them by name;
  :mod:`~crobust.study.dependencies` — what a measure needs from another, and the order they run in;
- :mod:`~crobust.study.table` — the member table and its records;
- :mod:`~crobust.study.claims` — claim rules (trend, comparison, correlation, matched, inequality for every member,
  flat) in primary / secondary / check families, each Holm-corrected; :mod:`~crobust.study.power` — the power
  check of a preset's claims before any training (``--power``);
- :mod:`~crobust.study.figures` — declared figures (``figures_*``: the decision-boundary, scatter and radii
  figures);
- :mod:`~crobust.study.runner` — the runner and ``report.md``; :mod:`~crobust.study.cli` — the command line;
- :mod:`~crobust.study.staging` — staged populations (start from another population's trained members);
- :mod:`~crobust.study.finished` — :func:`open_run`: a finished run's config, member table and trained members;
- :mod:`~crobust.study.catalog` — the paper's claims C1–C11 and which study tests each;
- :mod:`~crobust.study.recipes` — the training recipes (MNIST and CIFAR-10 MLPs, ResNet-18, ViT fine-tuning) and the
  smoke preset's deltas that every study derives its presets from.
"""

from crobust.study import blocks, catalog, claims, figures, measures, recipes, table
from crobust.study.blocks import DataConfig, EvalConfig, GridConfig, MeasureConfig, ModelConfig, StudyConfig
from crobust.study.claims import Compare, Correlation, Flat, Holds, Matched, NoGain, Trend, Verdict, judge
from crobust.study.figures import Curves, Panel, Panels
from crobust.study import (dependencies, measures_boundary, measures_bounds, measures_compressibility,
                           measures_pruning, measures_radii, measures_universal)
from crobust.study.measures import headline_ra
from crobust.study.finished import FinishedRun, open_run
from crobust.study.runner import Population, Study, run
from crobust.study.staging import Start
from crobust.study.table import Column, MemberTable, col

def _catalogue() -> dict:
    out = {}
    for module in (measures, measures_bounds, measures_boundary, measures_compressibility, measures_pruning,
                   measures_radii, measures_universal):
        for name, factory in module.MEASURES.items():
            if name in out:
                raise ImportError(f"two measures named {name!r}")
            out[name] = factory
    return out


MEASURES = _catalogue()
"""Every measure factory of the framework by name (each module's ``MEASURES`` together)."""

__all__ = [
    "blocks", "catalog", "claims", "dependencies", "figures", "measures", "recipes", "table",
    "DataConfig", "EvalConfig", "GridConfig", "MeasureConfig", "ModelConfig", "StudyConfig",
    "Compare", "Correlation", "Flat", "Holds", "Matched", "NoGain", "Trend", "Verdict", "judge",
    "Curves", "Panel", "Panels", "MEASURES", "headline_ra", "Population", "Study", "run", "Column", "MemberTable",
    "col", "FinishedRun", "open_run", "Start",
]
