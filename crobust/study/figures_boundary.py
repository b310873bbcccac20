"""The decision-boundary figure (docs/paper.md §E2, Figure 1), drawn from the member table and the PCA view data that
:func:`crobust.study.measures_boundary.boundary_view` keeps; PNG + CSV as every study figure
(:func:`crobust.report._save`).

Panels: one per population (e.g. dense, low-rank) — the evaluation points in the PCA plane (colour = label), the
model's decision regions and boundary f = 0 on the plane slice through the mean, and each correctly classified
point's attack step ε·u projected on the plane (red where the boundary lies within ε along u, grey otherwise);
a last panel: the empirical distribution of the boundary distance t* along u, every member of each population,
with the budget ε marked. The member drawn per population: the pair (one per population) whose clean accuracies
are closest (the "equal clean accuracy" pair), ties to the lowest seed.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np

from crobust import report
from crobust._errors import CrobustError
from crobust.study.measures_boundary import ViewStore
from crobust.study.table import MemberTable


def matched_members(table: MemberTable, populations, match: str = "clean_acc") -> dict:
    """{population: member index} minimising the spread of ``match`` over one member per population."""
    choices = []
    for pop in populations:
        rows = np.flatnonzero(table.where(population=pop))
        if rows.size == 0:
            raise CrobustError(f"no members of population {pop!r} in the table")
        choices.append(rows)
    values = table[match]
    best = min(itertools.product(*choices), key=lambda rows: (np.ptp(values[list(rows)]), list(rows)))
    return {pop: int(table.coords[r]["member"]) for pop, r in zip(populations, best)}


@dataclasses.dataclass(frozen=True)
class BoundaryView:
    name: str
    store: ViewStore
    populations: tuple
    labels: tuple = ()                # a title per population panel (default: the population name)
    n_arrows: int = 40
    title: str = ""

    def draw(self, table: MemberTable, folder: Path) -> Path:
        missing = [p for p in self.populations if p not in self.store]
        if missing:
            raise CrobustError(f"figure {self.name}: no PCA view measured for population(s) {', '.join(missing)} "
                               f"(list the boundary_view measure)")
        pick = matched_members(table, self.populations)
        plt = report._pyplot()
        n = len(self.populations)
        fig, axes = plt.subplots(1, n + 1, figsize=(4.4 * (n + 1), 4.0), squeeze=False)
        rows = []
        for ax, pop, label in itertools.zip_longest(axes.flat[:n], self.populations, self.labels):
            v = self.store[pop]
            m = pick[pop]
            if v["size"] != int(table.where(population=pop).sum()):
                raise CrobustError(f"figure {self.name}: the PCA view of {pop!r} does not match the table's members")
            f = v["f"][m]
            acc = float(table["clean_acc"][table.where(population=pop, member=m)][0])
            ax.contourf(v["a"], v["b"], f, levels=[-np.inf, 0, np.inf], colors=["#c6dbef", "#fdd0a2"], alpha=0.6)
            if f.min() < 0 < f.max():
                ax.contour(v["a"], v["b"], f, levels=[0], colors="k", linewidths=1.5)
            pts, lab = v["points"], v["labels"]
            for c, colour in zip((0, 1), ("tab:blue", "tab:orange")):
                sel = lab == c
                ax.scatter(pts[sel, 0], pts[sel, 1], s=7, color=colour, alpha=0.6, label=f"class {c}")
            correct = v["correct"][m]
            idx = np.flatnonzero(correct)[: self.n_arrows]
            crossed = v["t"][m] <= v["eps"]
            for i in idx:
                d = v["arrow"][m, i]
                ax.annotate("", xy=(pts[i, 0] + d[0], pts[i, 1] + d[1]), xytext=(pts[i, 0], pts[i, 1]),
                            arrowprops=dict(arrowstyle="->", color="tab:red" if crossed[i] else "0.4", lw=0.9))
            share = float(np.mean(crossed[correct])) if correct.any() else float("nan")
            ax.set_title(f"{label or pop} (member {m}): clean acc {acc:.3f}\n"
                         f"{share:.0%} of correct points cross within ε={v['eps']:g} along u", fontsize=9)
            ax.set_xlabel(f"PC1 ({v['explained'][0]:.0%} var.)")
            ax.set_ylabel(f"PC2 ({v['explained'][1]:.0%} var.)")
            ax.legend(fontsize=7, loc="lower right")
            for i in range(len(pts)):
                rows.append({"panel": pop, "kind": "point", "member": m, "a": pts[i, 0], "b": pts[i, 1],
                             "label": int(lab[i]), "correct": bool(correct[i]), "t_star": float(v["t"][m, i]),
                             "arrow_a": float(v["arrow"][m, i, 0]), "arrow_b": float(v["arrow"][m, i, 1])})
            for j, bj in enumerate(v["b"]):
                for i, ai in enumerate(v["a"]):
                    rows.append({"panel": pop, "kind": "decision", "member": m, "a": float(ai), "b": float(bj),
                                 "value": float(f[j, i])})
        ax = axes.flat[n]
        eps = None
        for pop, label in itertools.zip_longest(self.populations, self.labels):
            v = self.store[pop]
            eps = v["eps"]
            t = v["t"][v["correct"]]
            t = np.sort(np.where(np.isfinite(t), t, np.inf))
            cdf = np.arange(1, len(t) + 1) / max(len(t), 1)
            finite = np.isfinite(t)
            ax.step(t[finite], cdf[finite], where="post", label=label or pop)
            for ti, ci in zip(t, cdf):
                rows.append({"panel": "cdf", "kind": "cdf", "member": "all", "a": float(ti), "value": float(ci),
                             "population": pop})
        ax.axvline(eps, color="k", ls="--", lw=1, label=f"ε = {eps:g}")
        ax.set_xlabel(f"boundary distance t* along u ({self.store[self.populations[0]]['norm']})")
        ax.set_ylabel("fraction of correct points (all members)")
        ax.set_title("distance to the boundary along the attack direction", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if self.title:
            fig.suptitle(self.title, fontsize=11)
        fields = ("panel", "kind", "population", "member", "a", "b", "value", "label", "correct", "t_star", "arrow_a",
                  "arrow_b")
        rows = [{k: r.get(k, r["panel"] if k == "population" else None) for k in fields} for r in rows]
        return report._save(plt, fig, Path(folder) / f"{self.name}.png", rows)


__all__ = ["BoundaryView", "matched_members"]
