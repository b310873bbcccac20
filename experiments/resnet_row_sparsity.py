"""ResNet-18 row sparsity (docs/paper.md §E4; claim C1, ResNet half) — SKELETON, being completed.

The scale-invariant row ℓ1/ℓ2 penalty α Σ_l (Σ_i ‖W^l_{i,:}‖₂)/‖W^l‖_F on every conv but the stem (filters
flattened to out × in·kh·kw) over an α grid, and the low-rank-conv counterpart over a rank grid.

This module is the hub of the convolutional studies: ``adversarial_training``, ``transfer``, ``filter_pruning``
and ``pruning_mitigations`` derive their configs from :data:`BASE` / :data:`PRESETS` and (the pruning studies)
start from the members of the ``row`` population trained here.

Command::

    python -m experiments.resnet_row_sparsity --preset small --workdir runs/resnet_row_sparsity
"""

from __future__ import annotations

from crobust import training
from crobust.config import derive
from crobust.study import (DataConfig, EvalConfig, GridConfig, ModelConfig, Population, Study, StudyConfig,
                           headline_ra)
from crobust.study import measures as M
from crobust.study import recipes

BASE = StudyConfig(
    data=DataConfig("digits"),
    model=ModelConfig(kind="resnet18", width=8, stem="cifar", stage_sizes=(1, 1, 1, 1)),
    train=recipes.train_config(recipes.CIFAR10_RESNET18, lr=0.05, batch_size=64, max_steps=1200, eval_every=200,
                               lr_milestones=(30, 45), augment="none", regularizer="scale_invariant",
                               val_ratio=0.1),
    grid=GridConfig(alpha=(0.0, 0.03, 0.1), seeds=3),
    eval=EvalConfig(n_points=200, eps_linf=(0.0, 0.02, 0.05, 0.1), eps_l2=(0.0, 0.1, 0.25, 0.5),
                    headline_linf=0.05, headline_l2=0.25, n_iter=20, n_targets=2, n_queries=100,
                    convergence_iters=(20, 40)))

PRESETS = {
    "small": BASE,
    "smoke": derive(BASE, {**recipes.smoke(), **recipes.under("data", recipes.SMOKE_DIGITS), "model.width": 4,
                           "grid.alpha": (0.0, 0.1), "train.max_steps": 60, "train.eval_every": 30,
                           "eval.eps_linf": (0.0, 0.05), "eval.eps_l2": (0.0, 0.25)}),
    "paper": derive(BASE, {**recipes.under("train", recipes.CIFAR10_RESNET18), "data.dataset": "cifar10",
                           "data.download": True, "model.width": 64, "model.stem": "imagenet",
                           "model.stage_sizes": (2, 2, 2, 2), "grid.alpha": (0.0, 0.01, 0.03, 0.1),
                           "checkpoint_every": 5000, "eval.n_points": 1000,
                           "eval.eps_linf": (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
                           "eval.eps_l2": (0.0, 0.1, 0.25, 0.5, 1.0), "eval.headline_linf": 2 / 255,
                           "eval.headline_l2": 0.25, "eval.n_iter": 100, "eval.n_targets": 9,
                           "eval.n_queries": 5000, "eval.convergence_iters": (25, 50, 100, 200),
                           "eval.convergence_restarts": (1, 2, 4)}),
}

LAYER = BASE.model.first_hidden_layer


def populations(cfg, data):
    """``row``: the row-penalty grid α × seeds on one ResNet (α = 0 is the unregularised baseline)."""
    members = training.grid(alpha=cfg.grid.alpha, seeds=cfg.grid.seed_list)
    return [Population("row", cfg.model.build(data), cfg.train, tuple(members))]


def measures(cfg):
    return [M.clean_accuracy(), M.margins_and_head(), M.robust_accuracy(("linf", "l2")), M.training_record()]


def claims(cfg):
    return []


def figures(cfg):
    return []


def summary(cfg):
    return ["clean_acc", headline_ra(cfg.eval, "linf"), headline_ra(cfg.eval, "l2")]


def notes(cfg):
    return []


STUDY = Study(name="resnet_row_sparsity", title="ResNet-18 row sparsity (docs/paper.md §E4)", paper_claims=("C1",),
              presets=PRESETS, populations=populations, measures=measures, claims=claims, figures=figures,
              notes=notes, summary=summary, group_by=("alpha",))
run = STUDY.run
main = STUDY.main

if __name__ == "__main__":
    raise SystemExit(main())
