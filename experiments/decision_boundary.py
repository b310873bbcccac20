"""Decision boundaries under compressibility (docs/paper.md §E2, Figure 1; claims C2 and C4 on a synthetic task):
the same input budget crosses the decision boundary of a compressible (low-rank) model and not of a dense one of
equal clean accuracy.

Task (the paper's generator is unknown; this one is :func:`crobust.data.load_synthetic_gaussian` with two classes):
latent h = μ_y + z in R^k (k = ``data.intrinsic_dim`` = 8, z ~ N(0, I_k)), class means ±(s/2)·(e₀ − e₁)/√2 so
‖μ₀ − μ₁‖ = s = ``data.separation`` = 4 (Bayes accuracy Φ(s/2) = 97.7 %); an 8×8 grey image
x = 0.5 + a·(U h + ``noise``·ε), U a random 64 × k matrix with orthonormal columns, ε ~ N(0, I₆₄), a chosen so pixels
have s.d. ``pixel_std`` = 0.15, clipped to [0, 1] and stored as uint8; labels balanced; train / test and U drawn
from ``numpy.random.default_rng([data.seed, ·])``. So the classes are linearly separable up to the Bayes error along
one direction of a k-dimensional subspace of the 64-pixel space; for a = 0.34 (these defaults) a point typically
lies ≈ 0.68 (ℓ2, pixel units) from the Bayes boundary.

Models: two populations of bias-free one-hidden-layer ReLU MLPs g(x) = C φ(W x) (the paper's mechanism example,
docs/paper.md §2 item 5) trained identically without a penalty — ``dense`` (W full, 64 × width) and ``lowrank`` (W = A·B
of rank ``rank``, factors initialised at the dense layer's expected Frobenius norm,
``factor_init='frobenius_matched'``). Measured per member: clean accuracy, robust accuracy over ℓ2 and ℓ∞ ε grids
(``small``: APGD-CE + Square; ``paper``: AutoAttack's standard four, APGD-T and FAB-T with the one other class as
their target), σ₁/‖W‖_F of W, margins and head norms, and along
the attack direction u (−∇ of the logit margin, normalised for the norm) the distance t* to the decision boundary
(:mod:`crobust.study.measures_boundary`): ``cross_frac`` = the share of correctly classified points with t* ≤ ε.
Figure 1: the PCA view (PC1–PC2 of the evaluation inputs) of the pair of members with the closest clean accuracies:
points, the decision boundary on the plane slice through the mean, each point's ε-step along u (red where it
crosses), and the distribution of t* for both populations.

Command::

    python -m experiments.decision_boundary --preset small --workdir runs/decision_boundary

Expected results:

- ``smoke`` (tests; ≈ 35 s of CPU time, compiles mostly): 600 / 200 points, width 16, 2 seeds, 150 steps,
  APGD-CE only. Runs end to end; no verdict is expected.
- ``small`` (any CPU; 2.1 min of CPU time, 6.7 min wall on a 2-core machine at load ≈ 15): 2000 / 1000 points,
  width 64, rank 1, 8 seeds per population (with 4, a permutation test of 4 vs 4 members cannot reach p < 0.05
  after Holm's correction), AdamW ≤ 2000 steps with early stopping, ensemble on 500 points, ℓ2 headline ε = 0.3,
  ℓ∞ 0.03. Both models reach close to the Bayes accuracy. One run (seeds 0–7) gave: clean accuracy 0.976 (dense)
  vs 0.975 (rank 1), equal within 1 pp (supported); along the attack direction the ℓ2 budget 0.3 reaches the
  boundary for 28 % of the rank-1 model's correct points against 13 % of the dense model's (median distance 0.42 vs
  0.63); ℓ2 robust accuracy 0.70 vs 0.83, ℓ∞ 0.85 vs 0.90; σ₁/‖W‖_F 1.0 vs 0.52; every comparison supported
  (Holm-adjusted p = 0.008), and at matched clean accuracy (8 pairs) too (p = 0.012). The decision boundaries on the
  PCA plane look alike; the difference lies along the attack direction, which leaves that plane.
- ``paper`` (any accelerator; minutes): the same task with 10,000 / 2,000 points, width 256, ranks 1 and the dense
  layer, 8 seeds, ≤ 10,000 steps, the full budget of the two-class ensemble (APGD-CE 100 iterations, 5000 Square
  queries) on 2000 points. Wall time on one GPU, from docs/findings.md §6 (H200): a training step of 8 members of a
  larger network (3072→2000×4→10, batch 100) takes 1.85 ms (4,318 member-steps/s), an upper bound for 8 members
  of 64→256→2, so ≤ 10,000 steps take ≤ 20 s per population; APGD-CE (100 iterations) on 4,776 points took
  0.009 s per model there, so the attacks cost seconds; with compiles (~1 min per population) about 3 minutes.
"""

