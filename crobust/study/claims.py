"""Claims of the paper, declared as data and judged on the member table by stated rules.

A study declares its claims; :func:`judge` evaluates them together and returns one :class:`Verdict` each —
``supported``, ``contradicted`` (the data show the opposite, by the same rule: a finding), ``inconclusive`` or
``skipped`` (a column it needs is missing or too few members have finite values). An inconclusive or skipped
verdict carries its ``reason`` where one rule stopped it, e.g. "inconclusive (effect below 0.03)" or "skipped (too
few trained members)". Every rule prints its statistics, effect size and thresholds next to the verdict, so a
reader can apply their own.

**Families.** Every claim belongs to one :data:`FAMILIES` member: ``primary`` (the paper's C-claims the study
tests), ``secondary`` (mechanism and confound claims) or ``check`` (the manipulation worked, the scale held, an
inequality that holds by construction: a check of the setup, never evidence for a paper claim). The p-values of each
family are Holm-corrected together (:func:`holm`), apart from the other families'; the report lists checks in their
own section and the index's tally of a paper claim counts no check.

**Convergence.** A primary claim that reads a robust-accuracy column of a norm whose headline attack did not
converge on one of its members (``headline_converged[norm] == 0``) is at most "inconclusive (not converged)".

**Premises.** A claim with ``given`` (the text of another claim judged with it) is at most inconclusive unless
that claim is supported: "scale does not create universal vulnerability" says nothing where the α arm shows none
either.

**Paired designs.** Members that share a ``seed`` share their initialisation and data order, so the rules that
compare settings pair members by seed and permute only within a seed (the null: within every seed the setting does
not matter, seed levels kept). A table without a ``seed`` coordinate is one group (an unpaired design); the verdict
says which design was used.

Rules (x, y are table keys — a coordinate such as ``alpha`` or a measured column; ``where`` restricts the members):

- :class:`Trend` — "y falls (rises) as x grows": the mean over seeds of the within-seed Spearman ρ(x, y), its
  permutation p-value (y shuffled within each seed), and the change of y from the smallest to the largest x, the mean
  over seeds of y(seed, x_max) − y(seed, x_min) with its standard error over seeds. Supported: ρ̄ has the claimed
  sign, |ρ̄| ≥ ``min_abs_rho``, p < level, |change| > 2 s.e., and the change is at least the stated effect
  (``min_change`` in y's units, or ``min_fraction`` of |mean y at x_min|, whichever is larger); contradicted: the
  same in the opposite direction, whatever its size.
- :class:`Compare` — "y is lower (higher) in group a than in group b": the mean over seeds of the per-seed difference
  of the groups' means, a sign-flip p-value (the labels permuted within each seed), the stated effect as for a trend
  with the baseline group b.
- :class:`Correlation` — "x and y correlate with sign s (the paper reports r = target)": Pearson (or Spearman) r over
  members, permutation p-value (y shuffled across members); supported when r has sign s, |r| ≥ ``min_abs_r`` (the
  effect) and p < level. The target is printed beside r, not used in the decision.
- :class:`Matched` — "y changes with x at equal ``match``" (e.g. robust accuracy at equal clean accuracy): the
  least-squares model y = a_seed + β·g(x) + γ·match, g the rank of x's setting scaled to [0, 1] (so β is the change
  from the smallest to the largest setting at fixed ``match``); Freedman–Lane permutation p-value of β (residuals of
  y = a_seed + γ·match permuted within seeds); the effect is β. Every member enters the model, so the permutation
  space is (K!)^S for K settings and S seeds, not the 2^P sign flips of P matched pairs: with 4 settings × 3 seeds
  its smallest two-sided p is ≈ 2/(n_perm + 1). Skipped when β is not identifiable (``match`` constant within seeds
  or collinear with the setting).
- :class:`Holds` — "lhs ≥ rhs for every member" (or ≤): a deterministic check, supported when no member violates it
  (beyond ``tol`` relative), contradicted otherwise, with the count and the worst member.
- :class:`NoGain` — "y in group a never significantly exceeds y in group b at any of several columns" (e.g. per
  pruning ratio): per column a one-sided sign-flip test of a gain (seeds paired), Holm over the columns;
  contradicted by a significant gain, supported when no gain is significant and every column's gain + 2 s.e.
  stays below the stated margin.
- :class:`Flat` — "y changes by less than ``tolerance`` across x": the largest distance of a setting's mean from the
  baseline (smallest x) setting's mean, ± 2 s.e.; supported when even the upper end stays below the tolerance,
  contradicted when even the lower end exceeds it. A study's ``Flat`` tolerance on a confound is smaller than the
  effect its primary claims assert.

Permutation p-values are two-sided (twice the one-sided p in the direction the data point to, since either outcome
is reported), from ``n_perm`` random permutations with a fixed seed: p = (1 + #{T_perm ≥ T})/(n_perm + 1) per side,
so the smallest p a rule can reach is ≈ 2·(1 + n_perm/N)/(n_perm + 1) for N distinct arrangements
(:mod:`crobust.study.power` computes it for a preset's members).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from crobust._errors import CrobustError
from crobust.study.table import MemberTable

LEVEL = 0.05
VERDICTS = ("supported", "contradicted", "inconclusive", "skipped")
FAMILIES = ("primary", "secondary", "check")
FAMILY_TITLES = {"primary": "primary claims (the paper's claims this study tests)",
                 "secondary": "secondary claims (mechanism and confounds)",
                 "check": "checks (the manipulation worked, the setup held; not evidence for a claim)"}
SEED = "seed"
TOO_FEW = "too few trained members"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judgement of one claim: ``verdict`` ∈ :data:`VERDICTS` (with its ``reason`` when a rule stopped short),
    the statistics it rests on, the rule, the claim's family (:data:`FAMILIES`)."""

    paper: str            # the paper's claim id ('C3') or a study-local id ('E1')
    text: str
    verdict: str
    rule: str
    stats: Mapping = dataclasses.field(default_factory=dict)
    p_value: Optional[float] = None        # two-sided, before correction
    p_adjusted: Optional[float] = None     # after the family's correction
    detail: str = ""
    family: str = "secondary"
    reason: str = ""                       # why inconclusive / skipped, e.g. 'effect below 0.03'

    @property
    def label(self) -> str:
        return f"{self.verdict} ({self.reason})" if self.reason else self.verdict

    def line(self) -> str:
        head = f"- **{self.paper}: {self.text}** — **{self.verdict}**" + (f" ({self.reason})" if self.reason else "")
        if self.verdict == "skipped":
            return f"{head}: {self.detail}"
        parts = [self.detail] if self.detail else []
        if self.p_value is not None:
            parts.append(f"p = {self.p_value:.3g}" + (f", Holm-adjusted {self.p_adjusted:.3g}"
                                                      if self.p_adjusted is not None else ""))
        return f"{head} ({'; '.join(parts)}). Rule: {self.rule}"


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


