"""Sweep measures over pruning: clean and robust accuracy of every member's structurally pruned copies.

For each pruning criterion c (``'ratio'``: each prunable layer removes its ⌊r·out⌋ lowest-norm rows;
``'global_ratio'``: one norm threshold over every prunable row; ``'epsilon_ratio'``: ε-pruning swept to the global
ratio r — :func:`crobust.pruning.prune`) and ratio r, each member's best-validation variables are pruned (masked
rows, the same shapes) and measured on the study's evaluation points (the first ``eval.n_points`` test images):

- ``pruned_clean_acc[criterion=c, ratio=r]`` — accuracy on those points (with ``norms`` empty it is the only
  accuracy column, no attack run);
- ``pruned_robust_acc[norm=n, criterion=c, ratio=r]`` — robust accuracy at norm n's headline ε against the
  study's ensemble, per point the worst case (:func:`crobust.evaluation.population_robust_accuracy`), with the
  member's own attack stream ``attack/<norm>`` — the robust-accuracy measure's, so ratio 0 (nothing pruned, the
  variables multiplied by ones) gives exactly the unpruned measure's numbers;
- ``pruned_removed[criterion=c, ratio=r]`` — the fraction of prunable rows actually removed (ε-pruning can remove
  more than r·R where shares tie).

With ``recalibrate=True`` (models with batch norm) each pruned member's running statistics are first recomputed
on ``recalibrate_batches`` training batches of ``recalibrate_batch_size`` images
(:func:`crobust.recalibration.recalibrate_batch_stats`), the same batches for every member and ratio.
Retention — accuracy at r ÷ accuracy at r = 0 — is derived from these columns by the claims and figures.
Fine-tuned pruned members are a training stage, not a measure.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import evaluation, pruning
from crobust._errors import CrobustError
from crobust.data import to_float
from crobust.recalibration import recalibrate_batch_stats
from crobust.study.measures import Context, TrainedPopulation, attack_list, member_eval_keys
from crobust.study.table import column

CRITERIA = ("ratio", "global_ratio", "epsilon_ratio")


def ratio_label(r: float) -> str:
    """A pruning ratio as it appears in a column's qualifier: ``0.5`` → ``'0.5'``."""
    return f"{float(r):g}"


def _removed_fraction(masks) -> np.ndarray:
    kept = sum(np.sum(np.asarray(m), axis=-1) for m in masks.values())
    total = sum(np.asarray(m).shape[-1] for m in masks.values())
    return 1.0 - np.asarray(kept, np.float64) / total


def pruning_sweep(ratios: Sequence[float], criteria: Sequence[str] = ("ratio",), norms: Sequence[str] = ("linf",),
                  *, recalibrate: bool = False, recalibrate_batches: int = 8, recalibrate_batch_size: int = 128):
    """The columns of the module docstring for every ``criteria`` × ``ratios`` × ``norms``."""
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(not 0.0 <= r < 1.0 for r in ratios):
        raise CrobustError(f"pruning ratios must be a non-empty list of values in [0, 1), got {ratios}")
    for c in criteria:
        if c not in CRITERIA:
            raise CrobustError(f"unknown pruning criterion {c!r}; valid: {', '.join(CRITERIA)}")

    def measure(ctx: Context, pop: TrainedPopulation):
        e = ctx.eval
        attacks = attack_list(e, ctx.data.num_classes)
        recal = (_Recalibrate(pop, ctx.data.train_images, recalibrate_batches, recalibrate_batch_size)
                 if recalibrate else None)
        out = {}
        for c in criteria:
            for r in ratios:
                variables, masks = pruning.prune(pop.variables, **{c: r})
                if recal is not None:
                    variables = recal(variables)
                out[column("pruned_removed", criterion=c, ratio=ratio_label(r))] = _removed_fraction(masks)
                if not norms:
                    out[column("pruned_clean_acc", criterion=c, ratio=ratio_label(r))] = _points_accuracy(
                        pop.apply_fn, variables, ctx.x, ctx.y)
                for norm in norms:
                    reports = evaluation.population_robust_accuracy(
                        pop.apply_fn, variables, ctx.x, ctx.y, eps=[e.headline(norm)], norm=norm, attacks=attacks,
                        on_fail="ignore", member_keys=member_eval_keys(pop.seeds, f"attack/{norm}"))
                    out[column("pruned_robust_acc", norm=norm, criterion=c, ratio=ratio_label(r))] = np.array(
                        [rep.robust_acc[0] for rep in reports])
                    out[column("pruned_clean_acc", criterion=c, ratio=ratio_label(r))] = np.array(
                        [rep.clean_acc for rep in reports])
        return out
    return measure


def _points_accuracy(apply_fn, variables, x, y) -> np.ndarray:
    """(M,) accuracy of every member (variables stacked (M, ...)) on the points x, y."""
    correct = jax.vmap(lambda v: jnp.sum(jnp.argmax(apply_fn(v, x), axis=-1) == y))(variables)
    return np.asarray(correct, np.float64) / x.shape[0]


class _Recalibrate:
    """variables (M, ...) ↦ the same with running statistics recomputed on the first K·B training images (the same
    K batches of B for every member and ratio; fewer when the training set is smaller)."""

    def __init__(self, pop: TrainedPopulation, images, n_batches: int, batch_size: int):
        if pop.model_state is None or "batch_stats" not in pop.model_state:
            raise CrobustError(f"population {pop.name}: batch-norm recalibration needs a model with batch norm")
        b = min(int(batch_size), images.shape[0])
        k = max(1, min(int(n_batches), images.shape[0] // b))
        self.batches = jnp.asarray(to_float(images[:k * b]).reshape((k, b) + tuple(images.shape[1:])))
        model = pop.model
        self.fn = jax.jit(jax.vmap(lambda v, xs: recalibrate_batch_stats(model, v, xs), in_axes=(0, None)))

    def __call__(self, variables):
        return self.fn(variables, self.batches)


MEASURES = {"pruning_sweep": pruning_sweep}

__all__ = ["pruning_sweep", "ratio_label", "CRITERIA", "MEASURES"]
