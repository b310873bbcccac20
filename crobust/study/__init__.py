"""The study framework: each study of the paper declared as populations → measures → claims → figures → report.

A study module (``experiments/<study>.py``) is a configuration (nested blocks, presets as deltas), its populations,
the measures applied to them, the paper's claims judged on the resulting member table, declared figures and the
study's notes; :class:`Study` and :func:`run` do the rest (run directory, training with checkpoints, records,
figures, verdicts with a multiple-claims correction, ``report.md``).

- :mod:`~crobust.study.blocks` — configuration blocks (data, model, grid, evaluation, measurement; training is
  :class:`crobust.training.TrainConfig`) and :class:`StudyConfig`;
- :mod:`~crobust.study.measures` and its siblings ``measures_*`` — the measures (clean and robust accuracy,
  margins, layer metrics, spectra, representation shift, singular-direction alignment, bounds, decision boundary,
  universal perturbations, pruning sweeps, …); :data:`MEASURES` is every one of them by name;
  :mod:`~crobust.study.dependencies` — what a measure needs from another, and the order they run in;
- :mod:`~crobust.study.table` — the member table and its records;
- :mod:`~crobust.study.claims` — claim rules (trend, comparison, correlation, inequality for every member, flat)
  and Holm's correction;
- :mod:`~crobust.study.figures` — declared figures;
- :mod:`~crobust.study.runner` — the runner and ``report.md``; :mod:`~crobust.study.cli` — the command line;
- :mod:`~crobust.study.catalog` — the paper's claims C1–C11 and which study tests each.
"""

from crobust.study import blocks, catalog, claims, figures, measures, table
from crobust.study.blocks import DataConfig, EvalConfig, GridConfig, MeasureConfig, ModelConfig, StudyConfig
from crobust.study.claims import Compare, Correlation, Flat, Holds, Matched, Trend, Verdict, judge
from crobust.study.figures import Curves, Panel, Panels
from crobust.study import (dependencies, measures_boundary, measures_bounds, measures_compressibility,
                           measures_pruning, measures_universal)
from crobust.study.measures import headline_ra
from crobust.study.runner import Population, Study, run
from crobust.study.table import Column, MemberTable, col

def _catalogue() -> dict:
    out = {}
    for module in (measures, measures_bounds, measures_boundary, measures_compressibility, measures_pruning,
                   measures_universal):
        for name, factory in module.MEASURES.items():
            if name in out:
                raise ImportError(f"two measures named {name!r}")
            out[name] = factory
    return out


MEASURES = _catalogue()
"""Every measure factory of the framework by name (each module's ``MEASURES`` together)."""

__all__ = [
    "blocks", "catalog", "claims", "dependencies", "figures", "measures", "table",
    "DataConfig", "EvalConfig", "GridConfig", "MeasureConfig", "ModelConfig", "StudyConfig",
    "Compare", "Correlation", "Flat", "Holds", "Matched", "Trend", "Verdict", "judge",
    "Curves", "Panel", "Panels", "MEASURES", "headline_ra", "Population", "Study", "run", "Column", "MemberTable",
    "col",
]
