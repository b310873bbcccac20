"""Figures (matplotlib, PNG) with the numbers behind them (CSV), trend verdicts, and ``report.md`` assembly.

Verdicts. A claim of the paper of the form "Y falls (rises) as the compression strength x grows" is judged on
all members of a study (every x value × every seed) by :func:`trend_verdict`:

- Spearman's rank correlation ρ between x and Y over members, with a one-sided permutation p-value (Y shuffled
  across members, 2000 permutations, fixed seed, so the verdict is reproducible);
- the difference of the group means between the largest x and the smallest x, with its standard error from the
  seed spread.

``supported``: ρ has the claimed sign, |ρ| ≥ 0.5, p < 0.05 and the end-to-end change has the claimed sign and
exceeds two standard errors. ``contradicted``: the same in the opposite direction. Otherwise
``inconclusive``. The numbers are printed next to every verdict so a reader can apply their own threshold.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from crobust.records import write_csv


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str          # 'supported' | 'contradicted' | 'inconclusive' | 'skipped'
    rho: float
    p_value: float
    change: float         # mean(Y | largest x) − mean(Y | smallest x)
    change_se: float
    detail: str = ""

    def line(self) -> str:
        if self.verdict == "skipped":
            return f"- **{self.claim}** — skipped: {self.detail}"
        return (f"- **{self.claim}** — **{self.verdict}** (Spearman ρ = {self.rho:+.2f}, one-sided permutation "
                f"p = {self.p_value:.3g}; change from smallest to largest setting {self.change:+.4g} ± "
                f"{self.change_se:.2g} s.e.){(' ' + self.detail) if self.detail else ''}")


def _ranks(a):
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    # average ties
    for v in np.unique(a):
        idx = a == v
        if idx.sum() > 1:
            ranks[idx] = ranks[idx].mean()
    return ranks


def spearman(x, y) -> float:
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / den) if den > 0 else 0.0


def trend_verdict(claim: str, x, y, direction: str, *, n_perm: int = 2000, seed: int = 0,
                  min_abs_rho: float = 0.5, alpha_level: float = 0.05) -> Verdict:
    """Judge "Y moves in ``direction`` ('decreasing' or 'increasing') as x grows" over members (see module doc)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2 or len(x) < 4:
        return Verdict(claim, "inconclusive", float("nan"), float("nan"), float("nan"), float("nan"),
                       "(fewer than two settings or four members with finite values)")
    sign = -1.0 if direction == "decreasing" else 1.0
    rho = spearman(x, y)
    rng = np.random.default_rng(seed)
    perm = np.array([spearman(x, rng.permutation(y)) for _ in range(n_perm)])
    p_claim = (1 + np.sum(sign * perm >= sign * rho)) / (n_perm + 1)
    p_opp = (1 + np.sum(-sign * perm >= -sign * rho)) / (n_perm + 1)
    lo, hi = y[x == x.min()], y[x == x.max()]
    change = float(hi.mean() - lo.mean())
    se = float(math.sqrt((lo.var(ddof=1) / len(lo) if len(lo) > 1 else 0.0)
                         + (hi.var(ddof=1) / len(hi) if len(hi) > 1 else 0.0)))
    big = abs(change) > 2 * se
    if sign * rho >= min_abs_rho and p_claim < alpha_level and sign * change > 0 and big:
        verdict, p = "supported", p_claim
    elif -sign * rho >= min_abs_rho and p_opp < alpha_level and -sign * change > 0 and big:
        verdict, p = "contradicted", p_opp
    else:
        verdict, p = "inconclusive", p_claim
    return Verdict(claim, verdict, rho, float(p), change, se)


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
