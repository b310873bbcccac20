"""Figures (matplotlib, PNG), each written with the numbers behind it (CSV), and markdown tables.

Claims and their verdicts are :mod:`crobust.study.claims`; the report that assembles everything is
:mod:`crobust.study.runner`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from crobust.records import write_csv


def group_stats(x, y) -> list[dict]:
    """Per distinct x: mean, standard deviation, min, max and count of y (NaNs dropped)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rows = []
    for v in np.unique(x):
        g = y[(x == v) & np.isfinite(y)]
        rows.append({"x": float(v), "mean": float(g.mean()) if g.size else float("nan"),
                     "std": float(g.std(ddof=1)) if g.size > 1 else 0.0,
                     "min": float(g.min()) if g.size else float("nan"),
                     "max": float(g.max()) if g.size else float("nan"), "n": int(g.size)})
    return rows


def _pyplot():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_panels(path: Path, x, panels: Sequence[Mapping], *, xlabel: str, title: str = "", ncols: int = 3,
                seeds=None) -> Path:
    """One figure of panels, each a metric against x: mean ± s.d. over seeds, individual members as dots.

    ``panels``: dicts with ``y`` (one value per member, or a mapping label → values for several curves),
    ``ylabel`` and optional ``title``. x is shared (one value per member). A symlog x axis is used when x spans
    more than a decade and contains 0 (α = 0 is the uncompressed baseline). The numbers behind the figure are
    written next to it as ``<name>.csv`` (one row per member and curve).
    """
    plt = _pyplot()
    x = np.asarray(x, float)
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    rows = []
    pos = x[x > 0]
    for ax, panel in zip(axes.flat, panels):
        curves = panel["y"] if isinstance(panel["y"], Mapping) else {panel["ylabel"]: panel["y"]}
        for label, y in curves.items():
            y = np.asarray(y, float)
            stats = group_stats(x, y)
            xs = np.array([s["x"] for s in stats])
            mean = np.array([s["mean"] for s in stats])
            sd = np.array([s["std"] for s in stats])
            line, = ax.plot(xs, mean, marker="o", label=label if len(curves) > 1 else None)
            ax.fill_between(xs, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
            ax.scatter(x, y, s=8, alpha=0.35, color=line.get_color())
            for i in range(len(x)):
                rows.append({"panel": panel.get("title", panel["ylabel"]), "curve": label, "x": float(x[i]),
                             "seed": None if seeds is None else int(seeds[i]), "value": float(y[i])})
        if pos.size and (x == 0).any() and pos.max() / pos.min() > 10:
            ax.set_xscale("symlog", linthresh=float(pos.min()))
        elif pos.size and pos.min() > 0 and (x > 0).all() and pos.max() / pos.min() > 10:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(plt, fig, path, rows)


def _save(plt, fig, path, rows) -> Path:
    """Write the figure as PNG (atomically: a temporary name, then rename) and its numbers as ``<name>.csv``."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    write_csv(path.with_suffix(".csv"), rows)
    return path


def plot_curves(path: Path, curves: Mapping[str, tuple], *, xlabel: str, ylabel: str, title: str = "") -> Path:
    """Several (x, mean, sd) curves on one axis (e.g. robust accuracy against ε, one curve per α)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    rows = []
    for label, (xs, mean, sd) in curves.items():
        xs, mean, sd = map(np.asarray, (xs, mean, sd))
        line, = ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, mean - sd, mean + sd, alpha=0.15, color=line.get_color())
        rows += [{"curve": label, "x": float(a), "mean": float(b), "sd": float(c)} for a, b, c in zip(xs, mean, sd)]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path, rows)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, fmt: str = "{:.4g}") -> str:
    """A GitHub-markdown table of dict rows."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(fmt.format(v) if isinstance(v, (float, np.floating)) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
