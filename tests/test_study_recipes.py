"""The shared training recipes and smoke deltas (crobust.study.recipes) against the values the reference code and its
README state, and every study's resolved presets against those values (docs/reference-code.md §4, §5, §8).

The expected numbers are written here as literals, not read from the recipes module, so a recipe or a preset that
drifts from the documented recipe fails."""

from __future__ import annotations

import importlib

import pytest

from crobust import config as config_lib
from crobust._errors import CrobustError
from crobust.study import recipes
from crobust.training import TrainConfig

STUDIES = ("spectral_fixed_scale", "decision_boundary", "mlp_compressibility", "bound_vs_gap", "universal_vs_scale",
           "source_invariance")
DIGITS_STUDIES = ("spectral_fixed_scale", "mlp_compressibility", "universal_vs_scale", "source_invariance")


def resolved(study: str, preset: str):
    return config_lib.resolve(importlib.import_module(f"experiments.{study}").PRESETS, preset)


def fields(train: TrainConfig, names) -> dict:
    return {n: getattr(train, n) for n in names}


# --- the recipes ------------------------------------------------------------------------------------------------

def test_recipes_state_the_reference_values():
    assert dict(recipes.ADAMW_MLP) == {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "val_ratio": 0.1}
    assert dict(recipes.CIFAR10_MLP) == {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "val_ratio": 0.1,
                                         "batch_size": 100, "max_steps": 60000, "eval_every": 200, "patience": 5000,
                                         "min_steps": 10000}
    assert dict(recipes.MNIST_MLP) == {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "val_ratio": 0.1,
                                       "batch_size": 256, "max_steps": 21100, "eval_every": 211, "patience": 2110,
                                       "min_steps": 2110}
    assert dict(recipes.CIFAR10_RESNET18) == {
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "batch_size": 100,
        "max_steps": 100000, "eval_every": 500, "patience": None, "min_steps": 0, "val_ratio": 0.0,
        "lr_schedule": "multistep", "lr_milestones": (100, 150), "lr_gamma": 0.1, "augment": "full"}
    assert dict(recipes.VIT_FINETUNE) == {
        "optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 512, "max_steps": 10000,
        "eval_every": 100, "patience": None, "min_steps": 0, "val_ratio": 0.02, "lr_schedule": "cosine",
        "cosine_min_ratio": 0.0}
    assert list(recipes.RECIPES.values()) == [recipes.ADAMW_MLP, recipes.CIFAR10_MLP, recipes.MNIST_MLP,
                                              recipes.CIFAR10_RESNET18, recipes.VIT_FINETUNE]