def group_codes(groups) -> np.ndarray:
    """Integer codes 0..G−1 of ``groups`` (any values), in order of first appearance."""
    index: dict = {}
    return np.array([index.setdefault(g, len(index)) for g in np.asarray(groups, dtype=object).tolist()], int)


def permutations_within(codes, n_perm: int, seed: int) -> np.ndarray:
    """(n_perm, n) indices; row k is a random permutation of 0..n−1 that sends every member to a member of its own
    group (``codes``, integers): ``y[perms]`` is y shuffled within groups ``n_perm`` times."""
    codes = np.asarray(codes, int)
    rng = np.random.default_rng(seed)
    shuffled = np.argsort(codes[None, :] + rng.random((n_perm, len(codes))), axis=1)   # grouped, random within
    slots = np.argsort(codes, kind="stable")                                            # the same group layout
    out = np.empty_like(shuffled)
    out[:, slots] = shuffled
    return out


def permutation_p(null: np.ndarray, observed: float) -> float:
    """Two-sided permutation p-value: 2·min(P[T ≥ t], P[T ≤ t]) with (1 + count)/(n_perm + 1) per side, capped at 1."""
    null = np.asarray(null, float)
    tol = 1e-9 * max(1.0, abs(observed))
    up = (1 + np.sum(null >= observed - tol)) / (len(null) + 1)
    down = (1 + np.sum(null <= observed + tol)) / (len(null) + 1)
    return float(min(1.0, 2 * min(up, down)))


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


def _setting_scale(x) -> np.ndarray:
    """g(x): the rank of each member's setting among the distinct settings, scaled to [0, 1] (0 at the smallest)."""
    values = np.unique(x)
    return np.searchsorted(values, x) / max(1, len(values) - 1)


@dataclasses.dataclass(frozen=True)
class _Claim:
    paper: str
    text: str
    family: str = "secondary"
    given: str = ""         # the text of another claim judged with it that must be supported for this one to be

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise CrobustError(f"claim {self.paper} '{self.text}': family must be one of {', '.join(FAMILIES)}, got "
                               f"{self.family!r}")

    def mask(self, table: MemberTable) -> np.ndarray:
        """The members the claim reads (``where``; every member without one)."""
        where = getattr(self, "where", None)
        return table.where(**dict(where)) if where else np.ones(len(table), bool)

    def _select(self, table: MemberTable, *keys):
        mask = self.mask(table)
        arrays = [np.asarray(table[k], float)[mask] for k in keys]
        seeds = (np.asarray(table.coord(SEED), dtype=object)[mask] if SEED in table
                 else np.zeros(int(mask.sum()), dtype=object))
        ok = np.ones(int(mask.sum()), bool)
        for a in arrays:
            ok &= np.isfinite(a)
        return [a[ok] for a in arrays], seeds[ok], int(mask.sum() - ok.sum())

    def _skip(self, why: str, reason: str = "") -> Verdict:
        return Verdict(self.paper, self.text, "skipped", self.rule, detail=why, reason=reason)

    def needs(self) -> tuple[str, ...]:
        return ()