from __future__ import annotations

import dataclasses

from crobust import data as data_lib
from crobust import training
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.config import derive
from crobust.models import MLP, LowRankMLP
from crobust.study import (Compare, Curves, DataConfig, EvalConfig, Flat, GridConfig, Matched, ModelConfig, Panel,
                           Panels, Population, Study, StudyConfig, col, headline_ra)
from crobust.study import measures as M
from crobust.study import recipes
from crobust.study import measures_boundary as B
from crobust.study.figures_boundary import BoundaryView

LOW, DENSE = "lowrank", "dense"


@dataclasses.dataclass(frozen=True)
class SyntheticData(DataConfig):
    """The two-class synthetic task of the module docstring: ``seed`` of the generator, ``generate_train`` /
    ``generate_test`` points generated, ``intrinsic_dim`` k, ``separation`` s, ``noise``, ``pixel_std``
    (:func:`crobust.data.load_synthetic_gaussian`); ``n_train`` / ``n_test`` subsample as in every study."""

    dataset: str = "synthetic_gaussian"
    seed: int = 0
    generate_train: int = 2000
    generate_test: int = 1000
    intrinsic_dim: int = 8
    separation: float = 4.0
    noise: float = 0.1
    pixel_std: float = 0.15

    def validate(self) -> None:
        super().validate()
        if self.dataset != "synthetic_gaussian":
            raise CrobustError(f"data.dataset must be synthetic_gaussian for this study, got {self.dataset!r}")
        if self.generate_train < 10 or self.generate_test < 10 or self.intrinsic_dim < 2:
            raise CrobustError("data.generate_train / generate_test must be >= 10 and data.intrinsic_dim >= 2")
        if self.separation <= 0 or self.noise < 0 or self.pixel_std <= 0:
            raise CrobustError("data.separation and data.pixel_std must be > 0, data.noise >= 0")

    def load(self) -> data_lib.Dataset:
        ds = data_lib.load_dataset("synthetic_gaussian", seed=self.seed, n_train=self.generate_train,
                                   n_test=self.generate_test, num_classes=2, intrinsic_dim=self.intrinsic_dim,
                                   separation=self.separation, noise=self.noise, pixel_std=self.pixel_std)
        if self.n_train or self.n_test:
            ds = data_lib.subsample(ds, n_train=self.n_train, n_test=self.n_test, seed=0)
        return ds


@dataclasses.dataclass(frozen=True)
class BoundaryConfig(StudyConfig):
    """``rank``: the rank of the low-rank population's hidden layer (the dense population has full rank)."""

    data: SyntheticData = SyntheticData()
    rank: int = 1

    def validate(self) -> None:
        super().validate()
        if self.model.depth != 2:
            raise CrobustError(f"model.depth must be 2 (one hidden layer, the paper's mechanism example), got "
                               f"{self.model.depth}")
        if not 1 <= self.rank < self.model.width:
            raise CrobustError(f"rank must be in [1, model.width) = [1, {self.model.width}), got {self.rank}")


BASE = BoundaryConfig(
    model=ModelConfig(width=64, depth=2),
    train=recipes.train_config(recipes.ADAMW_MLP, batch_size=128, max_steps=2000, eval_every=50, patience=400,
                               min_steps=400),
    grid=GridConfig(alpha=(0.0,), seeds=8),
    eval=EvalConfig(n_points=500, eps_l2=(0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0), headline_l2=0.3,
                    eps_linf=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1), headline_linf=0.03, attacks=("apgd-ce", "square"),
                    n_iter=20, convergence_iters=(20, 40), n_targets=1, n_queries=300))

LAYER = BASE.model.first_hidden_layer     # W¹, the first hidden layer of every preset's model

PRESETS = {
    "small": BASE,
    "smoke": derive(BASE, {**recipes.smoke(), "data.generate_train": 600, "data.generate_test": 200,
                           "model.width": 16, "eval.eps_l2": (0.0, 0.3), "eval.eps_linf": (0.0, 0.03)}),
    "paper": derive(BASE, {**recipes.under("eval", recipes.AUTOATTACK_EVAL), "data.generate_train": 10000, "data.generate_test": 2000, "model.width": 256,
                           "grid.seeds": 8, "train.max_steps": 10000, "train.patience": 2000, "train.min_steps": 2000,
                           "eval.n_points": 2000, "eval.convergence_iters": (25, 50, 100, 200),
                           "eval.convergence_restarts": (1, 2, 4), "eval.n_iter": 100, "eval.n_queries": 5000,
                           "eval.convergence_queries": (5000, 10000)}),
}

