"""Claims of the paper, declared as data and judged on the member table by stated rules.

A study declares its claims; :func:`judge` evaluates them together and returns one :class:`Verdict` each —
``supported``, ``contradicted`` (the data show the opposite, by the same rule: a finding), ``inconclusive`` or
``skipped`` (a column it needs is missing or has too few finite values). Every rule prints its statistics and
thresholds next to the verdict, so a reader can apply their own.

Rules (x, y are table keys — a coordinate such as ``alpha`` or a measured column; ``where`` restricts the members):

- :class:`Trend` — "y falls (rises) as x grows": Spearman's ρ over members with a permutation p-value (y shuffled
  across members, ``n_perm`` permutations, fixed seed), and the change of the mean of y from the smallest to the
  largest x with its standard error from the seed spread. Supported: ρ has the claimed sign, |ρ| ≥ ``min_abs_rho``,
  p < level and |change| > 2 s.e. in the claimed direction; contradicted: the same in the opposite direction
  (p is two-sided and, in a family, Holm-adjusted).
- :class:`Compare` — "y is lower (higher) in group a than in group b": difference of means, permutation p-value
  over the pooled members, standard error; supported / contradicted as for a trend.
- :class:`Correlation` — "x and y correlate with sign s (the paper reports r = target)": Pearson (or Spearman) r,
  permutation p-value; supported when r has sign s, |r| ≥ ``min_abs_r`` and p < level. The target is printed
  beside r (and their difference), not used in the decision.
- :class:`Holds` — "lhs ≥ rhs for every member" (or ≤): a deterministic check, supported when no member violates it
  (beyond ``tol`` relative), contradicted otherwise, with the count and the worst member.
- :class:`Matched` — the trend of y between the smallest and largest x over member pairs matched on a confound
  (e.g. clean accuracy within 1 point): paired differences, sign-flip permutation p-value.
- :class:`Flat` — "y changes by less than ``tolerance`` across x": the largest distance of a setting's mean from the
  baseline (smallest x) setting's mean, ± 2 s.e.; supported when even the upper end stays below the tolerance,
  contradicted when even the lower end exceeds it.

**Multiple claims.** The rules with a p-value (trend, compare, correlation, matched) are one family: each claim's p-value
is two-sided (twice the one-sided p in the direction the data point to, since either outcome is reported) and the
family is corrected with Holm's step-down method (:func:`holm`) before the level is applied. ``correction=None``
turns the correction off; the report says which. :class:`Holds` and :class:`Flat` have no p-value and are not
part of the family.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from crobust.study.table import MemberTable

LEVEL = 0.05
VERDICTS = ("supported", "contradicted", "inconclusive", "skipped")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judgement of one claim: ``verdict`` ∈ :data:`VERDICTS`, the statistics it rests on, the rule."""

    paper: str            # the paper's claim id ('C3') or a study-local id ('E1')
    text: str
    verdict: str
    rule: str
    stats: Mapping = dataclasses.field(default_factory=dict)
    p_value: Optional[float] = None        # two-sided, before correction
    p_adjusted: Optional[float] = None     # after the family correction
    detail: str = ""

    def line(self) -> str:
        head = f"- **{self.paper}: {self.text}** — **{self.verdict}**"
        if self.verdict == "skipped":
            return f"{head}: {self.detail}"
        parts = [self.detail] if self.detail else []
        if self.p_value is not None:
            parts.append(f"p = {self.p_value:.3g}" + (f", Holm-adjusted {self.p_adjusted:.3g}"
                                                      if self.p_adjusted is not None else ""))
        return f"{head} ({'; '.join(parts)}). Rule: {self.rule}"


def _fmt(v) -> str:
    return f"{v:+.3g}" if isinstance(v, float) else str(v)


def _ranks(a):
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=float)
    for v in np.unique(a):                       # average ties
        idx = a == v
        if idx.sum() > 1:
            ranks[idx] = ranks[idx].mean()
    return ranks


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(x * x) * np.sum(y * y)))
    return float(np.sum(x * y) / den) if den > 0 else 0.0


def spearman(x, y) -> float:
    return pearson(_ranks(x), _ranks(y))


def _permutation_p(stat_fn, x, y, observed: float, n_perm: int, seed: int) -> tuple[float, float]:
    """One-sided permutation p-values (P[T ≥ observed], P[T ≤ observed]) with y shuffled across members."""
    rng = np.random.default_rng(seed)
    perm = np.array([stat_fn(x, rng.permutation(y)) for _ in range(n_perm)])
    tol = 1e-12 * max(1.0, abs(observed))
    return ((1 + np.sum(perm >= observed - tol)) / (n_perm + 1), (1 + np.sum(perm <= observed + tol)) / (n_perm + 1))


