"""Training recipes and the smoke preset's deltas, written once and derived by every study.

A *recipe* is a delta on :class:`crobust.training.TrainConfig`: a dict of the fields that make the recipe and nothing
else, so that a study keeps its own regulariser, projection and adversarial setting when it applies one. A study
uses a recipe in one of two ways (:func:`crobust.config.derive` either way)::

    train=recipes.train_config(recipes.ADAMW_MLP, batch_size=128, max_steps=3000, regularizer="nuclear")
    "paper": derive(BASE, {**recipes.under("train", recipes.MNIST_MLP), "data.dataset": "mnist", ...})

Recipes (docs/reference-code.md §4, §5, §8 for the authors' code):

- :data:`ADAMW_MLP` — the authors' optimiser for every MLP: AdamW (torch semantics, decoupled decay on every
  parameter), lr 1e-3, weight decay 0.01, 10 % of the training set held out for validation (early stopping on the
  validation loss, best parameters kept). Budgets are per study.
- :data:`CIFAR10_MLP` — the authors' CIFAR-10 MLP script (``--width 2000 --depth 5``): ADAMW_MLP at batch 100,
  patience 5000 steps and at least 10,000 steps before a model may be selected; validation every 200 steps (the
  script evaluates every 1000) and a cap of 60,000 steps (the script's cap, 20,000,000, leaves early stopping to end
  the run; the cap bounds a run whose validation loss keeps improving).
- :data:`MNIST_MLP` — ADAMW_MLP at batch 256 for ≤ 100 epochs with validation once per epoch and a patience of 10
  epochs (the third-party reimplementation's E1 setting, docs/paper.md §E1). An epoch of the 10-class task is 211
  steps: 60,000 training images less the 10 % validation split, 54,000 / 256 = 210.9, so ≤ 21,100 steps,
  validation every 211, patience and minimum 2110.
- :data:`CIFAR10_RESNET18` — the README recipe of the authors' code for ResNet-18 on CIFAR-10: SGD lr 0.1, momentum
  0.9, weight decay 5e-4 (coupled, as torch's SGD), batch 100, the learning rate × 0.1 at epochs 100 and 150
  (``multistep``), full augmentation (crop and flip, colour jitter, random affine), 200 epochs = 100,000 steps of
  batch 100 on 50,000 images, no validation split and no early stopping (the last parameters are the result).
- :data:`VIT_FINETUNE` — google-research/vision_transformer's fine-tuning recipe (``vit_jax/configs/common.py``,
  ``train.py``; the paper gives none): SGD with momentum 0.9, no weight decay, batch 512, base lr 0.03 with cosine
  decay to 0, 10,000 steps on CIFAR-10 with 2 % of the training set held out. Two parts of it have no TrainConfig
  field and are left out: the 500-step linear warm-up and the clip of the global gradient norm at 1; and crobust's
  cosine is stepped once per epoch, theirs every step.

Smoke deltas (the ``smoke`` preset: every study end to end in well under a minute, no verdict expected):
:data:`SMOKE_TRAIN` (150 steps, validation every 50, no early stopping), :data:`SMOKE_EVAL` (APGD-CE alone, 5
iterations, on 100 points, no budget-convergence sweep), :data:`SMOKE_GRID` (2 seeds) and, for studies on the
digits, :data:`SMOKE_DIGITS` (600 training and 200 test images). :func:`smoke` joins the first three under the
study's block names; a study overrides what its smoke run needs differently (e.g. the motivating study keeps the
attack ensemble, which no other smoke run exercises).

Evaluation: :data:`AUTOATTACK_EVAL` is AutoAttack's standard ensemble — APGD-CE, APGD-T, FAB-T and Square, the
targeted attacks at min(9, C − 1) target classes — as a delta on the ``eval`` block; every study's ``paper`` preset
applies it (``recipes.under("eval", recipes.AUTOATTACK_EVAL)``) with its own ``n_iter`` (100, AutoAttack's),
``n_restarts`` (1) and ``n_queries`` (5000), which FAB-T reads as APGD-T does
(:func:`crobust.study.measures.attack_list`). The ``smoke`` and ``small`` presets run a reduced ensemble, and each
report says which of the four it leaves out.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from crobust.config import derive
from crobust.training import TrainConfig

ADAMW_MLP = MappingProxyType({"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "val_ratio": 0.1})

CIFAR10_MLP = MappingProxyType({**ADAMW_MLP, "batch_size": 100, "max_steps": 60_000, "eval_every": 200,
                                "patience": 5000, "min_steps": 10_000})

MNIST_MLP = MappingProxyType({**ADAMW_MLP, "batch_size": 256, "max_steps": 21_100, "eval_every": 211,
                              "patience": 2110, "min_steps": 2110})

CIFAR10_RESNET18 = MappingProxyType({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                     "batch_size": 100, "max_steps": 100_000, "eval_every": 500, "patience": None,
                                     "min_steps": 0, "val_ratio": 0.0, "lr_schedule": "multistep",
                                     "lr_milestones": (100, 150), "lr_gamma": 0.1, "augment": "full"})

VIT_FINETUNE = MappingProxyType({"optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 0.0,
                                 "batch_size": 512, "max_steps": 10_000, "eval_every": 100, "patience": None,
                                 "min_steps": 0, "val_ratio": 0.02, "lr_schedule": "cosine",
                                 "cosine_min_ratio": 0.0})

RECIPES = MappingProxyType({"adamw_mlp": ADAMW_MLP, "cifar10_mlp": CIFAR10_MLP, "mnist_mlp": MNIST_MLP,
                            "cifar10_resnet18": CIFAR10_RESNET18, "vit_finetune": VIT_FINETUNE})
"""Every recipe by name."""

SMOKE_TRAIN = MappingProxyType({"max_steps": 150, "eval_every": 50, "patience": None, "min_steps": 0})
SMOKE_EVAL = MappingProxyType({"n_points": 100, "n_iter": 5, "n_restarts": 1, "attacks": ("apgd-ce",),
                               "convergence_iters": ()})
SMOKE_GRID = MappingProxyType({"seeds": 2})
AUTOATTACK_EVAL = MappingProxyType({"attacks": ("apgd-ce", "apgd-t", "fab-t", "square"), "n_targets": 9})
SMOKE_DIGITS = MappingProxyType({"n_train": 600, "n_test": 200})


def under(block: str, delta: Mapping[str, Any]) -> dict[str, Any]:
    """``delta``'s fields as dotted keys of the config block ``block``: ``under("train", {"lr": 0.1})`` →
    ``{"train.lr": 0.1}``, for :func:`crobust.config.derive` on a study config."""
    return {f"{block}.{key}": value for key, value in delta.items()}


def train_config(recipe: Mapping[str, Any], **fields) -> TrainConfig:
    """A :class:`TrainConfig` with ``recipe``'s fields, then the study's own ``fields`` (budget, regulariser, …)."""
    return derive(TrainConfig(), {**recipe, **fields})


def smoke(train: str = "train", eval: str = "eval", grid: str = "grid") -> dict[str, Any]:
    """The smoke preset's shared delta on a study config whose blocks have these names."""
    return {**under(train, SMOKE_TRAIN), **under(eval, SMOKE_EVAL), **under(grid, SMOKE_GRID)}