def _decide(sign: float, stat: float, change: float, se: float, p: float, min_abs: float, level: float,
            required: float = 0.0, stat_name: str = "") -> tuple[str, str]:
    """(verdict, reason). Supported when the (two-sided, family-corrected) p is below ``level``, the change lies
    beyond 2 s.e., the statistic and the change point the claimed way with |statistic| ≥ ``min_abs`` and the change is
    at least ``required`` (the stated effect); contradicted when they point the opposite way (any size)."""
    if not p < level or not abs(change) > 2 * se:
        return "inconclusive", ""
    if sign * change > 0:
        if sign * stat < min_abs:
            return "inconclusive", f"effect below |{stat_name}| ≥ {min_abs:g}" if stat_name else ""
        if sign * change < required * (1 - 1e-9):
            return "inconclusive", f"effect below {required:.3g}"
        return "supported", ""
    if -sign * stat >= min_abs:
        return "contradicted", ""
    return "inconclusive", ""


def _se(a, b) -> float:
    return float(math.sqrt((a.var(ddof=1) / len(a) if len(a) > 1 else 0.0)
                           + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0)))


def _se_mean(d) -> float:
    """Standard error of the mean of the paired differences ``d`` (NaN for fewer than two)."""
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


def _effect_text(min_change: float, min_fraction: float, baseline: str) -> str:
    parts = ([f"{min_change:g}"] if min_change else []) + (
        [f"{min_fraction:g} × |mean at {baseline}|"] if min_fraction else [])
    return f"; stated effect: a change of at least {' or '.join(parts)}" + (
        ", whichever is larger" if len(parts) == 2 else "") if parts else "; no effect size stated"


@dataclasses.dataclass(frozen=True)
class Trend(_Claim):
    x: str = "alpha"
    y: str = ""
    direction: str = "decreasing"
    where: tuple = ()
    min_abs_rho: float = 0.5
    min_change: float = 0.0
    min_fraction: float = 0.0
    n_perm: int = 2000
    seed: int = 0

    @property
    def sign(self) -> float:
        return -1.0 if self.direction == "decreasing" else 1.0

    @property
    def rule(self) -> str:
        return (f"trend of `{self.y}` against `{self.x}`, members paired by seed: mean within-seed Spearman |ρ| ≥ "
                f"{self.min_abs_rho} with the claimed sign ({self.direction}), permutation p < level (y permuted "
                f"within seeds), and the mean over seeds of the change from the smallest to the largest `{self.x}` "
                f"beyond 2 s.e." + _effect_text(self.min_change, self.min_fraction, f"the smallest {self.x}"))

    def needs(self):
        return (self.x, self.y)

    def test(self, table: MemberTable, level: float, p_adjusted=None) -> tuple[Verdict, Optional[float]]:
        (x, y), seeds, dropped = self._select(table, self.x, self.y)
        codes = group_codes(seeds)
        keep = np.array([len(np.unique(x[codes == c])) >= 2 for c in codes], bool)
        x, y, codes = x[keep], y[keep], group_codes(codes[keep])
        paired = SEED in table
        both = [c for c in np.unique(codes) if np.any((codes == c) & (x == x.min())) and
                np.any((codes == c) & (x == x.max()))] if len(x) else []
        lo, hi = y[x == x.min()] if len(x) else y, y[x == x.max()] if len(x) else y
        if len(np.unique(x)) < 2 or (len(both) < 2 if paired else len(x) < 4):
            return self._skip(f"fewer than two seeds with finite `{self.y}` at both the smallest and the largest "
                              f"`{self.x}`" + (f" ({dropped} member(s) without a finite value)" if dropped else ""),
                              TOO_FEW), None
        rho, null = _within_spearman(x, y, codes, self.n_perm, self.seed)
        p = permutation_p(null, rho)
        if paired:
            d = np.array([y[(codes == c) & (x == x.max())].mean() - y[(codes == c) & (x == x.min())].mean()
                          for c in both])
            change, se = float(d.mean()), _se_mean(d)
        else:                                            # no seed coordinate: one group, unpaired change
            change, se = float(hi.mean() - lo.mean()), _se(lo, hi)
        base = float(np.mean(y[x == x.min()]))
        required = max(self.min_change, self.min_fraction * abs(base))
        verdict, reason = _decide(self.sign, rho, change, se, p if p_adjusted is None else p_adjusted,
                                  self.min_abs_rho, level, required, "ρ")
        detail = (f"mean within-seed Spearman ρ = {rho:+.2f} over {len(x)} members in {len(np.unique(codes))} seed(s); "
                  f"change {change:+.4g} ± {se:.2g} s.e. "
                  + (f"over {len(both)} seeds" if paired else "unpaired (no seed coordinate)") + f" (from {base:.4g})"
                  + (f", stated effect {required:.3g}" if required else "")
                  + (f"; {dropped} member(s) without a finite value left out" if dropped else ""))
        return Verdict(self.paper, self.text, verdict, self.rule, {"rho": rho, "change": change, "se": se,
                                                                    "n": len(x), "dropped": dropped,
                                                                    "required": required},
                       p, p_adjusted, detail, reason=reason), p


