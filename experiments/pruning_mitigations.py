"""Mitigations suggested by the theory (docs/paper.md §E11; claim C11, second half).

Three arms of the same compressible ResNet — the row-sparsity recipe of ``resnet_row_sparsity`` (docs/paper.md
§E4) at one α > 0 (the scale-invariant row penalty α Σ_l (Σ_i ‖W^l_{i,:}‖₂)/‖W^l‖_F on every conv but the stem):

- **plain** (``arm=plain``): the row penalty alone — E4's ``row`` members at that α, trained here with the identical
  config (the same model, recipe, α and seeds, hence the same initialisation and data order);
- **β-control** (``arm=beta_control``): row penalty + s_β Σ_l Var(top-5 % of ν^l), ν^l_i = ‖W^l_{i,:}‖₁ the filter
  norms (:func:`crobust.regularizers.beta_control`; strength s_β = the member axis ``beta_control``);
- **alignment** (``arm=alignment``): row penalty + s_A Σ_(l,l+1) A_∞(l), the sound bound of the inter-layer
  alignment term (:func:`crobust.regularizers.alignment`; strength s_A = the member axis ``alignment``).

Every member is pruned structurally (whole filters, :mod:`crobust.pruning`) at each ratio r of
``mitigations.ratios`` by each criterion: ``ratio`` (each layer removes its ⌊r·out⌋ lowest-ℓ2-norm filters — the
fixed per-layer ratio), ``epsilon_ratio`` (ε-pruning: each layer keeps the smallest k whose removed rows carry at
most a share ε of ‖W^l‖_F², ε swept so that ⌊r·R⌋ of all R prunable filters go) and ``global_ratio`` (one norm
threshold over every prunable filter). Batch-norm running statistics are recomputed after pruning
(``mitigations.recalibrate``). Retention is measured on the evaluation points, per member:

    retention[kind=clean, criterion=c, ratio=r]      = SA(pruned at r by c) / SA(unpruned)
    retention[kind=robust_linf, criterion=c, ratio=r] = RA_∞(pruned at r by c) / RA_∞(unpruned)

(RA at the headline ℓ∞ ε against the ensemble, per point the worst case), and ``retention_high[kind, criterion]``
= its mean over the ratios r ≥ ``mitigations.high``. Beside them: β_ν and ε_ν per layer and their hidden-layer
mean (:mod:`crobust.study.measures_compressibility`), the penalties' values at strength 1 (``penalty_beta_control``,
``penalty_alignment``: the manipulation checks), clean accuracy, margins, head norm, Frobenius norms, headline RA
with a budget-convergence ladder on the plain arm.

Claims: ε-pruning retains more than fixed-ratio pruning at the high ratios (clean and robust, every member:
:class:`crobust.study.claims.ColumnsPaired`); the β-control and alignment arms retain more robust accuracy than the
plain arm under fixed-ratio pruning (paired by seed); secondary: β-control lowers β_ν without changing ε_ν by more
than a tolerance, the arms' clean retention, clean accuracy flat across arms; checks: each penalty's value is lower
in its own arm, the headline ε leaves a meaningful RA.

Command::

    python -m experiments.pruning_mitigations --preset small --workdir runs/pruning_mitigations

Expected results:

- ``smoke`` (tests): E4's smoke model (width 4) and data, 2 seeds × 3 arms, 60 steps, ratios {0.5}, two criteria.
  Runs end to end; no verdict is expected.
- ``small`` (any CPU): E4's small preset (digits 8×8, ResNet-18 layout with width 8, stage sizes (1,1,1,1), CIFAR
  stem, SGD 0.05, 1200 steps) at α = 0.1 with s_β = 0.03, s_A = 0.1, 7 seeds per arm (21 members: the paired
  comparisons of two arms need ≥ 7 seeds to reach p < 0.05 after Holm's correction), ratios {0.5, 0.7},
  criteria ratio / ε-pruning / global, 100 evaluation points, ℓ∞ ε ∈ {0, 0.05}. Expected (the paper): ε-pruning and both mitigation
  arms retain more than their baselines at r ≥ 0.5. Measured (one run, shared 2-core machine at load ≈ 18: 39 min
  wall, 634 s CPU user+sys — over the ≈ 150 s idle budget, the price of 7 seeds × 3 arms and 7 attacked pruned
  copies per member): clean accuracy ≈ 0.98 in every arm (flat, supported); ε-pruning retains **less** than
  fixed-ratio pruning (clean −0.167 ± 0.027, robust −0.125 ± 0.018 over 21 members: contradicted); alignment
  regularisation retains more robust accuracy than the plain arm (+0.229 ± 0.025, supported; clean +0.19,
  inconclusive after Holm); β-control +0.011 ± 0.044 (inconclusive); β-control lowers β_ν (−0.118 ± 0.018,
  inconclusive only by the 7-seed sign-flip floor after Holm) with ε_ν within 0.043 ± 0.032 (inconclusive against
  0.02); both manipulation checks supported.
- ``paper`` (GPU): CIFAR-10, torchvision ResNet-18 (ImageNet stem, width 64), the reference recipe, α = 0.1,
  3 seeds per arm, ratios {0.1, 0.3, 0.5, 0.7, 0.9}, 1000 evaluation points, the full attack budget; as the
  reference recipe, no validation split: each member's last parameters are measured.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from crobust import regularizers, training
from crobust._errors import CrobustError
from crobust.config import derive
from crobust.study import (Compare, Curves, Flat, Holds, Population, Study, StudyConfig, col, headline_ra)
from crobust.study import measures as M
from crobust.study import measures_compressibility as MC
from crobust.study.claims import ColumnsPaired
from crobust.study.measures_pruning import CRITERIA, pruning_sweep, ratio_label
from crobust.study.table import column
from experiments import resnet_row_sparsity as E4

HM = MC.HIDDEN_MEAN
ARMS = ("plain", "beta_control", "alignment")
KINDS = ("clean", "robust_linf")


@dataclasses.dataclass(frozen=True)
class MitigationsConfig:
    """The mitigation strengths (s_β of β-control, s_A of the alignment penalty, each added to the row penalty at
    the study's single α = ``grid.alpha``), the pruning ratios and criteria, the threshold of the "high" ratios the
    primary claims average over, and whether batch-norm statistics are recomputed after pruning."""

    beta_control: float = 0.03
    alignment: float = 0.1
    ratios: tuple[float, ...] = (0.5, 0.7)
    criteria: tuple[str, ...] = ("ratio", "epsilon_ratio", "global_ratio")
    high: float = 0.5
    recalibrate: bool = True

    def validate(self) -> None:
        if not self.beta_control > 0 or not self.alignment > 0:
            raise CrobustError(f"mitigations.beta_control and mitigations.alignment must be > 0, got "
                               f"{self.beta_control} and {self.alignment}")
        r = tuple(self.ratios)
        if not r or any(not 0.0 < x < 1.0 for x in r) or len(set(r)) != len(r):
            raise CrobustError(f"mitigations.ratios must be distinct values in (0, 1), got {r}")
        if not any(x >= self.high for x in r):
            raise CrobustError(f"mitigations.ratios {r} has no ratio ≥ mitigations.high = {self.high}")
        c = tuple(self.criteria)
        if set(c) - set(CRITERIA) or not {"ratio", "epsilon_ratio"} <= set(c) or len(set(c)) != len(c):
            raise CrobustError(f"mitigations.criteria must include 'ratio' and 'epsilon_ratio', each once, among "
                               f"{', '.join(CRITERIA)}; got {c}")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    mitigations: MitigationsConfig = MitigationsConfig()

    def validate(self) -> None:
        super().validate()
        a = tuple(self.grid.alpha)
        if len(a) != 1 or not a[0] > 0:
            raise CrobustError(f"grid.alpha must be the one compressible α > 0 every arm trains at, got {a}")
        if self.train.regularizer != "scale_invariant" or self.train.penalties:
            raise CrobustError("train.regularizer must be 'scale_invariant' with no penalties (the arms add theirs)")
        if self.model.kind != "resnet18":
            raise CrobustError(f"model.kind must be 'resnet18' (E4's ResNet), got {self.model.kind!r}")
        if not any(r >= self.mitigations.high for r in self.mitigations.ratios):
            raise CrobustError("mitigations.ratios needs a ratio ≥ mitigations.high")


def _from_e4(preset: str, **blocks) -> Config:
    """E4's preset ``preset`` as this study's Config at E4's strongest α (the compressible members)."""
    base = E4.PRESETS[preset]
    fields = base.common_blocks()
    fields["grid"] = dataclasses.replace(base.grid, alpha=(max(base.grid.alpha),))
    return Config(**fields, mitigations=MitigationsConfig(**blocks))


PRESETS = {
    "small": derive(_from_e4("small"), {"grid.seeds": 7, "eval.n_points": 100, "eval.eps_linf": (0.0, 0.05)}),
    "smoke": derive(_from_e4("smoke", ratios=(0.5,), criteria=("ratio", "epsilon_ratio")), {"grid.seeds": 2}),
    # the reference recipe as E4 runs it: no validation split, each member's last parameters are its result
    "paper": derive(_from_e4("paper", ratios=(0.1, 0.3, 0.5, 0.7, 0.9)), {"grid.seeds": 7}),   # the power check
}


def populations(cfg, data):
    """The three arms at α = ``grid.alpha``, each member carrying both strengths as coordinates (0 where the arm
    does not add that penalty), so the flat and compare rules can select two arms by a strength."""
    model = cfg.model.build(data)
    alpha, seeds, m = tuple(cfg.grid.alpha), cfg.grid.seed_list, cfg.mitigations
    n = len(seeds)
    return [
        Population("plain", model, cfg.train, tuple(training.grid(alpha=alpha, seeds=seeds)), {"arm": "plain"},
                   member_coords=({"beta_control": 0.0, "alignment": 0.0},) * n),
        Population("beta_control", model, dataclasses.replace(cfg.train, penalties=("beta_control",)),
                   tuple(training.grid(alpha=alpha, beta_control=(m.beta_control,), seeds=seeds)),
                   {"arm": "beta_control"}, member_coords=({"alignment": 0.0},) * n),
        Population("alignment", model, dataclasses.replace(cfg.train, penalties=("alignment",)),
                   tuple(training.grid(alpha=alpha, alignment=(m.alignment,), seeds=seeds)),
                   {"arm": "alignment"}, member_coords=({"beta_control": 0.0},) * n),
    ]


def penalty_values():
    """``penalty_beta_control`` = Σ_l Var(top-K ν^l) and ``penalty_alignment`` = Σ A_∞(l) of each member's measured
    parameters — the two mitigation penalties at strength 1 (:func:`crobust.regularizers.beta_control`,
    :func:`crobust.regularizers.alignment`), whatever the arm trained with."""
    def measure(ctx, pop):
        return {column(f"penalty_{name}"): np.asarray(_member_penalty(name)(pop.params), np.float64)
                for name in ("beta_control", "alignment")}
    return measure


@functools.lru_cache(maxsize=None)
def _member_penalty(name: str):
    """params (M, ...) ↦ (M,) values of the penalty ``name`` at strength 1, compiled once per penalty."""
    fn = regularizers.get_penalty(name)
    return jax.jit(jax.vmap(lambda p: fn(p, 1.0)))


def pruning_retention(ratios, criteria, high: float, *, recalibrate: bool):
    """:func:`crobust.study.measures_pruning.pruning_sweep` at ratio 0 (criterion ``ratio``: nothing removed, the
    unpruned reference) and at every ``ratios`` × ``criteria`` (ℓ∞ at the headline ε), plus, per member,

        retention[kind, criterion=c, ratio=r] = acc(r, c) / acc(0)   (acc = clean or ℓ∞ robust accuracy; ratio 0
        gives 1 for every criterion), NaN where acc(0) = 0;
        retention_high[kind, criterion=c] = mean over r ≥ ``high`` of retention[kind, c, r]."""
    reference = pruning_sweep((0.0,), ("ratio",), ("linf",), recalibrate=recalibrate)
    sweep = pruning_sweep(ratios, criteria, ("linf",), recalibrate=recalibrate)
    acc_key = {"clean": lambda c, r: col("pruned_clean_acc", criterion=c, ratio=ratio_label(r)),
               "robust_linf": lambda c, r: col("pruned_robust_acc", norm="linf", criterion=c, ratio=ratio_label(r))}

    def measure(ctx, pop):
        out = {**reference(ctx, pop), **sweep(ctx, pop)}
        by_key = {c.key: v for c, v in out.items()}
        for kind in KINDS:
            base = np.asarray(by_key[acc_key[kind]("ratio", 0.0)], np.float64)
            safe = np.where(base > 0, base, np.nan)
            for c in criteria:
                out[column("retention", kind=kind, criterion=c, ratio=ratio_label(0.0))] = np.where(
                    base > 0, 1.0, np.nan)
                highs = []
                for r in ratios:
                    ret = np.asarray(by_key[acc_key[kind](c, r)], np.float64) / safe
                    out[column("retention", kind=kind, criterion=c, ratio=ratio_label(r))] = ret
                    if r >= high:
                        highs.append(ret)
                out[column("retention_high", kind=kind, criterion=c)] = np.mean(highs, axis=0)
        return out
    return measure


def measures(cfg):
    m = cfg.mitigations
    return [M.clean_accuracy(), M.margins_and_head(), M.robust_accuracy(("linf",)),
            MC.layer_compressibility(("eps_nu_q2", "beta_nu", "norm_fro")), penalty_values(),
            pruning_retention(m.ratios, m.criteria, m.high, recalibrate=m.recalibrate),
            M.budget_convergence(("linf",), x="seed", populations=("plain",)), M.training_record()]


# Stated effects: retention averaged over the high ratios rises by at least EFFECT (a fraction of the unpruned
# accuracy); clean accuracy across arms is judged flat within FLAT, ε_ν (hidden mean) within EPS_FLAT.
EFFECT, FLAT, EPS_FLAT = 0.02, 0.015, 0.015     # a confound judged flat within less than the effect asserted
PLAIN, BETA, ALIGN = (("arm", "plain"),), (("arm", "beta_control"),), (("arm", "alignment"),)


def _high(kind, criterion):
    return col("retention_high", kind=kind, criterion=criterion)


def claims(cfg):
    h = f"r ≥ {cfg.mitigations.high:g}"
    out = []
    for kind, label in (("clean", "clean"), ("robust_linf", "ℓ∞ robust")):
        out.append(ColumnsPaired(
            "C11", f"ε-pruning retains more {label} accuracy than fixed-ratio pruning at {h} (mean over the high "
                   f"ratios, every member), by ≥ {EFFECT:g}", "primary", a=_high(kind, "epsilon_ratio"),
            b=_high(kind, "ratio"), direction="greater", min_change=EFFECT))
    for arm, name in ((BETA, "β-control"), (ALIGN, "alignment regularisation")):
        out.append(Compare("C11", f"{name} retains more ℓ∞ robust accuracy than the plain row penalty under "
                                  f"fixed-ratio pruning at {h}, by ≥ {EFFECT:g}", "primary",
                           y=_high("robust_linf", "ratio"), a=arm, b=PLAIN, direction="greater", min_change=EFFECT))
        out.append(Compare("C11", f"{name} retains more clean accuracy than the plain row penalty under fixed-ratio "
                                  f"pruning at {h}, by ≥ {EFFECT:g}", "secondary",
                           y=_high("clean", "ratio"), a=arm, b=PLAIN, direction="greater", min_change=EFFECT))
    if "global_ratio" in cfg.mitigations.criteria:
        out.append(ColumnsPaired("E11", f"ε-pruning retains more ℓ∞ robust accuracy than global-threshold pruning at "
                                        f"{h}", "secondary", a=_high("robust_linf", "epsilon_ratio"),
                                 b=_high("robust_linf", "global_ratio"), direction="greater"))
    out += [
        Compare("E11", "β-control lowers β_ν (hidden-layer mean) against the plain row penalty", "secondary",
                y=col("beta_nu", layer=HM), a=BETA, b=PLAIN, direction="less"),
        Flat("E11", f"β-control does not change neuron compressibility: ε_ν (hidden-layer mean) within {EPS_FLAT:g} "
                    f"of the plain arm's", x="beta_control", y=col("eps_nu_q2", layer=HM), tolerance=EPS_FLAT,
             where=(("alignment", 0.0),)),
        Flat("confound", f"clean accuracy: β-control within {FLAT:g} of the plain arm", x="beta_control",
             y="clean_acc", tolerance=FLAT, where=(("alignment", 0.0),)),
        Flat("confound", f"clean accuracy: alignment within {FLAT:g} of the plain arm", x="alignment",
             y="clean_acc", tolerance=FLAT, where=(("beta_control", 0.0),)),
        Compare("E11", "the β-control penalty's value (at strength 1) is lower in the β-control arm than in the plain "
                       "arm: the penalty worked", "check", y="penalty_beta_control", a=BETA, b=PLAIN,
                direction="less"),
        Compare("E11", "the alignment penalty's value (at strength 1) is lower in the alignment arm than in the plain "
                       "arm: the penalty worked", "check", y="penalty_alignment", a=ALIGN, b=PLAIN, direction="less"),
        Holds("headline", "every plain member keeps ≥ 10 % ℓ∞ RA at the headline ε (retention is meaningful)",
              "check", lhs=headline_ra(cfg.eval, "linf"), rhs=0.1, where=PLAIN),
    ]
    return out


def figures(cfg):
    out = []
    for c in cfg.mitigations.criteria:
        for kind, label in (("clean", "clean"), ("robust_linf", "ℓ∞ robust")):
            out.append(Curves(f"retention_{kind}_{c}", measurement="retention", over="ratio", group_by="arm",
                              fixed=(("kind", kind), ("criterion", c)), xlabel="pruning ratio r (filters removed)",
                              ylabel=f"{label} accuracy at r / at 0",
                              title=f"{label} retention under {c.replace('_', ' ')} pruning, per arm"))
    return out


def summary(cfg):
    keys = ["clean_acc", headline_ra(cfg.eval, "linf")]
    keys += [_high(k, c) for k in KINDS for c in cfg.mitigations.criteria]
    return keys + [col("beta_nu", layer=HM), col("eps_nu_q2", layer=HM), "penalty_beta_control",
                   "penalty_alignment", "median_margin", "head_fro", col("norm_fro", layer=HM)]


def notes(cfg):
    m = cfg.mitigations
    return [
        "Stand-ins: `small` runs on scikit-learn digits (8×8) for CIFAR-10 and a ResNet-18 layout of width 8 with "
        "one block per stage and a CIFAR stem for torchvision's ResNet-18 (E4's small preset); `paper` runs the "
        "paper's CIFAR-10 ResNet-18.",
        f"The paper gives neither formulas nor strengths for the mitigations. Chosen: β-control = the variance of "
        f"the top-5 % row-ℓ1 filter norms per layer (at least two rows), strength {m.beta_control:g}; alignment = "
        f"the differentiable sound bound of A_∞ over consecutive convs, strength {m.alignment:g}; both added to the "
        f"row penalty at α = {cfg.grid.alpha[0]:g}. At initialisation (small) the row term is ≈ 5.8, the β term "
        f"≈ 0.8·s_β and the alignment term ≈ 14·s_A. The β-control gradient acts on every entry of the top rows "
        f"(∝ the row's distance from their mean norm): with SGD at lr 0.05, s_β = 0.3 diverged within 60 steps on "
        f"the smoke model while 0.01–0.1 trained and cut the β term by two orders of magnitude; 0.03 is ten times "
        f"below the divergence.",
        "The plain arm is trained here with E4's config at the same α and seeds (so the arms are paired by seed "
        "within one run) rather than restored from E4's checkpoints: a population of another study can only be "
        "started from through a stage, which must train at least one parameter, and a further-trained copy would "
        "no longer be E4's member.",
        "ε-pruning follows the template of docs/findings.md §3: ε is swept until ⌊r·R⌋ filters go in total; "
        "filters are ranked by their ℓ2 norm; the stem and the head are never pruned; batch-norm statistics are "
        + ("recomputed on 8 training batches after pruning (the paper is silent)." if m.recalibrate else
           "left as trained."),
        "Retention is a ratio to each member's own unpruned accuracy; the primary claims average it over the "
        f"ratios ≥ {m.high:g} so that one test decides each (no per-ratio multiplicity).",
        "The paper says the mitigations do not close the gap to the uncompressed baseline; this study has no α = 0 "
        "arm, so that statement is not tested here (E4's α = 0 members are the reference to compare against).",
    ]


STUDY = Study(name="pruning_mitigations", title="Pruning mitigations: ε-pruning, β-control, alignment "
                                                "(docs/paper.md §E11)",
              paper_claims=("C11",), presets=PRESETS, populations=populations, measures=measures, claims=claims,
              figures=figures, notes=notes, summary=summary, group_by=("arm",))
run = STUDY.run
main = STUDY.main

if __name__ == "__main__":
    raise SystemExit(main())
