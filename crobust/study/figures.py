"""Figures declared as data and drawn from the member table; every PNG is written with the CSV of its numbers.

- :class:`Panels` — one figure of panels, each a column (or several, labelled) against a coordinate such as α:
  mean ± s.d. over seeds with every member as a dot (:func:`crobust.report.plot_panels`);
- :class:`Curves` — a measurement over the values of one of its qualifiers (``over``: its ε grid, a pruning ratio,
  a universal ε, …) with the other qualifiers fixed (``fixed``, e.g. the norm), one curve per group of members
  (e.g. per α), mean ± s.d. (:func:`crobust.report.plot_curves`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from crobust import report
from crobust._errors import CrobustError
from crobust.config import parse_number
from crobust.study.table import MemberTable


@dataclasses.dataclass(frozen=True)
class Panel:
    y: Union[str, Mapping[str, str]]        # a table key, or {curve label: table key}
    ylabel: str
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Panels:
    """Panels against the coordinate ``x`` over the members ``where`` selects; with ``split_by`` (a coordinate such
    as ``population``) every curve is drawn once per value g of it, labelled "<label> (g)", from the members with
    that value only (the others' values are left out as NaN)."""

    name: str
    x: str
    panels: tuple
    xlabel: str
    title: str = ""
    where: tuple = ()
    split_by: str = ""          # a coordinate: each curve drawn once per value of it (e.g. one per arm)

    def draw(self, table: MemberTable, folder: Path) -> Path:
        mask = table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)
        spec = []
        for p in self.panels:
            ys = p.y if isinstance(p.y, Mapping) else {p.ylabel: p.y}
            present = {label: table[key][mask] for label, key in ys.items() if key in table}
            if self.split_by and present:
                present = self._split(table, mask, present)
                p = dataclasses.replace(p, y=present)
            if present:
                spec.append({"y": present if isinstance(p.y, Mapping) else next(iter(present.values())),
                             "ylabel": p.ylabel, "title": p.title})
        seeds = table.coord("seed")[mask]
        return report.plot_panels(folder / f"{self.name}.png", table[self.x][mask], spec, xlabel=self.xlabel,
                                  title=self.title, seeds=seeds)

    def _split(self, table: MemberTable, mask, present: Mapping) -> dict:
        groups = table.coord(self.split_by)[mask]
        return {f"{label} ({g:g})" if isinstance(g, float) else f"{label} ({g})": np.where(groups == g, values, np.nan)
                for label, values in present.items() for g in dict.fromkeys(groups.tolist())}


@dataclasses.dataclass(frozen=True)
class Curves:
    """``measurement`` against the numeric values of its qualifier ``over``, among the columns whose other
    qualifiers include ``fixed`` (a tuple of (name, value) pairs; ``norm``, when given, adds ``('norm', norm)``):
    one curve per value of the coordinate ``group_by`` over the members selected by ``where``, mean ± s.d.

    ``Curves('ra_vs_eps', norm='linf')`` is robust accuracy over the ℓ∞ ε grid; ``Curves('ra_vs_ratio',
    measurement='pruned_robust_acc', over='ratio', fixed=(('norm', 'linf'), ('criterion', 'ratio')))`` is robust
    accuracy against the pruning ratio. A figure with no matching column is one clear error."""

    name: str
    norm: str = ""
    group_by: str = "alpha"
    measurement: str = "robust_acc"
    xlabel: str = ""
    ylabel: str = "robust accuracy"
    title: str = ""
    where: tuple = ()
    over: str = "eps"
    fixed: tuple = ()

    def conditions(self) -> dict:
        return {**({"norm": self.norm} if self.norm else {}), **{k: str(v) for k, v in self.fixed}}

    def draw(self, table: MemberTable, folder: Path) -> Path:
        mask = table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)
        fixed = self.conditions()
        cols = []
        for key, c in table.meta.items():
            q = {k: str(v) for k, v in c.qualifiers}
            if c.measurement == self.measurement and self.over in q and all(q.get(k) == v for k, v in fixed.items()):
                cols.append((parse_number(q[self.over]), key))
        if not cols:
            raise CrobustError(f"figure {self.name}: no column {self.measurement} over {self.over!r} with "
                               f"{fixed or 'no fixed qualifier'} in the table")
        cols.sort()
        xs = np.array([v for v, _ in cols])
        values = np.stack([table[key] for _, key in cols], axis=1)[mask]            # (members, X)
        groups = table.coord(self.group_by)[mask]
        curves = {}
        for g in dict.fromkeys(groups.tolist()):
            sel = groups == g
            label = f"{self.group_by}={g:g}" if isinstance(g, float) else f"{self.group_by}={g}"
            curves[label] = (xs, np.nanmean(values[sel], 0), np.nanstd(values[sel], 0))
        default_x = f"ε ({self.norm}, pixel units)" if self.over == "eps" and self.norm else self.over
        return report.plot_curves(folder / f"{self.name}.png", curves, xlabel=self.xlabel or default_x,
                                  ylabel=self.ylabel, title=self.title)


__all__ = ["Panel", "Panels", "Curves"]