def _within_spearman(x, y, codes, n_perm: int, seed: int) -> tuple[float, np.ndarray]:
    """The mean over groups of Spearman ρ(x, y) within each group, and its values with y permuted within groups
    (``n_perm`` of them). A group where x or y is constant contributes ρ = 0."""
    n_groups = int(codes.max()) + 1
    onehot = np.zeros((len(x), n_groups))
    onehot[np.arange(len(x)), codes] = 1.0
    rx, ry = np.empty(len(x)), np.empty(len(y))
    for c in range(n_groups):
        sel = codes == c
        rx[sel] = _ranks(x[sel]) - _ranks(x[sel]).mean()
        ry[sel] = _ranks(y[sel]) - _ranks(y[sel]).mean()
    norm = np.sqrt((rx ** 2) @ onehot * ((ry ** 2) @ onehot))
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0) / n_groups
    stat = lambda r: ((rx * r) @ onehot) @ scale
    return float(stat(ry[None])[0]), stat(ry[permutations_within(codes, n_perm, seed)])


@dataclasses.dataclass(frozen=True)
class Compare(_Claim):
    y: str = ""
    a: tuple = ()            # coordinates of group a, e.g. (("alpha", 0.1),)
    b: tuple = ()
    direction: str = "less"  # y in a is less than (greater than) y in b
    min_change: float = 0.0
    min_fraction: float = 0.0
    n_perm: int = 2000
    seed: int = 0
    pair_by: tuple = (SEED,)  # the coordinates that make a pair: a unit is one value of each (e.g. seed and alpha)

    @property
    def sign(self) -> float:
        return -1.0 if self.direction == "less" else 1.0

    @property
    def rule(self) -> str:
        by = " and ".join(self.pair_by)
        return (f"`{self.y}` in {dict(self.a)} {'<' if self.direction == 'less' else '>'} in {dict(self.b)}, members "
                f"paired by {by}: mean per-pair difference beyond 2 s.e. and sign-flip permutation p < level (labels "
                f"permuted within pairs; unpaired label permutation where the groups share fewer than two pairs)"
                + _effect_text(self.min_change, self.min_fraction, str(dict(self.b))))

    def needs(self):
        return (self.y,)

    def mask(self, table: MemberTable) -> np.ndarray:
        return table.where(**dict(self.a)) | table.where(**dict(self.b))

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        y = np.asarray(table[self.y], float)
        paired = all(k in table for k in self.pair_by)
        keys = list(zip(*(table.coord(k) for k in self.pair_by))) if paired else [()] * len(table)
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        unit = np.array([index[k] for k in keys])                  # one integer per pair key (seed, α, …)
        in_a, in_b = table.where(**dict(self.a)) & np.isfinite(y), table.where(**dict(self.b)) & np.isfinite(y)
        if in_a.sum() < 2 or in_b.sum() < 2:
            return self._skip("fewer than two members with finite values in a group", TOO_FEW), None
        units_b = set(unit[in_b].tolist())
        common = [u for u in dict.fromkeys(unit[in_a].tolist()) if u in units_b]
        base = float(y[in_b].mean())
        if paired and len(common) >= 2:
            d = np.array([y[in_a & (unit == u)].mean() - y[in_b & (unit == u)].mean() for u in common])
            diff, se = float(d.mean()), _se_mean(d)
            flips = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=(self.n_perm, len(d)))
            p = permutation_p(flips @ d / len(d), diff)
            design = (f"{len(d)} seeds paired" if tuple(self.pair_by) == (SEED,)
                      else f"{len(d)} pairs by {' and '.join(self.pair_by)}")
        else:
            ga, gb = y[in_a], y[in_b]
            diff, se = float(ga.mean() - gb.mean()), _se(ga, gb)
            pooled, labels = np.r_[ga, gb], np.r_[np.ones(len(ga)), np.zeros(len(gb))]
            perms = labels[permutations_within(np.zeros(len(pooled), int), self.n_perm, self.seed)]
            null = (perms @ pooled) / len(ga) - ((1 - perms) @ pooled) / len(gb)
            p = permutation_p(null, diff)
            design = f"unpaired, {len(ga)} vs {len(gb)} members"
        required = max(self.min_change, self.min_fraction * abs(base))
        verdict, reason = _decide(self.sign, float(np.sign(diff)), diff, se, p if p_adjusted is None else p_adjusted,
                                  0.0, level, required)
        detail = (f"difference {diff:+.4g} ± {se:.2g} s.e. ({design}; baseline mean {base:.4g})"
                  + (f", stated effect {required:.3g}" if required else ""))
        return Verdict(self.paper, self.text, verdict, self.rule, {"difference": diff, "se": se, "required": required},
                       p, p_adjusted, detail, reason=reason), p


