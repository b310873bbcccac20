"""A declared figure of members as points on a common axis, coloured by a coordinate (e.g. the source of their
compressibility): :class:`Scatter`. Written with the CSV of its numbers, like :mod:`crobust.study.figures`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from crobust import report
from crobust.study.table import MemberTable


@dataclasses.dataclass(frozen=True)
class Scatter:
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


__all__ = ["Scatter"]
