"""The per-point radii figure, drawn from the member table and the radii a
:func:`crobust.study.measures_radii.radii` measure keeps in a :class:`~crobust.study.measures_radii.RadiiStore`;
PNG + CSV as every study figure (:func:`crobust.report._save`).

Left panel: each clean-correct point of every member, certified radius (x) against attack radius (y), log-log, one
colour per setting (the value of the coordinate ``group_by`` of the point's member), with the line y = x: the
invariant certified ≤ true ≤ attack radius puts every point on or above it. Points with a radius of 0 or +∞ cannot
sit on log axes and are counted in the title instead. Where the models have no certificate (convolutional members)
the panel shows the empirical distribution of the attack radii per setting instead.

Right panel: per setting, robust accuracy against ε from the radii (``robust_acc_radii``: the share of points whose
attack radius exceeds ε; solid) and the ensemble's (``robust_acc``; dashed), each the mean over the setting's
members.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from crobust import report
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.study.measures_radii import RadiiStore
from crobust.study.table import MemberTable, col


@dataclasses.dataclass(frozen=True)
class RadiiFigure:
    name: str
    store: RadiiStore
    norm: str
    group_by: str = "alpha"
    title: str = ""

    def _label(self, g) -> str:
        return f"{self.group_by}={g:g}" if isinstance(g, float) else f"{self.group_by}={g}"

    def draw(self, table: MemberTable, folder: Path) -> Path:
        present = set(table.coord("population").tolist())
        entries = [(pop, v[self.norm]) for pop, v in self.store.items() if self.norm in v and pop in present]
        if not entries:
            raise CrobustError(f"figure {self.name}: no {self.norm} radii measured (list the radii measure)")
        plt = report._pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4))
        groups = table.coord(self.group_by)
        levels = list(dict.fromkeys(groups.tolist()))
        cmap = plt.get_cmap("viridis", max(len(levels), 2))
        colour = {g: cmap(i) for i, g in enumerate(levels)}
        rows, off_axes, certified_any = [], 0, False
        by_group: dict = {}
        for pop, v in entries:
            for m in range(v["attack"].shape[0]):
                row = np.flatnonzero(table.where(population=pop, member=m))
                if row.size == 0:                     # a diverged member: not in the table
                    continue
                g = groups[row[0]]
                ok = v["correct"][m]
                a = v["attack"][m][ok]
                c = None if v["certified"] is None else v["certified"][m][ok]
                by_group.setdefault(g, []).append(a)
                for i in range(a.size):
                    rows.append({"panel": "points", "population": pop, "member": m, "setting": self._label(g),
                                 "attack_radius": float(a[i]),
                                 "certified_radius": None if c is None else float(c[i])})
                if c is not None:
                    certified_any = True
                    show = np.isfinite(a) & np.isfinite(c) & (a > 0) & (c > 0)
                    off_axes += int(np.sum(~show))
                    left.scatter(c[show], a[show], s=6, alpha=0.5, color=colour[g])
        if certified_any:
            for g in levels:
                left.scatter([], [], s=12, color=colour[g], label=self._label(g))
            lo_hi = [r[k] for r in rows for k in ("attack_radius", "certified_radius")
                     if r[k] is not None and np.isfinite(r[k]) and r[k] > 0]
            if lo_hi:
                lo, hi = min(lo_hi), max(lo_hi)
                left.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1, label="y = x")
                left.set_xscale("log")
                left.set_yscale("log")
            left.set_xlabel(f"certified radius ({self.norm}, pixel units)")
            left.set_ylabel(f"attack radius, FMN ({self.norm})")
            left.set_title(f"certified ≤ true ≤ attack radius per point\n({off_axes} points at 0 or ∞ not drawn)",
                           fontsize=9)
        else:
            for g in levels:
                a = np.sort(np.concatenate(by_group.get(g, [np.array([])])))
                if a.size:
                    finite = np.isfinite(a)
                    left.step(a[finite], (np.arange(1, a.size + 1) / a.size)[finite], where="post",
                              color=colour[g], label=self._label(g))
            left.set_xlabel(f"attack radius, FMN ({self.norm}, pixel units)")
            left.set_ylabel("fraction of clean-correct points")
            left.set_title("attack radii (no certified radius for these models)", fontsize=9)
        left.grid(alpha=0.3)
        if left.get_legend_handles_labels()[0]:
            left.legend(fontsize=7)
        eps = entries[0][1]["eps"]
        for g in levels:
            sel = groups == g
            for measurement, ls, what in (("robust_acc_radii", "-", "radii"), ("robust_acc", "--", "ensemble")):
                keys = [col(measurement, norm=self.norm, eps=format_eps(e)) for e in eps]
                if not all(k in table for k in keys):
                    continue
                values = np.stack([table[k][sel] for k in keys], axis=1)
                values = values[np.isfinite(values).all(axis=1)]       # members this measure did not measure: out
                if not len(values):
                    continue
                mean = values.mean(axis=0)
                right.plot(eps, mean, ls=ls, marker="o", ms=3, color=colour[g], label=f"{self._label(g)} ({what})")
                for e, v in zip(eps, mean):
                    rows.append({"panel": "curve", "setting": self._label(g), "source": what, "eps": float(e),
                                 "robust_acc": float(v)})
        right.set_xlabel(f"ε ({self.norm}, pixel units)")
        right.set_ylabel("robust accuracy")
        right.set_title("robust accuracy from the radii (solid) and the ensemble (dashed)", fontsize=9)
        right.grid(alpha=0.3)
        right.legend(fontsize=6)
        if self.title:
            fig.suptitle(self.title, fontsize=11)
        fields = ("panel", "population", "member", "setting", "attack_radius", "certified_radius", "source", "eps",
                  "robust_acc")
        return report._save(plt, fig, Path(folder) / f"{self.name}.png",
                            [{k: r.get(k) for k in fields} for r in rows])


__all__ = ["RadiiFigure"]