def test_recipe_budgets_in_epochs():
    # ResNet-18: 200 epochs of batch 100 on all 50,000 CIFAR-10 training images (no validation split)
    assert recipes.CIFAR10_RESNET18["max_steps"] * 100 == 200 * 50_000
    # MNIST MLP: one epoch = ⌈(60,000 − 6,000) / 256⌉ = 211 steps; ≤ 100 epochs, patience 10 epochs
    assert -(-(60_000 - 6_000) // 256) == 211
    assert (recipes.MNIST_MLP["max_steps"], recipes.MNIST_MLP["patience"]) == (100 * 211, 10 * 211)


@pytest.mark.parametrize("name", ["adamw_mlp", "cifar10_mlp", "mnist_mlp", "cifar10_resnet18", "vit_finetune"])
def test_every_recipe_is_a_valid_train_config_that_sets_only_its_fields(name):
    recipe = recipes.RECIPES[name]
    cfg = recipes.train_config(recipe, regularizer="group_lasso")
    cfg.validate()
    assert fields(cfg, recipe) == dict(recipe)
    assert cfg.regularizer == "group_lasso"                     # the study's own field is kept
    untouched = [f for f in ("projection", "adversarial", "eval_batch_size", "nuclear_method") if f not in recipe]
    assert fields(cfg, untouched) == fields(TrainConfig(), untouched)


def test_study_fields_override_the_recipe_and_unknown_fields_fail():
    cfg = recipes.train_config(recipes.MNIST_MLP, batch_size=64)
    assert (cfg.batch_size, cfg.lr, cfg.max_steps) == (64, 0.001, 21100)
    with pytest.raises(CrobustError, match="unknown --set key 'learning_rate'"):
        recipes.train_config({"learning_rate": 0.1})


def test_under_and_smoke_name_the_blocks():
    assert recipes.under("sgd", {"lr": 0.1, "patience": None}) == {"sgd.lr": 0.1, "sgd.patience": None}
    assert recipes.smoke() == {"train.max_steps": 150, "train.eval_every": 50, "train.patience": None,
                               "train.min_steps": 0, "eval.n_points": 100, "eval.n_iter": 5, "eval.n_restarts": 1,
                               "eval.attacks": ("apgd-ce",), "eval.convergence_iters": (), "grid.seeds": 2}


# --- every study derives them -----------------------------------------------------------------------------------

ADAMW = {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "val_ratio": 0.1}


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("preset", ["smoke", "small", "paper"])
def test_every_preset_of_every_study_trains_with_the_adamw_recipe(study, preset):
    assert fields(resolved(study, preset).train, ADAMW) == ADAMW


@pytest.mark.parametrize("study, recipe", [
    ("spectral_fixed_scale", {"batch_size": 256, "max_steps": 21100, "eval_every": 211, "patience": 2110,
                              "min_steps": 2110}),
    ("universal_vs_scale", {"batch_size": 256, "max_steps": 21100, "eval_every": 211, "patience": 2110,
                            "min_steps": 2110}),
    ("bound_vs_gap", {"batch_size": 256, "max_steps": 10000, "eval_every": 100, "patience": 1000,
                      "min_steps": 1000}),
    ("mlp_compressibility", {"batch_size": 100, "max_steps": 60000, "eval_every": 200, "patience": 5000,
                             "min_steps": 10000}),
    ("source_invariance", {"batch_size": 100, "max_steps": 60000, "eval_every": 200, "patience": 5000,
                           "min_steps": 10000}),
])
def test_paper_presets_use_the_dataset_recipe(study, recipe):
    assert fields(resolved(study, "paper").train, recipe) == recipe


def test_recipes_keep_each_studys_penalty_and_projection():
    for study in ("spectral_fixed_scale", "universal_vs_scale"):
        for preset in ("smoke", "small", "paper"):
            t = resolved(study, preset).train
            assert (t.regularizer, t.projection) == ("nuclear", "frobenius"), (study, preset)
    sgd = resolved("source_invariance", "paper").sgd
    assert (sgd.optimizer, sgd.lr, sgd.momentum, sgd.weight_decay, sgd.max_steps) == ("sgd", 0.01, 0.0, 0.0, 100000)


@pytest.mark.parametrize("study", STUDIES)
def test_smoke_presets_derive_the_shared_smoke_delta(study):
    cfg = resolved(study, "smoke")
    max_steps, eval_every = {"mlp_compressibility": (120, 40), "source_invariance": (100, 50)}.get(study, (150, 50))
    assert fields(cfg.train, ("max_steps", "eval_every", "patience", "min_steps")) == {
        "max_steps": max_steps, "eval_every": eval_every, "patience": None, "min_steps": 0}
    assert cfg.grid.seeds == 2 and cfg.eval.n_iter == 5
    assert cfg.eval.n_points == (72 if study == "bound_vs_gap" else 100)
    if study == "spectral_fixed_scale":              # the one smoke run that exercises the ensemble
        assert cfg.eval.attacks == ("apgd-ce", "apgd-t", "square") and cfg.eval.convergence_iters == (5, 10)
    else:
        assert cfg.eval.attacks == ("apgd-ce",) and cfg.eval.convergence_iters == ()
    if study in DIGITS_STUDIES:
        assert (cfg.data.n_train, cfg.data.n_test) == (600, 200)
    if study == "source_invariance":
        assert fields(cfg.sgd, ("max_steps", "eval_every", "patience", "min_steps")) == {
            "max_steps": 100, "eval_every": 50, "patience": None, "min_steps": 0}
