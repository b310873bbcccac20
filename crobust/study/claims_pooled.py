"""A claim rule for relations pooled over several sources of compressibility (``source_invariance``).

:class:`PooledCorrelation` — "x and y correlate with sign s over the members of several groups together": the
members are those matching any of the coordinate selections in ``select`` (every member when empty). With
``within=None`` it is the plain pooled correlation; with ``within='source'`` each member's x and y are first
centred on the mean of its group (the members sharing its ``source`` coordinate), so the statistic is the pooled
*within-group* correlation

    r_w = Σ_i (x_i − x̄_{g(i)}) (y_i − ȳ_{g(i)}) / √(Σ_i (x_i − x̄_{g(i)})² · Σ_i (y_i − ȳ_{g(i)})²),

which a difference between the groups' levels cannot create (e.g. one source that is both more compressible and
less accurate on average, while within every source the relation is flat or reversed: Simpson's paradox). Its
permutation p-value shuffles y *within* each group (the null: no relation inside any group, group levels kept).
Supported / contradicted as :class:`crobust.study.claims.Correlation` (sign, |r| ≥ ``min_abs_r``, two-sided p,
Holm-corrected with the study's other p-values by :func:`crobust.study.claims.judge`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from crobust.study.claims import (TOO_FEW, Verdict, _Claim, _decide, correlation_null, group_codes, pearson,
                                  permutation_p, spearman)
from crobust.study.table import MemberTable


def centre_within(values, groups) -> np.ndarray:
    """values − (mean of values over the members of the same group): (n,) → (n,)."""
    values = np.asarray(values, float)
    groups = np.asarray(groups, dtype=object)
    out = values.copy()
    for g in dict.fromkeys(groups.tolist()):
        sel = groups == g
        out[sel] = values[sel] - values[sel].mean()
    return out


def within_correlation(x, y, groups, method: str = "pearson") -> float:
    """The pooled within-group correlation r_w (module docstring); ``method='spearman'`` ranks x and y over all
    members first."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if method == "spearman":
        from crobust.study.claims import _ranks
        x, y = _ranks(x), _ranks(y)
    return pearson(centre_within(x, groups), centre_within(y, groups))


def permute_within(y, groups, rng) -> np.ndarray:
    """y with its values shuffled inside each group (group memberships and each group's multiset kept)."""
    y = np.asarray(y, float).copy()
    groups = np.asarray(groups, dtype=object)
    for g in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == g)
        y[idx] = y[rng.permutation(idx)]
    return y


@dataclasses.dataclass(frozen=True)
class PooledCorrelation(_Claim):
    x: str = ""
    y: str = ""
    select: tuple = ()            # ((("source", "l1"),), (("source", "nuclear"), ("alpha", 0.01)), …); () = all
    within: Optional[str] = None  # a coordinate: centre x and y within its groups first
    sign: int = 1
    method: str = "pearson"
    min_abs_r: float = 0.3
    n_perm: int = 2000
    seed: int = 0

    @property
    def rule(self) -> str:
        kind = (f"pooled within-`{self.within}` {self.method} r (x and y centred per `{self.within}`, permutation "
                f"within `{self.within}`)" if self.within else f"pooled {self.method} r")
        return (f"{kind} of `{self.x}` and `{self.y}` with sign {'+' if self.sign > 0 else '−'}, stated effect |r| ≥ "
                f"{self.min_abs_r}, and permutation p < level")

    def needs(self):
        return (self.x, self.y)

    def mask(self, table: MemberTable) -> np.ndarray:
        if not self.select:
            return np.ones(len(table), bool)
        mask = np.zeros(len(table), bool)
        for sel in self.select:
            mask |= table.where(**dict(sel))
        return mask

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        mask = self.mask(table)
        x, y = np.asarray(table[self.x], float)[mask], np.asarray(table[self.y], float)[mask]
        groups = (np.asarray(table.coord(self.within), dtype=object)[mask] if self.within
                  else np.zeros(int(mask.sum()), dtype=object))
        ok = np.isfinite(x) & np.isfinite(y)
        x, y, groups = x[ok], y[ok], groups[ok]
        if len(x) < 4:
            return self._skip("fewer than four members with finite values", TOO_FEW), None
        r, null = correlation_null(x, y, group_codes(groups), self.method, self.n_perm, self.seed)
        p = permutation_p(null, r)
        verdict, reason = _decide(float(self.sign), r, r, 0.0, p if p_adjusted is None else p_adjusted,
                                  self.min_abs_r, level, stat_name="r")
        n_groups = len(set(groups.tolist()))
        detail = (f"r = {r:+.3f} over {len(x)} members" + (f" in {n_groups} groups" if self.within else "")
                  + f"; pooled Spearman ρ (uncentred) = {spearman(x, y):+.3f}"
                  + (f"; {int((~ok).sum())} member(s) without finite values left out" if (~ok).any() else ""))
        return Verdict(self.paper, self.text, verdict, self.rule, {"r": r, "n": len(x), "groups": n_groups}, p,
                       p_adjusted, detail, reason=reason), p


__all__ = ["PooledCorrelation", "centre_within", "within_correlation", "permute_within"]