# the PCA view's data, written by the boundary_view measure and read by the figure (one run at a time per process)
VIEWS = B.ViewStore()


def populations(cfg, data):
    members = tuple(training.grid(alpha=cfg.grid.alpha, seeds=cfg.grid.seed_list))
    d_in = int(data.train_images[0].size)
    dense = MLP(num_classes=2, width=cfg.model.width, depth=2, mean=data.mean, std=data.std)
    low = LowRankMLP(num_classes=2, width=cfg.model.width, depth=2, rank=cfg.rank, mean=data.mean, std=data.std,
                     factor_init="frobenius_matched")
    return [Population(DENSE, dense, cfg.train, members, {"rank": min(d_in, cfg.model.width)}),
            Population(LOW, low, cfg.train, members, {"rank": cfg.rank})]


def measures(cfg):
    VIEWS.clear()
    return [M.clean_accuracy(), M.margins_and_head(), M.robust_accuracy(("l2", "linf")), M.spectrum(LAYER),
            B.boundary_crossing(("l2", "linf")), B.boundary_view(VIEWS, "l2"),
            M.budget_convergence(("l2", "linf")), M.training_record()]


# The effect the primary claims assert: the low-rank model's robust accuracy is at least EFFECT below the dense
# model's (paired by seed), with or without adjusting for clean accuracy; "equal clean accuracy" is judged within
# FLAT < EFFECT.
EFFECT, FLAT = 0.03, 0.01


def claims(cfg):
    e = cfg.eval
    cross = lambda norm: col("cross_frac", norm=norm, eps=format_eps(e.headline(norm)))
    lo, de = (("population", LOW),), (("population", DENSE),)
    return [
        Compare("C2", f"ℓ2 robust accuracy (ensemble) is at least {EFFECT:g} lower for the low-rank model", "primary",
                y=headline_ra(e, "l2"), a=lo, b=de, direction="less", min_change=EFFECT),
        Compare("C2", f"ℓ∞ robust accuracy (ensemble) is at least {EFFECT:g} lower for the low-rank model", "primary",
                y=headline_ra(e, "linf"), a=lo, b=de, direction="less", min_change=EFFECT),
        Matched("C2", f"at equal clean accuracy ℓ2 robust accuracy is at least {EFFECT:g} higher for the dense model",
                "primary", x="rank", y=headline_ra(e, "l2"), direction="increasing", min_change=EFFECT),
        Compare("E2", f"the ℓ2 budget ε = {e.headline_l2:g} reaches the boundary along the attack direction for more "
                      f"points of the low-rank model than of the dense one", y=cross("l2"), a=lo, b=de,
                direction="greater", min_change=EFFECT),
        Compare("E2", f"the ℓ∞ budget ε = {e.headline_linf:g} reaches the boundary along the attack direction for "
                      f"more points of the low-rank model", y=cross("linf"), a=lo, b=de, direction="greater",
                min_change=EFFECT),
        Compare("E2", "the median ℓ2 distance to the boundary along the attack direction is smaller for the "
                      "low-rank model", y=col("boundary_dist", norm="l2"), a=lo, b=de, direction="less"),
        Matched("E2", "at equal clean accuracy fewer points cross within the ℓ2 budget for the dense model",
                x="rank", y=cross("l2"), direction="decreasing", min_change=EFFECT),
        Flat("confound", f"equal clean accuracy: the two models' mean clean accuracies differ by less than {FLAT:g}",
             x="rank", y="clean_acc", tolerance=FLAT),
        Compare("C4", "σ₁/‖W‖_F of the hidden layer is higher for the low-rank model (1 for rank 1, by construction)",
                "check", y=col("op_over_fro", layer=LAYER), a=lo, b=de, direction="greater"),
    ]


