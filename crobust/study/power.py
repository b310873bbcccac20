"""The power check of a study's claims at a preset, before any training (``python -m experiments.<study> --preset P
--power``).

For every claim it answers: with the members this preset trains, what is the smallest p-value the claim's rule can
reach, what is that p after Holm's correction in the claim's family, and would a planted effect of the stated size be
detected? Nothing is trained: the member table's coordinates come from the study's populations (:func:`layout`),
and each claim is judged on a *planted* table (:func:`plant`) whose columns hold an exact, noise-free effect:

- trend / matched: y = 1 + s·E·g(x) + a_seed (g the rank of x's setting scaled to [0, 1], a_seed zero-mean seed
  levels the paired design must remove; for :class:`~crobust.study.claims.Matched` also ``match`` = 0.9 + 0.02·u
  with u a fixed pseudo-random number per member, and y += 0.5·(match − 0.9));
- compare: y = 1 + s·E·[member in group a] + a_seed;
- correlation (plain or pooled): x = the member's index, y = s·sign·x (|r| = 1);
- no gain (:class:`~crobust.study.claims.NoGain`): every column y = 1 + a_seed, and for the reversed case a gain
  of 2 × the margin in group a;
- flat / no-drop (unpaired rules): y = 1, and for the reversed case a change of 2 × the tolerance;
- holds: lhs = rhs ± 0.5.

E is the stated effect (``min_change``, or ``min_fraction`` × 1, the baseline being 1), s = +1 (claimed direction),
−1 (reversed) or 0 (null). A noise-free monotone effect gives the rule's most extreme statistic, so the claimed
table's p-value is the smallest the rule can reach (up to the Monte-Carlo error of ``n_perm`` permutations), under
the assumption that every member trains (a diverged member leaves the rule fewer members). The *best case in its
family* is Holm's correction of the vector of every family member's smallest p. A planted effect is *detected*
when the rule, given that adjusted p, says ``supported``. The check fails (exit status 1) when a primary claim
cannot reach the level or would not detect its planted effect.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from crobust import data as data_lib
from crobust.study import claims as C
from crobust.study.claims_pooled import PooledCorrelation
from crobust.study.table import MemberTable

BASE = 1.0


def stand_in_data(cfg) -> data_lib.Dataset:
    """The dataset the populations are built from: the real one where it needs no download (``digits``, the
    synthetic task — its input dimension can be a coordinate), else one zero image with the dataset's channel
    statistics (the populations read only ``num_classes``, ``mean`` and ``std`` of a downloaded dataset)."""
    if cfg.data.dataset in ("digits", "synthetic_gaussian"):
        return cfg.data.load()
    mean, std = data_lib.REFERENCE_STATS.get(cfg.data.dataset, ((0.5,), (0.25,)))
    classes = data_lib.dataset_num_classes(cfg.data.dataset, cfg.data.classes) or 10
    img = np.zeros((1, 1, 1, len(mean)), np.uint8)
    return data_lib.Dataset(cfg.data.dataset, img, np.zeros(1, np.int32), img, np.zeros(1, np.int32), classes, mean,
                            std, source="stand-in for the power check (no images)")


def layout(study, cfg) -> MemberTable:
    """The member table the preset's run would fill: every member's coordinates, no column."""
    table = MemberTable()
    for pop in study.populations(cfg, stand_in_data(cfg)):
        table.add_members(pop.member_rows())
    return table


def _seed_levels(table: MemberTable) -> np.ndarray:
    if C.SEED not in table:
        return np.zeros(len(table))
    codes = C.group_codes(table.coord(C.SEED))
    return 0.05 * (codes - codes.mean()) if len(codes) else codes.astype(float)


def _setting(table: MemberTable, claim, x: str) -> np.ndarray:
    """g(x) over the claim's members (0 elsewhere): the setting's rank among the claim's settings, in [0, 1]."""
    mask = claim.mask(table)
    xs = np.asarray(table[x], float)
    g = np.zeros(len(table))
    if mask.any():
        values = np.unique(xs[mask])
        g[mask] = np.searchsorted(values, xs[mask]) / max(1, len(values) - 1)
    return g


def stated_effect(claim) -> float:
    """The effect a rule must see (at the baseline of 1 the planted tables use)."""
    return max(getattr(claim, "min_change", 0.0), getattr(claim, "min_fraction", 0.0) * BASE)


