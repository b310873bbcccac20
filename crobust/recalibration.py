"""Batch-norm recalibration: running statistics recomputed for the parameters a model has now (e.g. after pruning).

Pruning changes what every later layer sees, so the running statistics a model was trained with no longer describe
its activations. Recalibration replaces each batch norm's running mean and variance with the average, over K
training batches, of the batch statistics that layer computes in train mode (the model's forward pass with batch
statistics, as PyTorch's ``momentum=None`` cumulative average does):

    μ̂ = (1/K) Σ_k μ_k,    σ̂² = (1/K) Σ_k σ²_k.

A train-mode call updates a running statistic r as r' = m·r + (1 − m)·s with the layer's momentum m and the batch
statistic s. Started once from r = 0 and once from r = 1 on the same batch, the difference of the two results is m
itself, so s = r'(0)/(1 − m) is recovered for any momentum, without knowing how the model built its batch norms.
Parameters are not changed; only ``batch_stats`` is replaced.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError


def _stats_after(model, params: Mapping, start, x):
    _, updated = model.apply({**params, "batch_stats": start}, x, train=True, mutable=["batch_stats"])
    return updated["batch_stats"]


def recalibrate_batch_stats(model, variables: Mapping, batches) -> dict:
    """``variables`` (one member's: ``params`` and ``batch_stats``) with ``batch_stats`` replaced by the mean over
    the K batches ``batches`` (K, B, H, W, C) in [0, 1] of each batch norm's train-mode batch statistics (module
    docstring). A model without batch norm is one clear error."""
    if "batch_stats" not in variables:
        raise CrobustError("batch-norm recalibration needs a model with batch norm (no 'batch_stats' in its variables)")
    params = {k: v for k, v in variables.items() if k != "batch_stats"}
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    ones = jax.tree.map(jnp.ones_like, variables["batch_stats"])
    momentum = jax.tree.map(jnp.subtract, _stats_after(model, params, ones, batches[0]),
                            _stats_after(model, params, zeros, batches[0]))
    total = zeros
    for k in range(batches.shape[0]):                # a host loop: no convolution inside a compiled loop
        new = _stats_after(model, params, zeros, batches[k])
        total = jax.tree.map(lambda t, n, m: t + n / (1.0 - m), total, new, momentum)
    return {**variables, "batch_stats": jax.tree.map(lambda t: t / batches.shape[0], total)}


__all__ = ["recalibrate_batch_stats"]