@dataclasses.dataclass(frozen=True)
class ColumnsPaired(_Claim):
    """"column ``a`` exceeds (falls below) column ``b`` on the same members", e.g. ε-pruning's retention against
    fixed-ratio pruning's, both measured on every member: d_i = a_i − b_i over the members ``where`` selects (finite
    in both), the mean d̄ with its standard error s.d.(d)/√n, and a sign-flip permutation p-value over members (the
    null: a and b exchangeable within each member). Supported when d̄ has the claimed sign beyond 2 s.e., p < level
    and |d̄| ≥ ``min_change`` (in the columns' units); contradicted when d̄ points the other way by the same rule. The
    smallest p with n members is ≈ 2·2⁻ⁿ."""

    a: str = ""
    b: str = ""
    direction: str = "greater"   # a greater (less) than b
    where: tuple = ()
    min_change: float = 0.0
    n_perm: int = 2000
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.direction not in ("greater", "less"):
            raise CrobustError(f"claim {self.paper} '{self.text}': direction must be 'greater' or 'less', got "
                               f"{self.direction!r}")

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "greater" else -1.0

    @property
    def rule(self) -> str:
        return (f"`{self.a}` {'>' if self.direction == 'greater' else '<'} `{self.b}` on the same members: mean "
                f"per-member difference beyond 2 s.e. and sign-flip permutation p < level (signs flipped per member)"
                + (f"; stated effect: a difference of at least {self.min_change:g}" if self.min_change
                   else "; no effect size stated"))

    def needs(self):
        return (self.a, self.b)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (a, b), _, dropped = self._select(table, self.a, self.b)
        if len(a) < 2:
            return self._skip("fewer than two members with finite values", TOO_FEW), None
        d = a - b
        diff, se = float(d.mean()), _se_mean(d)
        flips = np.random.default_rng(self.seed).choice([-1.0, 1.0], size=(self.n_perm, len(d)))
        p = permutation_p(flips @ d / len(d), diff)
        verdict, reason = _decide(self.sign, float(np.sign(diff)), diff, se, p if p_adjusted is None else p_adjusted,
                                  0.0, level, self.min_change)
        detail = (f"mean difference {diff:+.4g} ± {se:.2g} s.e. over {len(d)} members (mean of `{self.b}` "
                  f"{float(b.mean()):.4g})" + (f", stated effect {self.min_change:g}" if self.min_change else "")
                  + (f"; {dropped} member(s) without finite values left out" if dropped else ""))
        return Verdict(self.paper, self.text, verdict, self.rule,
                       {"difference": diff, "se": se, "required": self.min_change, "n": len(d)}, p, p_adjusted,
                       detail, reason=reason), p

    def planted(self, table: MemberTable, s: float, effect: float) -> None:
        """The power check's planted columns (:func:`crobust.study.power.plant`): b = 1 + a member level, a = b +
        s·sign·effect."""
        rows = slice(0, len(table))
        level = 0.05 * np.arange(len(table)) / max(1, len(table))
        table.set(rows, self.b, 1.0 + level)
        table.set(rows, self.a, 1.0 + level + s * self.sign * effect)


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
        return (f"{self.method} r of `{self.x}` and `{self.y}` with sign {'+' if self.sign > 0 else '−'}, "
                f"stated effect |r| ≥ {self.min_abs_r}, and permutation p < level (y permuted across members)"
                + (f" (the paper reports {self.target})" if self.target is not None else ""))

    def needs(self):
        return (self.x, self.y)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (x, y), _, dropped = self._select(table, self.x, self.y)
        if len(x) < 4:
            return self._skip("fewer than four members with finite values", TOO_FEW), None
        r, null = correlation_null(x, y, np.zeros(len(x), int), self.method, self.n_perm, self.seed)
        p = permutation_p(null, r)
        verdict, reason = _decide(float(self.sign), r, r, 0.0, p if p_adjusted is None else p_adjusted,
                                  self.min_abs_r, level, stat_name="r")
        detail = f"{self.method} r = {r:+.3f} over {len(x)} members, Spearman ρ = {spearman(x, y):+.3f}"
        if self.target is not None:
            detail += f"; paper {self.target:+.3f} (difference {r - self.target:+.3f})"
        return Verdict(self.paper, self.text, verdict, self.rule, {"r": r, "rho": spearman(x, y), "n": len(x)}, p,
                       p_adjusted, detail, reason=reason), p


