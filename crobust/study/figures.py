"""Figures declared as data and drawn from the member table; every PNG is written with the CSV of its numbers.

- :class:`Panels` — one figure of panels, each a column (or several, labelled) against a coordinate such as α:
  mean ± s.d. over seeds with every member as a dot (:func:`crobust.report.plot_panels`);
- :class:`Curves` — a measurement over its ε grid (``robust_acc`` per ``norm``), one curve per group of members
  (e.g. per α), mean ± s.d. (:func:`crobust.report.plot_curves`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from crobust import report
from crobust.config import parse_number
from crobust.study.table import MemberTable


@dataclasses.dataclass(frozen=True)
class Panel:
    y: Union[str, Mapping[str, str]]        # a table key, or {curve label: table key}
    ylabel: str
    title: str = ""


@dataclasses.dataclass(frozen=True)
class Panels:
    name: str
    x: str
    panels: tuple
    xlabel: str
    title: str = ""
    where: tuple = ()

    def draw(self, table: MemberTable, folder: Path) -> Path:
        mask = table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)
        spec = []
        for p in self.panels:
            ys = p.y if isinstance(p.y, Mapping) else {p.ylabel: p.y}
            present = {label: table[key][mask] for label, key in ys.items() if key in table}
            if present:
                spec.append({"y": present if isinstance(p.y, Mapping) else next(iter(present.values())),
                             "ylabel": p.ylabel, "title": p.title})
        seeds = table.coord("seed")[mask]
        return report.plot_panels(folder / f"{self.name}.png", table[self.x][mask], spec, xlabel=self.xlabel,
                                  title=self.title, seeds=seeds)


@dataclasses.dataclass(frozen=True)
class Curves:
    name: str
    norm: str
    group_by: str = "alpha"
    measurement: str = "robust_acc"
    xlabel: str = ""
    ylabel: str = "robust accuracy"
    title: str = ""
    where: tuple = ()

    def draw(self, table: MemberTable, folder: Path) -> Path:
        mask = table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)
        cols = [(parse_number(str(dict(c.qualifiers)["eps"])), key) for key, c in table.meta.items()
                if c.measurement == self.measurement and dict(c.qualifiers).get("norm") == self.norm]
        cols.sort()
        xs = np.array([e for e, _ in cols])
        values = np.stack([table[key] for _, key in cols], axis=1)[mask]            # (members, E)
        groups = table.coord(self.group_by)[mask]
        curves = {}
        for g in dict.fromkeys(groups.tolist()):
            sel = groups == g
            label = f"{self.group_by}={g:g}" if isinstance(g, float) else f"{self.group_by}={g}"
            curves[label] = (xs, np.nanmean(values[sel], 0), np.nanstd(values[sel], 0))
        return report.plot_curves(folder / f"{self.name}.png", curves,
                                  xlabel=self.xlabel or f"ε ({self.norm}, pixel units)", ylabel=self.ylabel,
                                  title=self.title)


__all__ = ["Panel", "Panels", "Curves"]