def plant(claim, table: MemberTable, s: float, size: float = 1.0) -> MemberTable:
    """A copy of ``table`` (coordinates) with the columns ``claim`` reads holding a planted effect: ``s`` = +1 in
    the claimed direction, −1 reversed, 0 none; ``size`` × the stated effect (module docstring)."""
    out = MemberTable()
    out.add_members(table.coords)
    rows = slice(0, len(out))
    levels = _seed_levels(out)
    effect = s * size * (stated_effect(claim) or 0.1)
    if isinstance(claim, C.Trend):
        out.set(rows, claim.y, BASE + claim.sign * effect * _setting(out, claim, claim.x) + levels)
    elif isinstance(claim, C.Matched):
        u = np.random.default_rng(0).random(len(out))
        out.set(rows, claim.match, 0.9 + 0.02 * u)
        out.set(rows, claim.y, BASE + claim.sign * effect * _setting(out, claim, claim.x) + levels + 0.01 * u)
    elif isinstance(claim, C.Compare):
        in_a = out.where(**dict(claim.a)).astype(float)
        out.set(rows, claim.y, BASE + claim.sign * effect * in_a + levels)
    elif isinstance(claim, (C.Correlation, PooledCorrelation)):
        index = np.arange(len(out), dtype=float)
        out.set(rows, claim.x, index)
        out.set(rows, claim.y, s * claim.sign * index)
    elif isinstance(claim, C.NoGain):
        in_a = out.where(**dict(claim.a)).astype(float)
        for key in claim.ys:                      # claimed: no gain; reversed: a gain of twice the margin
            out.set(rows, key, BASE - min(s, 0.0) * 2 * claim.min_change * in_a + levels)
    elif isinstance(claim, C.Flat):
        out.set(rows, claim.y, BASE - min(s, 0.0) * 2 * claim.tolerance * _setting(out, claim, claim.x))
    elif isinstance(claim, C.Holds):
        rhs = np.ones(len(out)) if isinstance(claim.rhs, str) else np.full(len(out), float(claim.rhs))
        if isinstance(claim.rhs, str):
            out.set(rows, claim.rhs, rhs)
        away = 0.5 * (1.0 if claim.relation == ">=" else -1.0) * (1.0 if s >= 0 else -1.0)
        out.set(rows, claim.lhs, rhs + away * (s != 0))
    elif hasattr(claim, "planted"):             # a rule that plants its own columns (e.g. ColumnsPaired)
        claim.planted(out, s * size, stated_effect(claim) or 0.1)
    else:
        raise TypeError(f"no planted table for a {type(claim).__name__} claim")
    return out


@dataclasses.dataclass(frozen=True)
class PowerRow:
    claim: object
    p_min: float | None         # the rule's smallest p with these members (None: the rule has no p-value)
    p_best: float | None        # Holm-adjusted as the best case in its family
    detected: bool | None       # a planted effect of the stated size is supported at p_best
    note: str = ""

    @property
    def ok(self) -> bool:
        """A primary claim passes when its rule detects its planted effect (at the best-case adjusted p where it has
        one): a rule that cannot reach the level, or skips even with every member trained, fails."""
        return self.claim.family != "primary" or bool(self.detected)


def power(claims, table: MemberTable, level: float = C.LEVEL) -> list[PowerRow]:
    """One :class:`PowerRow` per claim (module docstring)."""
    first = []
    for c in claims:
        v, p = c.test(plant(c, table, +1.0), level)
        first.append((c, v, p))
    best: dict[int, float] = {}
    for family in C.FAMILIES:
        idx = [i for i, (c, _, p) in enumerate(first) if p is not None and c.family == family]
        best.update(zip(idx, C.holm([first[i][2] for i in idx])))
    rows = []
    for i, (c, v, p) in enumerate(first):
        if v.verdict == "skipped":
            rows.append(PowerRow(c, None, None, False, f"skipped with every member trained: {v.detail}"))
        elif p is None:
            rows.append(PowerRow(c, None, None, v.verdict == "supported", "no p-value (a deterministic rule)"))
        else:
            detected = c.test(plant(c, table, +1.0), level, p_adjusted=best[i])[0].verdict == "supported"
            rows.append(PowerRow(c, p, best[i], detected))
    return rows


def report(study, cfg, preset: str, level: float = C.LEVEL) -> tuple[list[str], bool]:
    """The lines ``--power`` prints and whether every primary claim passes."""
    table = layout(study, cfg)
    rows = power(study.claims(cfg), table, level)
    fmt = lambda v: "—" if v is None else f"{v:.3g}"
    lines = [f"Power check: {study.name}, preset {preset}: {len(table)} members; level {level}; the smallest p each "
             f"rule can reach with these members (every member trained), Holm-adjusted as the best case in its "
             f"family, and whether a planted effect of the stated size is detected.", "",
             "| family | claim | stated effect | smallest p | best case in family | planted effect detected |",
             "|---|---|---|---|---|---|"]
    for family in C.FAMILIES:
        for r in (r for r in rows if r.claim.family == family):
            effect = stated_effect(r.claim)
            effect = (f"|r| ≥ {r.claim.min_abs_r:g}" if hasattr(r.claim, "min_abs_r") else f"{effect:g}" if effect
                      else "—")
            lines.append(f"| {family} | {r.claim.paper}: {r.claim.text} | {effect} | "
                         f"{fmt(r.p_min)} | {fmt(r.p_best)} | "
                         f"{'yes' if r.detected else '**no**'}{f' ({r.note})' if r.note else ''} |")
    failing = [r for r in rows if not r.ok]
    lines += ["", f"{len(failing)} primary claim(s) cannot reach the level at this preset" if failing
              else "Every primary claim can reach the level at this preset."]
    return lines, not failing


def main(study, cfg, preset: str, out=None) -> int:
    """Print :func:`report` (to ``out``, default stdout); 0 when every primary claim passes, else 1."""
    lines, ok = report(study, cfg, preset)
    print("\n".join(lines), file=out or sys.stdout)
    return 0 if ok else 1


__all__ = ["stand_in_data", "layout", "plant", "stated_effect", "PowerRow", "power", "report", "main"]