def figures(cfg):
    e = cfg.eval
    return [
        BoundaryView("figure1_decision_boundaries", VIEWS, (DENSE, LOW),
                     labels=("dense", f"low rank (rank {cfg.rank})"),
                     title=f"Decision boundaries under compressibility (Figure 1): PCA view, ℓ2 budget ε = "
                           f"{e.headline_l2:g}"),
        Panels("confounds_vs_rank", x="rank", xlabel="rank of the hidden layer",
               title="Robustness and its confounds against the hidden layer's rank", panels=(
                   Panel({"clean": "clean_acc", f"ℓ2 ε={e.headline_l2:g}": headline_ra(e, "l2"),
                          f"ℓ∞ ε={e.headline_linf:g}": headline_ra(e, "linf")}, "accuracy", "clean and robust"),
                   Panel({"ℓ2": col("cross_frac", norm="l2", eps=format_eps(e.headline_l2)),
                          "ℓ∞": col("cross_frac", norm="linf", eps=format_eps(e.headline_linf))},
                         "share of correct points", "boundary within ε along u"),
                   Panel(col("boundary_dist", norm="l2"), "median t* (ℓ2)", "distance to the boundary along u"),
                   Panel(col("op_over_fro", layer=LAYER), "σ₁ / ‖W‖_F", "spectral concentration"),
                   Panel({"median logit margin": "median_margin", "‖W_head‖_F": "head_fro",
                          "‖W‖_F": col("fro_norm", layer=LAYER)}, "value", "confounds"))),
        Curves("robust_acc_vs_eps_l2", norm="l2", group_by="population", title="robust accuracy (ensemble), ℓ2"),
        Curves("robust_acc_vs_eps_linf", norm="linf", group_by="population", title="robust accuracy (ensemble), ℓ∞"),
    ]


def summary(cfg):
    e = cfg.eval
    return ["clean_acc", headline_ra(e, "l2"), headline_ra(e, "linf"),
            col("cross_frac", norm="l2", eps=format_eps(e.headline_l2)),
            col("cross_frac", norm="linf", eps=format_eps(e.headline_linf)), col("boundary_dist", norm="l2"),
            col("op_over_fro", layer=LAYER), col("fro_norm", layer=LAYER), "median_margin", "head_fro"]


def notes(cfg):
    return [
        "The paper's synthetic generator is unknown; this one (module docstring) puts the class signal on one "
        "direction of a low-dimensional subspace so that a rank-1 hidden layer can in principle reach the Bayes "
        "accuracy, making 'equal clean accuracy' attainable.",
        f"Compressible model: an explicit rank-{cfg.rank} factorisation W = A·B (factors initialised at the dense "
        "layer's expected Frobenius norm), not a penalty: no α to tune and no SVD per step; both populations train "
        "with the same recipe and no penalty.",
        "Attack direction u: −∇ of the logit margin, normalised (ℓ2) or its sign (ℓ∞) — the first step of every "
        "gradient attack; t* is the first crossing along the ray on a 64-step grid refined by bisection, searched "
        "up to twice the largest ε of the grid (beyond it t* counts as that value in the median), the ray not "
        "clipped to [0, 1]. `cross_frac` is a lower bound of the attackable share (one direction per point); the "
        "ensemble's robust accuracy, which searches the whole ball inside [0, 1], is reported beside it.",
        "The figure's plane is spanned by the top two principal directions of the evaluation inputs; the decision "
        "boundary drawn is the model's on the plane slice through the data mean (points lie off that plane, so a "
        "point's side of the drawn line need not be its predicted class); the arrows are ε·u projected on the "
        "plane, so their length shows how much of the attack step lies in the plane.",
        "Ensemble: APGD-CE + Square. With two classes APGD-T has a single target, the other class, so it is "
        "APGD on a targeted DLR loss that needs ≥ 4 classes (AutoAttack's restriction); the margin/CE attack "
        "already targets the only other class.",
        f"Equal clean accuracy is judged (Flat, tolerance {FLAT:g}, below the {EFFECT:g} robust-accuracy gap the "
        "primary claims assert) and a Matched claim estimates the gap at equal clean accuracy (clean accuracy as a "
        "covariate, members paired by seed); the median logit margin, ‖W_head‖_F and ‖W‖_F are listed beside "
        "robustness. σ₁/‖W‖_F of a rank-1 layer is 1 by construction: a check, never counted as evidence.",
    ]


STUDY = Study(name="decision_boundary",
              title="Decision boundaries under compressibility (docs/paper.md §E2, Figure 1)",
              paper_claims=("C2", "C4"), presets=PRESETS, populations=populations, measures=measures, claims=claims,
              figures=figures, notes=notes, summary=summary, group_by=("population",),
              setup=lambda cfg, data: (f"Synthetic task: k = {cfg.data.intrinsic_dim}, s = {cfg.data.separation:g}, "
                                       f"noise {cfg.data.noise:g}, pixel s.d. {cfg.data.pixel_std:g}, generator seed "
                                       f"{cfg.data.seed}; low-rank population rank {cfg.rank}, dense rank "
                                       f"{min(int(data.train_images[0].size), cfg.model.width)}."))
run = STUDY.run
main = STUDY.main

if __name__ == "__main__":
    raise SystemExit(main())