def _two_sided(p_up: float, p_down: float) -> float:
    return float(min(1.0, 2 * min(p_up, p_down)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎)."""
    p = np.asarray(p_values, float)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclasses.dataclass(frozen=True)
class _Claim:
    paper: str
    text: str

    def _select(self, table: MemberTable, *keys):
        mask = table.where(**dict(self.where)) if getattr(self, "where", None) else np.ones(len(table), bool)
        arrays = [np.asarray(table[k], float)[mask] for k in keys]
        ok = np.ones(int(mask.sum()), bool)
        for a in arrays:
            ok &= np.isfinite(a)
        return [a[ok] for a in arrays], int(mask.sum() - ok.sum())

    def _skip(self, why: str) -> Verdict:
        return Verdict(self.paper, self.text, "skipped", self.rule, detail=why)

    def needs(self) -> tuple[str, ...]:
        return ()


def _directional(sign: float, stat: float, change: float, se: float, p: float, min_abs: float,
                 level: float) -> str:
    """Supported / contradicted when the (two-sided, family-corrected) p is below ``level`` and the statistic and
    the change both point the claimed / the opposite way (|statistic| ≥ ``min_abs``, |change| > 2 s.e.)."""
    if not p < level or not abs(change) > 2 * se:
        return "inconclusive"
    if sign * stat >= min_abs and sign * change > 0:
        return "supported"
    if -sign * stat >= min_abs and -sign * change > 0:
        return "contradicted"
    return "inconclusive"


@dataclasses.dataclass(frozen=True)
class Trend(_Claim):
    x: str = "alpha"
    y: str = ""
    direction: str = "decreasing"
    where: tuple = ()
    min_abs_rho: float = 0.5
    n_perm: int = 2000
    seed: int = 0

    @property
    def rule(self) -> str:
        return (f"trend of `{self.y}` against `{self.x}`: Spearman |ρ| ≥ {self.min_abs_rho} with the claimed sign "
                f"({self.direction}), permutation p < level, and mean change from smallest to largest "
                f"`{self.x}` beyond 2 s.e.")

    def needs(self):
        return (self.x, self.y)

    def test(self, table: MemberTable, level: float, p_adjusted=None) -> tuple[Verdict, Optional[float]]:
        (x, y), dropped = self._select(table, self.x, self.y)
        if len(np.unique(x)) < 2 or len(x) < 4:
            return self._skip(f"fewer than two settings or four members with finite `{self.y}`"), None
        rho = spearman(x, y)
        p_up, p_down = _permutation_p(spearman, x, y, rho, self.n_perm, self.seed)
        lo, hi = y[x == x.min()], y[x == x.max()]
        change = float(hi.mean() - lo.mean())
        se = _se(lo, hi)
        p = _two_sided(p_up, p_down)
        sign = -1.0 if self.direction == "decreasing" else 1.0
        verdict = _directional(sign, rho, change, se, p if p_adjusted is None else p_adjusted, self.min_abs_rho, level)
        detail = (f"Spearman ρ = {rho:+.2f} over {len(x)} members; change {change:+.4g} ± {se:.2g} s.e."
                  + (f"; {dropped} member(s) without a finite value left out" if dropped else ""))
        return Verdict(self.paper, self.text, verdict, self.rule, {"rho": rho, "change": change, "se": se,
                                                                    "n": len(x), "dropped": dropped},
                       p, p_adjusted, detail), p


def _se(a, b) -> float:
    return float(math.sqrt((a.var(ddof=1) / len(a) if len(a) > 1 else 0.0)
                           + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0)))


@dataclasses.dataclass(frozen=True)
class Compare(_Claim):
    y: str = ""
    a: tuple = ()            # coordinates of group a, e.g. (("alpha", 0.1),)
    b: tuple = ()
    direction: str = "less"  # y in a is less than (greater than) y in b
    n_perm: int = 2000
    seed: int = 0

    @property
    def rule(self) -> str:
        return (f"`{self.y}` in {dict(self.a)} {'<' if self.direction == 'less' else '>'} in {dict(self.b)}: "
                f"difference of means beyond 2 s.e. and permutation p < level")

    def needs(self):
        return (self.y,)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        y = np.asarray(table[self.y], float)
        ga, gb = y[table.where(**dict(self.a)) & np.isfinite(y)], y[table.where(**dict(self.b)) & np.isfinite(y)]
        if len(ga) < 2 or len(gb) < 2:
            return self._skip("fewer than two members with finite values in a group"), None
        diff = float(ga.mean() - gb.mean())
        pooled = np.concatenate([ga, gb])
        labels = np.r_[np.ones(len(ga)), np.zeros(len(gb))]
        stat = lambda lab, v: float(v[lab == 1].mean() - v[lab == 0].mean())
        p_up, p_down = _permutation_p(stat, labels, pooled, diff, self.n_perm, self.seed)
        p = _two_sided(p_up, p_down)
        se = _se(ga, gb)
        sign = -1.0 if self.direction == "less" else 1.0
        verdict = _directional(sign, float(np.sign(diff)), diff, se, p if p_adjusted is None else p_adjusted, 0.0,
                               level)
        detail = f"difference {diff:+.4g} ± {se:.2g} s.e. ({len(ga)} vs {len(gb)} members)"
        return Verdict(self.paper, self.text, verdict, self.rule, {"difference": diff, "se": se}, p, p_adjusted,
                       detail), p


@dataclasses.dataclass(frozen=True)
class Correlation(_Claim):
    x: str = ""
    y: str = ""
    sign: int = 1
    method: str = "pearson"
    target: Optional[float] = None
    min_abs_r: float = 0.5
    where: tuple = ()
    n_perm: int = 2000
    seed: int = 0

    @property
    def rule(self) -> str:
        return (f"{self.method} r of `{self.x}` and `{self.y}` with sign {'+' if self.sign > 0 else '−'}, |r| ≥ "
                f"{self.min_abs_r} and permutation p < level" + (f" (the paper reports {self.target})"
                                                                 if self.target is not None else ""))

    def needs(self):
        return (self.x, self.y)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (x, y), dropped = self._select(table, self.x, self.y)
        if len(x) < 4:
            return self._skip("fewer than four members with finite values"), None
        fn = pearson if self.method == "pearson" else spearman
        r = fn(x, y)
        p_up, p_down = _permutation_p(fn, x, y, r, self.n_perm, self.seed)
        p = _two_sided(p_up, p_down)
        verdict = _directional(float(self.sign), r, r, 0.0, p if p_adjusted is None else p_adjusted, self.min_abs_r,
                               level)
        detail = f"{self.method} r = {r:+.3f} over {len(x)} members, Spearman ρ = {spearman(x, y):+.3f}"
        if self.target is not None:
            detail += f"; paper {self.target:+.3f} (difference {r - self.target:+.3f})"
        return Verdict(self.paper, self.text, verdict, self.rule, {"r": r, "rho": spearman(x, y), "n": len(x)}, p,
                       p_adjusted, detail), p


@dataclasses.dataclass(frozen=True)
class Holds(_Claim):
    lhs: str = ""
    rhs: Union[str, float] = ""      # a table key or a constant
    relation: str = ">="
    tol: float = 0.0          # relative slack: lhs ≥ rhs·(1 − tol) counts as holding
    where: tuple = ()

    @property
    def rule(self) -> str:
        rhs = f"`{self.rhs}`" if isinstance(self.rhs, str) else f"{self.rhs:g}"
        return (f"`{self.lhs}` {self.relation} {rhs} for every member"
                + (f" (relative slack {self.tol:g})" if self.tol else ""))

    def needs(self):
        return (self.lhs,) if not isinstance(self.rhs, str) else (self.lhs, self.rhs)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        if isinstance(self.rhs, str):
            (lhs, rhs), dropped = self._select(table, self.lhs, self.rhs)
        else:
            (lhs,), dropped = self._select(table, self.lhs)
            rhs = np.full_like(lhs, float(self.rhs))
        if len(lhs) == 0:
            return self._skip("no member with finite values"), None
        slack = self.tol * np.abs(rhs)
        ok = lhs >= rhs - slack if self.relation == ">=" else lhs <= rhs + slack
        margin = (lhs - rhs) if self.relation == ">=" else (rhs - lhs)
        worst = int(np.argmin(margin))
        detail = (f"{int((~ok).sum())} of {len(ok)} members violate it; tightest margin {margin[worst]:+.4g} "
                  f"({self.lhs} = {lhs[worst]:.4g}, {self.rhs} = {rhs[worst]:.4g})"
                  + (f"; {dropped} member(s) without finite values left out" if dropped else ""))
        return Verdict(self.paper, self.text, "supported" if ok.all() else "contradicted", self.rule,
                       {"violations": int((~ok).sum()), "n": len(ok), "min_margin": float(margin[worst])},
                       detail=detail), None


@dataclasses.dataclass(frozen=True)
class Flat(_Claim):
    x: str = "alpha"
    y: str = ""
    tolerance: float = 0.05
    where: tuple = ()

    @property
    def rule(self) -> str:
        return (f"every setting's mean `{self.y}` within {self.tolerance:g} of the smallest `{self.x}`'s "
                f"(supported when the largest distance + 2 s.e. < {self.tolerance:g}; contradicted when the "
                f"largest distance − 2 s.e. > {self.tolerance:g})")

    def needs(self):
        return (self.x, self.y)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (x, y), dropped = self._select(table, self.x, self.y)
        if len(np.unique(x)) < 2:
            return self._skip("fewer than two settings"), None
        base = y[x == x.min()]
        dist = [(abs(y[x == v].mean() - base.mean()), _se(base, y[x == v]), v) for v in np.unique(x) if v != x.min()]
        d, se, at = max(dist, key=lambda t: t[0])
        verdict = ("supported" if d + 2 * se < self.tolerance else
                   "contradicted" if d - 2 * se > self.tolerance else "inconclusive")
        detail = f"largest change {d:.4g} ± {se:.2g} s.e. (at {self.x} = {at:g}) against tolerance {self.tolerance:g}"
        return Verdict(self.paper, self.text, verdict, self.rule, {"max_change": d, "se": se}, detail=detail), None


@dataclasses.dataclass(frozen=True)
class Matched(_Claim):
    """"y is lower (higher) at the largest x than at the smallest x, at matched ``match``": every pair (i at the
    smallest x, j at the largest x) with |match_i − match_j| ≤ ``within`` is compared; the mean of y_j − y_i over
    the pairs and a sign-flip permutation p-value over the pairs' differences decide (each member used once:
    pairs are formed greedily, closest first). Removes the trivial route "a regulariser lowers clean accuracy, so
    it lowers robust accuracy"."""

    x: str = "alpha"
    y: str = ""
    match: str = "clean_acc"
    within: float = 0.01
    direction: str = "decreasing"
    where: tuple = ()
    n_perm: int = 2000
    seed: int = 0

    @property
    def rule(self) -> str:
        return (f"`{self.y}` at the largest vs the smallest `{self.x}` over member pairs whose `{self.match}` differs "
                f"by ≤ {self.within:g}: mean paired difference beyond 2 s.e. in the claimed direction "
                f"({self.direction}) and sign-flip permutation p < level")

    def needs(self):
        return (self.x, self.y, self.match)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (x, y, m), dropped = self._select(table, self.x, self.y, self.match)
        if len(np.unique(x)) < 2:
            return self._skip("fewer than two settings"), None
        lo, hi = np.flatnonzero(x == x.min()), np.flatnonzero(x == x.max())
        cand = sorted((abs(m[i] - m[j]), i, j) for i in lo for j in hi if abs(m[i] - m[j]) <= self.within)
        used, pairs = set(), []
        for _, i, j in cand:
            if i not in used and j not in used:
                used |= {i, j}
                pairs.append((i, j))
        if len(pairs) < 2:
            return self._skip(f"fewer than two member pairs with `{self.match}` within {self.within:g}"), None
        d = np.array([y[j] - y[i] for i, j in pairs])
        mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
        rng = np.random.default_rng(self.seed)
        flips = np.array([np.mean(d * rng.choice([-1.0, 1.0], size=len(d))) for _ in range(self.n_perm)])
        tol = 1e-12 * max(1.0, abs(mean))
        p_up = (1 + np.sum(flips >= mean - tol)) / (self.n_perm + 1)
        p_down = (1 + np.sum(flips <= mean + tol)) / (self.n_perm + 1)
        p = _two_sided(p_up, p_down)
        sign = -1.0 if self.direction == "decreasing" else 1.0
        verdict = _directional(sign, float(np.sign(mean)), mean, se, p if p_adjusted is None else p_adjusted, 0.0,
                               level)
        detail = (f"{len(pairs)} matched pairs; mean difference {mean:+.4g} ± {se:.2g} s.e.; mean |Δ{self.match}| "
                  f"{np.mean([abs(m[i] - m[j]) for i, j in pairs]):.3g}")
        return Verdict(self.paper, self.text, verdict, self.rule, {"pairs": len(pairs), "difference": mean, "se": se},
                       p, p_adjusted, detail), p


