"""A scatter figure drawn from the member table: one dot per member for each (label → table key) series against a
column, coloured by a coordinate (e.g. the rank), with the line y = x for reference (a bound against the quantity
it bounds lies above it): :class:`Scatter`; and :class:`ScatterPanels`, members as points on common axes coloured by
a coordinate (e.g. the source of their compressibility). PNG + CSV as every study figure (:func:`crobust.report._save`)."""

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


@dataclasses.dataclass(frozen=True)
class ScatterPanels:
    """Panels of y against x, one point per member, one colour per value of ``color_by``; ``panels`` is a tuple
    of ``(x key, y key, xlabel, ylabel)``. Members with a non-finite x or y are left out of a panel (and out of its
    CSV)."""

    name: str
    panels: tuple
    color_by: str = "source"
    title: str = ""

    def draw(self, table: MemberTable, folder: Path) -> Path:
        plt = report._pyplot()
        n = len(self.panels)
        fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.0), squeeze=False)
        groups = np.asarray(table.coord(self.color_by), dtype=object)
        seeds = table.coord("seed")
        rows = []
        for ax, (xk, yk, xlabel, ylabel) in zip(axes.flat, self.panels):
            if xk not in table or yk not in table:
                ax.set_title(f"not measured: {xk if xk not in table else yk}", fontsize=9)
                continue
            x, y = np.asarray(table[xk], float), np.asarray(table[yk], float)
            for g in dict.fromkeys(groups.tolist()):
                sel = (groups == g) & np.isfinite(x) & np.isfinite(y)
                if not sel.any():
                    continue
                ax.scatter(x[sel], y[sel], s=18, alpha=0.75, label=str(g))
                rows += [{"panel": f"{yk} vs {xk}", self.color_by: str(g), "x": float(a), "y": float(b),
                          "seed": None if not np.isfinite(s) else int(s)} for a, b, s in zip(x[sel], y[sel], seeds[sel])]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, title=self.color_by, title_fontsize=7)
        if self.title:
            fig.suptitle(self.title, fontsize=11)
        return report._save(plt, fig, Path(folder) / f"{self.name}.png", rows)


__all__ = ["Scatter", "ScatterPanels"]
