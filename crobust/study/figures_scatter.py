"""A scatter figure drawn from the member table: one dot per member for each (label → table key) series against a
column, coloured by a coordinate (e.g. the rank), with the line y = x for reference (a bound against the quantity
it bounds lies above it); PNG + CSV as every study figure (:func:`crobust.report._save`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np

from crobust import report
from crobust.study.table import MemberTable

MARKERS = ("o", "s", "^", "D", "v")


@dataclasses.dataclass(frozen=True)
class Scatter:
    name: str
    x: str
    y: Mapping[str, str]                 # {series label: table key}
    color_by: str
    xlabel: str
    ylabel: str
    title: str = ""
    diagonal: bool = True
    log: bool = True

    def draw(self, table: MemberTable, folder: Path) -> Path:
        plt = report._pyplot()
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        x = np.asarray(table[self.x], float)
        groups = table.coord(self.color_by)
        levels = list(dict.fromkeys(groups.tolist()))
        cmap = plt.get_cmap("viridis", max(len(levels), 2))
        rows, ys = [], []
        for si, (label, key) in enumerate(self.y.items()):
            if key not in table:
                continue
            y = np.asarray(table[key], float)
            ys.append(y)
            for gi, g in enumerate(levels):
                sel = groups == g
                ax.scatter(x[sel], y[sel], color=cmap(gi), marker=MARKERS[si % len(MARKERS)], s=28, alpha=0.8,
                           label=f"{label}, {self.color_by}={g:g}" if isinstance(g, float) else f"{label}, {g}")
            for i in range(len(x)):
                rows.append({"series": label, self.color_by: groups[i], "population": table.coords[i].get("population"),
                             "member": table.coords[i].get("member"), "x": float(x[i]), "y": float(y[i])})
        if self.diagonal and ys:
            vals = np.concatenate([x] + ys)
            vals = vals[np.isfinite(vals) & (vals > 0)] if self.log else vals[np.isfinite(vals)]
            if vals.size:
                lo, hi = vals.min(), vals.max()
                ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1, label="y = x")
        if self.log and np.all(x[np.isfinite(x)] > 0):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(self.xlabel)
        ax.set_ylabel(self.ylabel)
        ax.set_title(self.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        return report._save(plt, fig, Path(folder) / f"{self.name}.png", rows)


__all__ = ["Scatter"]