def judge(claims: Sequence[_Claim], table: MemberTable, *, level: float = LEVEL,
          correction: Optional[str] = "holm") -> list[Verdict]:
    """Judge every claim on ``table``; the p-value family is Holm-corrected unless ``correction`` is None."""
    first = []
    for c in claims:
        missing = [k for k in c.needs() if k not in table]
        first.append((c, None, None) if missing else (c, *c.test(table, level)))
    if correction not in (None, "holm"):
        raise ValueError(f"unknown correction {correction!r}; use 'holm' or None")
    family = [i for i, (_, _, p) in enumerate(first) if p is not None]
    adjusted = dict(zip(family, holm([first[i][2] for i in family]))) if correction == "holm" else {}
    out = []
    for i, (c, verdict, p) in enumerate(first):
        if verdict is None:
            missing = [k for k in c.needs() if k not in table]
            out.append(c._skip(f"not measured: {', '.join(missing)}"))
        elif i in adjusted:
            out.append(c.test(table, level, p_adjusted=adjusted[i])[0])
        else:
            out.append(verdict)
    return out


__all__ = ["LEVEL", "VERDICTS", "Verdict", "Trend", "Compare", "Correlation", "Holds", "Flat", "Matched", "judge", "holm",
           "pearson", "spearman"]