def correlation_null(x, y, codes, method: str, n_perm: int, seed: int) -> tuple[float, np.ndarray]:
    """The pooled within-group correlation of x and y (x and y centred per group; one group: the plain
    correlation), ranked over all members first for ``method='spearman'``, and its ``n_perm`` values with y
    permuted within groups."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if method == "spearman":
        x, y = _ranks(x), _ranks(y)
    n_groups = int(codes.max()) + 1
    onehot = np.zeros((len(x), n_groups))
    onehot[np.arange(len(x)), codes] = 1.0
    centre = lambda v: v - (onehot @ ((v @ onehot) / onehot.sum(0)))
    cx = centre(x)
    cy = centre(y)                 # a permutation within groups keeps every group's mean: centre, then permute
    cy_perm = cy[permutations_within(codes, n_perm, seed)]
    den = math.sqrt(float(np.sum(cx * cx) * np.sum(cy * cy)))
    if den == 0:
        return 0.0, np.zeros(n_perm)
    return float(cx @ cy / den), (cy_perm @ cx) / den


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
            (lhs, rhs), _, dropped = self._select(table, self.lhs, self.rhs)
        else:
            (lhs,), _, dropped = self._select(table, self.lhs)
            rhs = np.full_like(lhs, float(self.rhs))
        if len(lhs) == 0:
            return self._skip("no member with finite values", TOO_FEW), None
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
        (x, y), _, dropped = self._select(table, self.x, self.y)
        if len(np.unique(x)) < 2:
            return self._skip("fewer than two settings", TOO_FEW), None
        base = y[x == x.min()]
        dist = [(abs(y[x == v].mean() - base.mean()), _se(base, y[x == v]), v) for v in np.unique(x) if v != x.min()]
        d, se, at = max(dist, key=lambda t: t[0])
        verdict = ("supported" if d + 2 * se < self.tolerance else
                   "contradicted" if d - 2 * se > self.tolerance else "inconclusive")
        detail = f"largest change {d:.4g} ± {se:.2g} s.e. (at {self.x} = {at:g}) against tolerance {self.tolerance:g}"
        return Verdict(self.paper, self.text, verdict, self.rule, {"max_change": d, "se": se}, detail=detail), None


@dataclasses.dataclass(frozen=True)
class Matched(_Claim):
    """"y falls (rises) with x at equal ``match``": the covariate-adjusted paired design of the module docstring
    (y = a_seed + β·g(x) + γ·match by least squares; Freedman–Lane permutation of the reduced model's residuals
    within seeds). Removes the trivial route "a regulariser lowers clean accuracy, so it lowers robust accuracy"
    while every member counts, which is what gives it power at a few seeds."""

    x: str = "alpha"
    y: str = ""
    match: str = "clean_acc"
    direction: str = "decreasing"
    where: tuple = ()
    min_change: float = 0.0
    min_fraction: float = 0.0
    n_perm: int = 2000
    seed: int = 0

    @property
    def sign(self) -> float:
        return -1.0 if self.direction == "decreasing" else 1.0

    @property
    def rule(self) -> str:
        return (f"`{self.y}` against `{self.x}` at equal `{self.match}`: least squares y = a_seed + β·g + γ·"
                f"`{self.match}` (g: the setting's rank scaled to [0, 1], so β is the change from the smallest to the "
                f"largest `{self.x}` at fixed `{self.match}`); β in the claimed direction ({self.direction}) beyond 2 "
                f"s.e. and Freedman–Lane permutation p < level (residuals of y = a_seed + γ·`{self.match}` permuted "
                f"within seeds)" + _effect_text(self.min_change, self.min_fraction, f"the smallest {self.x}"))

    def needs(self):
        return (self.x, self.y, self.match)

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        (x, y, m), seeds, dropped = self._select(table, self.x, self.y, self.match)
        if len(np.unique(x)) < 2:
            return self._skip("fewer than two settings with finite values", TOO_FEW), None
        codes = group_codes(seeds)
        dummies = (codes[:, None] == np.arange(codes.max() + 1)[None, :]).astype(float)
        g = _setting_scale(x)
        full = np.column_stack([dummies, g, m])
        reduced = np.column_stack([dummies, m])
        dof = len(y) - full.shape[1]
        if dof < 1:
            return self._skip(f"{len(y)} members for a model with {full.shape[1]} parameters", TOO_FEW), None
        if np.linalg.matrix_rank(full) < full.shape[1]:
            return self._skip(f"β is not identifiable: `{self.match}` is constant within seeds or collinear with the "
                              f"setting"), None
        pinv = np.linalg.pinv(full)
        c = pinv[dummies.shape[1]]                      # the row that gives β
        beta = float(c @ y)
        resid_full = y - full @ (pinv @ y)
        cov = np.linalg.inv(full.T @ full)[dummies.shape[1], dummies.shape[1]]
        se = float(math.sqrt(max(0.0, float(resid_full @ resid_full) / dof * cov)))
        fitted = reduced @ (np.linalg.pinv(reduced) @ y)
        resid = y - fitted
        null = float(c @ fitted) + resid[permutations_within(codes, self.n_perm, self.seed)] @ c
        p = permutation_p(null, beta)
        gamma = float(pinv[-1] @ y)
        base = float(np.mean(y[x == x.min()]))
        required = max(self.min_change, self.min_fraction * abs(base))
        verdict, reason = _decide(self.sign, float(np.sign(beta)), beta, se, p if p_adjusted is None else p_adjusted,
                                  0.0, level, required)
        raw = float(np.mean(y[x == x.max()]) - base)
        detail = (f"adjusted change β = {beta:+.4g} ± {se:.2g} s.e. at equal `{self.match}` (unadjusted {raw:+.4g}; "
                  f"slope on `{self.match}` γ = {gamma:+.3g}) over {len(y)} members in {dummies.shape[1]} seed(s)"
                  + (f", stated effect {required:.3g}" if required else "")
                  + (f"; {dropped} member(s) without finite values left out" if dropped else ""))
        return Verdict(self.paper, self.text, verdict, self.rule, {"difference": beta, "se": se, "gamma": gamma,
                                                                    "n": len(y), "required": required},
                       p, p_adjusted, detail, reason=reason), p


@dataclasses.dataclass(frozen=True)
class NoGain(_Claim):
    """"y in group a never significantly exceeds y in group b, at any of the columns ``ys``" (e.g. one column per
    pruning ratio), with a stated margin δ = ``min_change``.

    Per column k: the per-seed paired differences d_s = ȳ_a(s) − ȳ_b(s) over the seeds both groups hold, their
    mean d̄_k and standard error, and the one-sided sign-flip p-value of a gain, p_k = P[D ≥ d̄_k] with D the mean
    of the d_s under independent random signs (exact over the 2^S sign patterns for S ≤ 12 seeds, so the smallest
    p is 2^−S); the p_k are Holm-corrected over the columns and the claim's p is the smallest corrected one (the
    Holm test of "a exceeds b at some column", corrected again with the claim's family). Contradicted: some
    column's corrected p < level with d̄_k beyond 2 s.e. (a significant gain, any size). Supported: no such
    column, and at every column the gain's upper bound d̄_k + 2 s.e. lies below δ (the data exclude a gain of δ
    everywhere). Inconclusive otherwise."""

    ys: tuple = ()
    a: tuple = ()
    b: tuple = ()
    where: tuple = ()
    min_change: float = 0.02

    @property
    def rule(self) -> str:
        return (f"{dict(self.a)} against {dict(self.b)} at each of {len(self.ys)} columns, members paired by seed: "
                f"one-sided sign-flip p of a gain per column, Holm over the columns; contradicted when a column's "
                f"gain is significant (corrected p < level, beyond 2 s.e.); supported when none is and every "
                f"column's gain + 2 s.e. < {self.min_change:g} (the stated margin)")

    def needs(self):
        return tuple(self.ys)

    def mask(self, table: MemberTable) -> np.ndarray:
        base = table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)
        return base & (table.where(**dict(self.a)) | table.where(**dict(self.b)))

    def _paired(self, table: MemberTable, key: str):
        y = np.asarray(table[key], float)
        base = (table.where(**dict(self.where)) if self.where else np.ones(len(table), bool)) & np.isfinite(y)
        seeds = (np.asarray(table.coord(SEED), dtype=object) if SEED in table
                 else np.zeros(len(table), dtype=object))
        in_a, in_b = base & table.where(**dict(self.a)), base & table.where(**dict(self.b))
        common = [s for s in dict.fromkeys(seeds[in_a].tolist()) if s in set(seeds[in_b].tolist())]
        return np.array([y[in_a & (seeds == s)].mean() - y[in_b & (seeds == s)].mean() for s in common])

    @staticmethod
    def _one_sided(d: np.ndarray) -> float:
        n = len(d)
        if n <= 12:
            signs = 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1)
        else:
            signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(4096, n))
        null = signs @ d / n
        obs = float(d.mean())
        return float(np.mean(null >= obs - 1e-9 * max(1.0, abs(obs))))

    def test(self, table: MemberTable, level: float, p_adjusted=None):
        rows = []
        for key in self.ys:
            d = self._paired(table, key)
            if len(d) < 2:
                return self._skip(f"fewer than two seeds hold both groups in `{key}`", TOO_FEW), None
            rows.append((key, float(d.mean()), _se_mean(d), self._one_sided(d)))
        corrected = holm([r[3] for r in rows])
        k = int(np.argmin(corrected))
        p = float(corrected[k])
        p_use = p if p_adjusted is None else p_adjusted
        worst = max(range(len(rows)), key=lambda i: rows[i][1] + 2 * rows[i][2])
        bound = rows[worst][1] + 2 * rows[worst][2]
        gain_k = rows[k][1] > 2 * rows[k][2]
        if p_use < level and gain_k:
            verdict, reason = "contradicted", ""
        elif bound < self.min_change:
            verdict, reason = "supported", ""
        else:
            verdict, reason = "inconclusive", f"a gain of {self.min_change:g} not excluded"
        detail = (f"largest gain bound {bound:+.4g} (gain {rows[worst][1]:+.4g} ± {rows[worst][2]:.2g} s.e. at "
                  f"`{rows[worst][0]}`); most significant gain {rows[k][1]:+.4g} at `{rows[k][0]}`, one-sided p "
                  f"{rows[k][3]:.3g} (Holm over {len(rows)} columns {p:.3g}); {len(self._paired(table, rows[0][0]))} "
                  f"seeds paired")
        return Verdict(self.paper, self.text, verdict, self.rule,
                       {"max_bound": bound, "gains": [r[1] for r in rows], "ses": [r[2] for r in rows],
                        "p_columns": [r[3] for r in rows], "required": self.min_change},
                       p, p_adjusted, detail, reason=reason), p


HEADLINE_MEASUREMENTS = ("robust_acc", "ra_over_sa", "ra_relative")     # measurements that come from the headline attack


def unconverged(claim: _Claim, table: MemberTable) -> list[str]:
    """The norms whose headline attack did not converge (``headline_converged[norm] == 0``,
    :func:`crobust.study.measures.budget_convergence`) on a member the claim reads through a robust-accuracy
    column of that norm."""
    mask = claim.mask(table)
    norms = set()
    for key in claim.needs():
        meta = table.meta.get(key)
        norm = dict(meta.qualifiers).get("norm") if meta is not None else None
        flag = f"headline_converged[norm={norm}]"
        if meta is not None and meta.measurement in HEADLINE_MEASUREMENTS and flag in table.columns and \
                np.any(table.columns[flag][mask] == 0):
            norms.add(norm)
    return sorted(norms)


def _gate_convergence(claim: _Claim, verdict: Verdict, table: MemberTable) -> Verdict:
    """A primary claim on an unconverged headline attack is at most inconclusive (not converged)."""
    if claim.family != "primary" or verdict.verdict not in ("supported", "contradicted"):
        return verdict
    norms = unconverged(claim, table)
    if not norms:
        return verdict
    return dataclasses.replace(verdict, verdict="inconclusive", reason="not converged",
                               detail=f"{verdict.detail}; the rule alone says {verdict.verdict}, but the headline "
                                      f"attack ({', '.join(norms)}) did not converge on a member it reads")


def judge(claims: Sequence[_Claim], table: MemberTable, *, level: float = LEVEL,
          correction: Optional[str] = "holm") -> list[Verdict]:
    """Judge every claim on ``table``; the p-values of each family (:data:`FAMILIES`) are Holm-corrected together
    unless ``correction`` is None."""
    if correction not in (None, "holm"):
        raise ValueError(f"unknown correction {correction!r}; use 'holm' or None")
    first = []
    for c in claims:
        missing = [k for k in c.needs() if k not in table]
        first.append((c, None, None) if missing else (c, *c.test(table, level)))
    adjusted = {}
    if correction == "holm":
        for family in FAMILIES:
            idx = [i for i, (c, _, p) in enumerate(first) if p is not None and c.family == family]
            adjusted.update(zip(idx, holm([first[i][2] for i in idx])))
    out = []
    for i, (c, verdict, p) in enumerate(first):
        if verdict is None:
            missing = [k for k in c.needs() if k not in table]
            verdict = c._skip(f"not measured: {', '.join(missing)}")
        elif i in adjusted:
            verdict = c.test(table, level, p_adjusted=adjusted[i])[0]
        out.append(_gate_convergence(c, dataclasses.replace(verdict, family=c.family), table))
    return [_gate_given(c, v, out) for c, v in zip(claims, out)]


def _gate_given(claim: _Claim, verdict: Verdict, verdicts: Sequence[Verdict]) -> Verdict:
    """A claim that holds only ``given`` another (e.g. "scale does not create what compressibility creates" means
    something only where compressibility's effect is detected) is at most inconclusive unless that one is
    supported; a contradiction stands."""
    if not claim.given or verdict.verdict != "supported":
        return verdict
    other = next((v for v in verdicts if v.text == claim.given), None)
    if other is not None and other.verdict == "supported":
        return verdict
    state = "not judged" if other is None else other.label
    return dataclasses.replace(verdict, verdict="inconclusive", reason="its premise is not supported",
                               detail=f"{verdict.detail}; the rule alone says supported, but it holds only given "
                                      f"“{claim.given}”, which is {state}")


__all__ = ["LEVEL", "VERDICTS", "FAMILIES", "unconverged", "Verdict", "Trend", "Compare", "ColumnsPaired",
           "Correlation", "Holds", "Flat", "Matched", "NoGain", "judge", "holm", "pearson", "spearman",
           "permutations_within", "permutation_p",
           "group_codes"]
